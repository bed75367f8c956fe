using System.Net;
using System.Text.Json.Nodes;
using Wormhole.Tunnel.Chart.Tests.Infrastructure;

namespace Wormhole.Tunnel.Chart.Tests;

/// <summary>
/// The reference's ten integration scenarios (its k3d suite; K3d/K3dTests here) against the chart's pods run by podman
/// (<see cref="PodLab"/>), plus a killed hub container that comes back with nothing lost. The hub's cluster is
/// <see cref="PodLab.Server"/> (namespace <c>server</c>), the spoke's <see cref="PodLab.Client"/> (namespace
/// <c>client</c>); the mocks nginx and nginx-two-ports are in namespace <c>nginx</c> of both.
/// </summary>
[Collection("pods")]
[Trait("Category", "Images")]
public sealed class PodTests(PodLab k) : IAsyncLifetime
{
    public Task InitializeAsync() => Podman.MissingReason is null ? k.ResetAsync() : Task.CompletedTask;

    public Task DisposeAsync() => Task.CompletedTask;

    [PodmanFact]
    public async Task Annotating_a_service_creates_exactly_one_proxy_service_of_the_right_shape_and_unannotating_removes_it()
    {
        var before = k.Server.ServiceNames("server");

        await k.AnnotateAsync(k.Client, "nginx", $"{PodLab.Exposed}=yes");
        await PodLab.WaitForServiceAsync(k.Server, "server", "client-nginx-nginx");
        k.Server.ServiceNames("server").Should().BeEquivalentTo([.. before, "client-nginx-nginx"]);
        var service = k.Server.Get("services", "server", "client-nginx-nginx")!;
        var labels = service["metadata"]!["labels"]!;
        ((string)labels["wormhole.glothriel.github.com/exposed-by"]!).Should().Be("wormhole");
        ((string)labels["wormhole.glothriel.github.com/exposed-peer"]!).Should().Be("client");
        ((string)labels["wormhole.glothriel.github.com/exposed-app"]!).Should().Be("nginx-nginx");
        var port = service["spec"]!["ports"]!.AsArray().Single()!;
        port["port"]!.GetValue<int>().Should().Be(80, "the annotated Service's port");
        port["targetPort"]!.GetValue<int>().Should().BeInRange(25001, 29999, "the hub's listener for the remote app");
        service["spec"]!["selector"]!.ToJsonString().Should().Be($$"""{"application":"{{k.Hub.Fullname}}"}""", "--kubernetes-labels as the chart renders it");
        (await k.Hub.ApiAsync("/api/apps")).AsArray().Should().ContainSingle()
            .Which!["address"]!.GetValue<string>().Should().Be("client-nginx-nginx.server:80");

        await k.AnnotateAsync(k.Client, "nginx", $"{PodLab.Exposed}=no");
        await PodLab.WaitForServiceGoneAsync(k.Server, "server", "client-nginx-nginx");
        k.Server.ServiceNames("server").Should().BeEquivalentTo(before);
    }

    [PodmanFact]
    public async Task A_custom_name_sets_the_remote_name_on_both_sides()
    {
        foreach (var cluster in new[] { k.Client, k.Server })
        {
            await k.AnnotateAsync(cluster, "nginx", $"{PodLab.Exposed}=yes", "wormhole.glothriel.github.com/name=huehue-one-two-three");
        }

        await PodLab.WaitForServiceAsync(k.Server, "server", "client-huehue-one-two-three");
        await PodLab.WaitForServiceAsync(k.Client, "client", "server-huehue-one-two-three");

        foreach (var cluster in new[] { k.Client, k.Server })
        {
            await k.AnnotateAsync(cluster, "nginx", $"{PodLab.Exposed}=no");
        }

        await PodLab.WaitForServiceGoneAsync(k.Server, "server", "client-huehue-one-two-three");
        await PodLab.WaitForServiceGoneAsync(k.Client, "client", "server-huehue-one-two-three");
    }

    [PodmanFact]
    public async Task Deleting_an_annotated_service_removes_it_from_peers()
    {
        await k.AnnotateAsync(k.Client, "nginx", $"{PodLab.Exposed}=yes", "wormhole.glothriel.github.com/name=huehue-one-two-three");
        await PodLab.WaitForServiceAsync(k.Server, "server", "client-huehue-one-two-three");

        await k.Client.KubectlAsync("delete", "service", "nginx", "-n", "nginx");
        await PodLab.WaitForServiceGoneAsync(k.Server, "server", "client-huehue-one-two-three");
    }

    [PodmanFact]
    public async Task A_service_with_two_ports_gives_one_proxy_service_per_port()
    {
        await k.AnnotateAsync(k.Client, "nginx-two-ports", $"{PodLab.Exposed}=yes", "wormhole.glothriel.github.com/name=custom");
        await PodLab.WaitForServiceAsync(k.Server, "server", "client-custom-http");
        await PodLab.WaitForServiceAsync(k.Server, "server", "client-custom-https");
        k.Server.Get("services", "server", "client-custom-https")!["spec"]!["ports"]![0]!["port"]!.GetValue<int>().Should().Be(443);

        await k.AnnotateAsync(k.Client, "nginx-two-ports", $"{PodLab.Exposed}=no");
        await PodLab.WaitForServiceGoneAsync(k.Server, "server", "client-custom-http");
        await PodLab.WaitForServiceGoneAsync(k.Server, "server", "client-custom-https");
    }

    [PodmanFact]
    public async Task Selected_ports_give_a_name_without_a_suffix()
    {
        await k.AnnotateAsync(k.Client, "nginx-two-ports", $"{PodLab.Exposed}=yes", "wormhole.glothriel.github.com/name=custom", "wormhole.glothriel.github.com/ports=http");
        await PodLab.WaitForServiceAsync(k.Server, "server", "client-custom");
        k.Server.Get("services", "server", "client-custom-https").Should().BeNull();

        await k.AnnotateAsync(k.Client, "nginx-two-ports", $"{PodLab.Exposed}=no");
        await PodLab.WaitForServiceGoneAsync(k.Server, "server", "client-custom");
    }

    [PodmanFact]
    public async Task Changing_ports_replaces_the_proxy_services_without_orphans()
    {
        await k.AnnotateAsync(k.Client, "nginx-two-ports", $"{PodLab.Exposed}=yes", "wormhole.glothriel.github.com/name=custom", "wormhole.glothriel.github.com/ports=http");
        await PodLab.WaitForServiceAsync(k.Server, "server", "client-custom");

        await k.AnnotateAsync(k.Client, "nginx-two-ports", "wormhole.glothriel.github.com/ports=http,https");
        await PodLab.WaitForServiceAsync(k.Server, "server", "client-custom-http");
        await PodLab.WaitForServiceAsync(k.Server, "server", "client-custom-https");
        await PodLab.WaitForServiceGoneAsync(k.Server, "server", "client-custom");
    }

    [PodmanFact]
    public async Task Traffic_flows_through_the_generated_services_both_ways_and_their_network_policies_admit_only_labelled_pods()
    {
        await k.AnnotateAsync(k.Client, "nginx", $"{PodLab.Exposed}=yes");
        await k.AnnotateAsync(k.Server, "nginx", $"{PodLab.Exposed}=yes");
        await PodLab.WaitForServiceAsync(k.Server, "server", "client-nginx-nginx");
        await PodLab.WaitForServiceAsync(k.Client, "client", "server-nginx-nginx");

        // Spoke → hub: client-nginx-nginx in the hub's cluster reaches nginx in the spoke's, and the reverse.
        await Eventually.Async(async () => await PodLab.ThroughServiceAsync(k.Hub, "server", "client-nginx-nginx") == PodLab.ClientBody, "the hub's Service reaches the spoke's nginx", TimeSpan.FromSeconds(36));
        await Eventually.Async(async () => await PodLab.ThroughServiceAsync(k.Spoke, "client", "server-nginx-nginx") == PodLab.ServerBody, "the spoke's Service reaches the hub's nginx", TimeSpan.FromSeconds(36));

        foreach (var (cluster, ns, name, pod) in new[] { (k.Server, "server", "client-nginx-nginx", k.Hub), (k.Client, "client", "server-nginx-nginx", k.Spoke) })
        {
            var policy = cluster.Get("networkpolicies", ns, name);
            policy.Should().NotBeNull($"networkPolicies.enabled renders --network-policies: NetworkPolicy {ns}/{name}");
            policy!["spec"]!["podSelector"]!["matchLabels"]!.ToJsonString().Should().Be($$"""{"application":"{{pod.Fullname}}"}""");
            var rule = policy["spec"]!["ingress"]!.AsArray().Single()!;
            rule["ports"]![0]!["port"]!.GetValue<int>().Should().Be(cluster.Get("services", ns, name)!["spec"]!["ports"]![0]!["targetPort"]!.GetValue<int>());
            rule["from"]!.AsArray().Single()!["podSelector"]!["matchLabels"]!.ToJsonString().Should().Be($$"""{"{{PodLab.ConsumesApp}}":"nginx-nginx"}""",
                "only pods labelled as consumers of the app may connect (no NetworkPolicy is enforced here: its shape is what is checked)");
            rule["from"]![0]!["namespaceSelector"]!.ToJsonString().Should().Be("{}", "consumers may be in any namespace");
        }
    }

    [PodmanFact]
    public async Task A_restarted_spoke_reconnects_with_its_cached_address()
    {
        const string Cached = "using IP from the cache";
        var ip = (string)(await k.Hub.ApiAsync("/api/peers/v1")).AsArray().Single(p => (string)p!["name"]! == "client")!["ip"]!;
        var before = Occurrences(await k.Spoke.LogsAsync(), Cached);

        await k.Spoke.CrashAsync();
        await k.ResetAsync();

        await Eventually.Async(async () => Occurrences(await k.Spoke.LogsAsync(), Cached) > before, "the restarted container reuses its address from the volume", TimeSpan.FromSeconds(60));
        (await k.Spoke.LogsAsync()).Should().Contain($"{Cached}: {ip}", "the address the hub has for it");
    }

    [PodmanFact]
    public async Task Client_metadata_reaches_the_hub()
    {
        // helm upgrade --set client.syncMetadata.testFoo=testBar: a new pod (checksum/config changed) on the same volume.
        var before = ServerChartTests.Checksum(k.Spoke.Manifests);
        await k.Spoke.PlayAsync(k.ClientValues("client.syncMetadata.testFoo=testBar"));
        ServerChartTests.Checksum(k.Spoke.Manifests).Should().NotBe(before, "the metadata change rolls the pod");
        await k.Spoke.WaitReadyAsync();

        await Eventually.Async(
            async () => (await k.Hub.ApiAsync("/api/peers/v2")).ToJsonString().Contains("\"testFoo\":\"testBar\"", StringComparison.Ordinal),
            "GET /api/peers/v2 shows the spoke's metadata",
            TimeSpan.FromSeconds(60));
        await k.Spoke.PlayAsync(k.ClientValues());
    }

    [PodmanFact]
    public async Task Deleting_a_peer_needs_basic_auth_and_removes_it()
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        var peer = new Uri($"http://{k.Hub.Address}:8082/api/peers/v1/client");
        using (var refused = await http.DeleteAsync(peer))
        {
            (await refused.Content.ReadAsStringAsync()).Should().Contain("Basic authentication is required but not enabled");
        }

        // helm upgrade --set server.basicAuth.username=kajtek --set server.basicAuth.password=kajtek
        await k.Hub.PlayAsync(k.ServerValues("server.basicAuth.username=kajtek", "server.basicAuth.password=kajtek"));
        await k.Hub.WaitReadyAsync();
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Delete, peer);
            request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Basic", Convert.ToBase64String("kajtek:kajtek"u8.ToArray()));
            using var deleted = await http.SendAsync(request);
            deleted.StatusCode.Should().Be(HttpStatusCode.NoContent, await deleted.Content.ReadAsStringAsync());
            (await k.Hub.LogsAsync()).Should().Contain("Deleted peer client: removed from WireGuard, its apps withdrawn");

            // The spoke, still running, finds itself unknown at its next sync and pairs again (the reference's test ends
            // at the empty list; this spoke is back within a round trip, so the list is not asserted empty). The hub pod
            // was just replaced (helm upgrade), so the spoke may first wait out the long-poll it had open with the old one
            // (40 s, no FIN reaches it) and then its retry schedule: a bound for failure of 120 s, not a speed target.
            await Eventually.Async(async () => (await k.Hub.ApiAsync("/api/peers/v1")).ToJsonString().Contains("\"client\"", StringComparison.Ordinal), "the spoke has paired again", TimeSpan.FromSeconds(120));
        }
        finally
        {
            await k.Hub.PlayAsync(k.ServerValues());
        }
    }

    [PodmanFact]
    public async Task Killing_the_hub_container_loses_nothing()
    {
        foreach (var cluster in new[] { k.Client, k.Server })
        {
            await k.AnnotateAsync(cluster, "nginx", $"{PodLab.Exposed}=yes");
        }

        await TrafficFlowsBothWaysAsync("both sides expose nginx");
        var before = (Server: k.Server.Generated("server"), Client: k.Client.Generated("client"));
        before.Server.Keys.Should().BeEquivalentTo(["Service/client-nginx-nginx", "NetworkPolicy/client-nginx-nginx"]);
        before.Client.Keys.Should().BeEquivalentTo(["Service/server-nginx-nginx", "NetworkPolicy/server-nginx-nginx"]);

        // kill -9 of the container's process; podman restarts it (restartPolicy Always) in the same pod, on the same volume.
        var started = System.Diagnostics.Stopwatch.StartNew();
        await k.Hub.CrashAsync();
        await k.Hub.WaitReadyAsync();
        await TrafficFlowsBothWaysAsync("after the hub's restart");
        Timings.Record("hub pod: container kill -9 -> traffic both ways again", started.Elapsed);

        // Past the restarted hub's grace (--kubernetes-gc-grace as the chart renders it): what it kept for the spoke's first
        // sync would be deleted by then. A spoke notices the dead hub only when its pending long-poll times out (the
        // container's death took wireguard-go and the session with it: no FIN or RST ever reaches the spoke), so the
        // chart's grace for the hub is longer than that. With the executable's 15 s, both objects were deleted and made
        // again here (new uid, new ClusterIP).
        var grace = k.Hub.Manifests.Args.Single(a => a.StartsWith("--kubernetes-gc-grace=", StringComparison.Ordinal));
        grace.Should().Be("--kubernetes-gc-grace=60s");
        var left = TimeSpan.FromSeconds(61) - started.Elapsed;
        if (left > TimeSpan.Zero)
        {
            await Task.Delay(left);
        }

        var logs = await k.Hub.LogsAsync() + "\n--- spoke ---\n" + await k.Spoke.LogsAsync();
        k.Server.Generated("server").Should().BeEquivalentTo(before.Server, "the hub updated its objects in place (same uid, same ClusterIP); logs:\n{0}", logs);
        k.Client.Generated("client").Should().BeEquivalentTo(before.Client, "the spoke was never told 'no apps' by the starting hub; logs:\n{0}", logs);
        await TrafficFlowsBothWaysAsync("after the grace");
    }

    private Task TrafficFlowsBothWaysAsync(string when) =>
        Eventually.Async(
            async () => await PodLab.ThroughServiceAsync(k.Hub, "server", "client-nginx-nginx") == PodLab.ClientBody
                && await PodLab.ThroughServiceAsync(k.Spoke, "client", "server-nginx-nginx") == PodLab.ServerBody,
            $"traffic flows both ways {when}",
            TimeSpan.FromSeconds(60),
            async () => await k.Hub.LogsAsync() + await k.Spoke.LogsAsync());

    private static int Occurrences(string text, string what) => (text.Length - text.Replace(what, "", StringComparison.Ordinal).Length) / what.Length;
}
