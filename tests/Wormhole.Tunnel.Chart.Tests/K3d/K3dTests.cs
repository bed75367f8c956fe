using System.Text.Json.Nodes;

namespace Wormhole.Tunnel.Chart.Tests.K3d;

/// <summary>
/// glothriel/wormhole's ten integration tests (tests/test_kubernetes.py), against a real k3d cluster installed from
/// helm/ and docker/. Where the reference tolerates its own defects (orphans after a port change, the 30 s cleanup
/// delay) these assert the fixed behaviour.
/// </summary>
[Collection("k3d")]
public sealed class K3dTests(K3dCluster k) : IAsyncLifetime
{
    public Task InitializeAsync() => k.ResetAsync();

    public Task DisposeAsync() => Task.CompletedTask;

    [ClusterFact]
    public async Task Annotating_a_service_creates_exactly_one_proxy_service_and_unannotating_removes_it()
    {
        var before = await k.ServiceNamesAsync("server");

        await k.AnnotateAsync("nginx", $"{K3dCluster.Exposed}=yes");
        await k.WaitForServiceAsync("server", "client-nginx-nginx");
        (await k.ServiceNamesAsync("server")).Should().BeEquivalentTo([.. before, "client-nginx-nginx"]);

        await k.AnnotateAsync("nginx", $"{K3dCluster.Exposed}=no");
        await k.WaitForServiceGoneAsync("server", "client-nginx-nginx");
        (await k.ServiceNamesAsync("server")).Should().BeEquivalentTo(before);
    }

    [ClusterFact]
    public async Task A_custom_name_sets_the_remote_name_on_both_sides()
    {
        await k.AnnotateAsync("nginx", $"{K3dCluster.Exposed}=yes", "wormhole.glothriel.github.com/name=huehue-one-two-three");
        await k.WaitForServiceAsync("server", "client-huehue-one-two-three");
        await k.WaitForServiceAsync("client", "server-huehue-one-two-three");

        await k.AnnotateAsync("nginx", $"{K3dCluster.Exposed}=no");
        await k.WaitForServiceGoneAsync("server", "client-huehue-one-two-three");
        await k.WaitForServiceGoneAsync("client", "server-huehue-one-two-three");
    }

    [ClusterFact]
    public async Task Deleting_an_annotated_service_removes_it_from_peers()
    {
        await k.AnnotateAsync("nginx", $"{K3dCluster.Exposed}=yes", "wormhole.glothriel.github.com/name=huehue-one-two-three");
        await k.WaitForServiceAsync("server", "client-huehue-one-two-three");

        await k.KubectlAsync("delete", "service", "nginx", "-n", "nginx");
        await k.WaitForServiceGoneAsync("server", "client-huehue-one-two-three");
        await k.WaitForServiceGoneAsync("client", "server-huehue-one-two-three");
    }

    [ClusterFact]
    public async Task A_service_with_two_ports_gives_one_proxy_service_per_port()
    {
        await k.AnnotateAsync("nginx-two-ports", $"{K3dCluster.Exposed}=yes", "wormhole.glothriel.github.com/name=custom");
        await k.WaitForServiceAsync("server", "client-custom-http");
        await k.WaitForServiceAsync("server", "client-custom-https");

        await k.AnnotateAsync("nginx-two-ports", $"{K3dCluster.Exposed}=no");
        await k.WaitForServiceGoneAsync("server", "client-custom-http");
        await k.WaitForServiceGoneAsync("server", "client-custom-https");
    }

    [ClusterFact]
    public async Task Selected_ports_give_a_name_without_a_suffix()
    {
        await k.AnnotateAsync("nginx-two-ports", $"{K3dCluster.Exposed}=yes", "wormhole.glothriel.github.com/name=custom", "wormhole.glothriel.github.com/ports=http");
        await k.WaitForServiceAsync("server", "client-custom");
        (await k.ServiceExistsAsync("server", "client-custom-https")).Should().BeFalse();

        await k.AnnotateAsync("nginx-two-ports", $"{K3dCluster.Exposed}=no");
        await k.WaitForServiceGoneAsync("server", "client-custom");
    }

    [ClusterFact]
    public async Task Changing_ports_replaces_the_proxy_services_without_orphans()
    {
        await k.AnnotateAsync("nginx-two-ports", $"{K3dCluster.Exposed}=yes", "wormhole.glothriel.github.com/name=custom", "wormhole.glothriel.github.com/ports=http");
        await k.WaitForServiceAsync("server", "client-custom");

        await k.AnnotateAsync("nginx-two-ports", "wormhole.glothriel.github.com/ports=http,https");
        await k.WaitForServiceAsync("server", "client-custom-http");
        await k.WaitForServiceAsync("server", "client-custom-https");
        await k.WaitForServiceGoneAsync("server", "client-custom"); // the reference leaves this orphan behind and skips
    }

    [ClusterFact]
    public async Task Traffic_flows_through_the_tunnel_and_network_policies_block_unlabelled_pods()
    {
        var before = (await k.ServiceNamesAsync("server")).Count;
        await k.AnnotateAsync("nginx", $"{K3dCluster.Exposed}=yes");
        await K3dCluster.EventuallyAsync(async () => (await k.ServiceNamesAsync("server")).Count == before + 1, "the hub has one more Service");
        await k.WaitForServiceAsync("client", "server-nginx-nginx");
        const string url = "http://server-nginx-nginx.client.svc.cluster.local";

        await K3dCluster.EventuallyAsync(
            async () => (await k.CurlAsync("curl-with-labels", url)).StandardOutput.Contains("Hello world!", StringComparison.Ordinal),
            "the labelled pod reaches nginx through the tunnel",
            TimeSpan.FromSeconds(36));
        var blocked = await k.CurlAsync("curl-no-labels", url);

        blocked.Succeeded.Should().BeFalse("the NetworkPolicy admits only pods labelled network-policy-consumes-app=nginx-nginx");
        blocked.StandardOutput.Should().NotContain("Hello world!");
    }

    [ClusterFact]
    public async Task A_restarted_spoke_reconnects_with_its_cached_address()
    {
        (await k.LogsAsync("client", "client")).Should().Contain("Paired with server, assigned IP");

        await k.KubectlAsync("delete", "pod", "-n", "client", "-l", "application=wormhole-client", "--wait");
        await k.KubectlAsync("rollout", "status", "deployment/wormhole-client", "-n", "client", "--timeout=5m");

        await K3dCluster.EventuallyAsync(
            async () => (await k.TryKubectlAsync("logs", "-n", "client", "-l", "application=wormhole-client", "-c", "wormhole", "--tail=-1"))
                .StandardOutput.Contains("using IP from the cache", StringComparison.Ordinal),
            "the new pod reuses its address");
    }

    [ClusterFact]
    public async Task Client_metadata_reaches_the_hub()
    {
        await k.HelmAsync(["upgrade", "client", Infrastructure.Repository.Chart, "-n", "client", "--reuse-values", "--wait", "--set", "client.syncMetadata.testFoo=testBar"]);

        await K3dCluster.EventuallyAsync(
            async () =>
            {
                var body = (await k.CurlAsync("curl-with-labels", "http://wormhole-server-api.server:8082/api/peers/v2")).StandardOutput;
                return body.Contains("testFoo", StringComparison.Ordinal) && body.Contains("testBar", StringComparison.Ordinal);
            },
            "GET /api/peers/v2 shows the spoke's metadata");
    }

    [ClusterFact]
    public async Task Deleting_a_peer_needs_basic_auth_and_removes_it()
    {
        await k.HelmAsync(["upgrade", "server", Infrastructure.Repository.Chart, "-n", "server", "--reuse-values", "--wait",
            "--set", "server.basicAuth.username=", "--set", "server.basicAuth.password="]);
        const string peer = "http://wormhole-server-api.server:8082/api/peers/v1/client";
        await K3dCluster.EventuallyAsync(
            async () => (await k.CurlAsync("curl-with-labels", "-X", "DELETE", peer)).StandardOutput
                .Contains("Basic authentication is required but not enabled", StringComparison.Ordinal),
            "the hub refuses deletion without basic auth configured",
            TimeSpan.FromSeconds(60));

        await k.HelmAsync(["upgrade", "server", Infrastructure.Repository.Chart, "-n", "server", "--reuse-values", "--wait",
            "--set", "server.basicAuth.username=kajtek", "--set", "server.basicAuth.password=kajtek"]);

        await K3dCluster.EventuallyAsync(
            async () =>
            {
                await k.CurlAsync("curl-with-labels", "-X", "DELETE", "--user", "kajtek:kajtek", peer);
                var peers = (await k.CurlAsync("curl-with-labels", "http://wormhole-server-api.server:8082/api/peers/v1")).StandardOutput;
                return peers.TrimStart().StartsWith('[') && JsonNode.Parse(peers) is JsonArray { Count: 0 };
            },
            "GET /api/peers/v1 is [] after the authenticated DELETE");
    }
}
