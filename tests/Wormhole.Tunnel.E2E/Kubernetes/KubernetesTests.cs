using System.Diagnostics;
using System.Net;
using System.Text.Json.Nodes;
using Wormhole.Tunnel.E2E.Infrastructure;
using Wormhole.Tunnel.Sinks;

namespace Wormhole.Tunnel.E2E.Kubernetes;

/// <summary>
/// Two "clusters" — each a network namespace with its own API emulator — over real WireGuard. The hub ("server") and
/// the spoke ("client") run with --kubernetes; tests act with kubectl, as users do. Mirrors the reference's ten
/// integration tests (reference §8.1), with the orphans it tolerates asserted away.
/// </summary>
public class KubernetesTests
{
    private const string Ns = "wormhole";

    [RootFact]
    public async Task Annotation_creates_and_removes_the_proxy_service_on_the_other_side()
    {
        await using var k = await KubeLab.StartAsync();
        var before = await k.Server.ServiceNamesAsync(Ns);
        var shown = new List<TimeSpan>();
        var gone = new List<TimeSpan>();
        for (var round = 0; round < 20; round++)
        {
            await k.Client.KubectlAsync("annotate", "svc", "nginx", "-n", "nginx", "--overwrite", "wormhole.glothriel.github.com/exposed=yes");
            shown.Add(await TunnelLab.EventuallyAsync(() => k.Server.ServiceExistsAsync(Ns, "client-nginx-nginx"), "client-nginx-nginx appears in the hub's cluster"));
            await k.Client.KubectlAsync("annotate", "svc", "nginx", "-n", "nginx", "--overwrite", "wormhole.glothriel.github.com/exposed=no");
            gone.Add(await TunnelLab.EventuallyAsync(async () => !await k.Server.ServiceExistsAsync(Ns, "client-nginx-nginx"), "client-nginx-nginx disappears"));
        }

        Timings.Record("kubectl annotate exposed=yes -> generated Service visible on the other side", shown);
        Timings.Record("kubectl annotate exposed=no -> generated Service gone on the other side", gone);
        (await k.Server.ServiceNamesAsync(Ns)).Should().Equal(before);
    }

    [RootFact]
    public async Task Custom_name_sets_the_remote_name_in_both_directions()
    {
        await using var k = await KubeLab.StartAsync();
        foreach (var cluster in new[] { k.Client, k.Server })
        {
            await cluster.KubectlAsync("annotate", "svc", "nginx", "-n", "nginx", "wormhole.glothriel.github.com/exposed=yes", "wormhole.glothriel.github.com/name=huehue-one-two-three");
        }

        await TunnelLab.EventuallyAsync(() => k.Server.ServiceExistsAsync(Ns, "client-huehue-one-two-three"), "the client's app shows on the server");
        await TunnelLab.EventuallyAsync(() => k.Client.ServiceExistsAsync(Ns, "server-huehue-one-two-three"), "the server's app shows on the client");
        foreach (var cluster in new[] { k.Client, k.Server })
        {
            await cluster.KubectlAsync("annotate", "svc", "nginx", "-n", "nginx", "--overwrite", "wormhole.glothriel.github.com/exposed=no");
        }

        await TunnelLab.EventuallyAsync(async () => !await k.Server.ServiceExistsAsync(Ns, "client-huehue-one-two-three") && !await k.Client.ServiceExistsAsync(Ns, "server-huehue-one-two-three"), "both are gone");
    }

    [RootFact]
    public async Task Deleting_the_annotated_service_removes_it_from_peers()
    {
        await using var k = await KubeLab.StartAsync();
        await k.Client.KubectlAsync("annotate", "svc", "nginx", "-n", "nginx", "wormhole.glothriel.github.com/exposed=yes", "wormhole.glothriel.github.com/name=huehue-one-two-three");
        await TunnelLab.EventuallyAsync(() => k.Server.ServiceExistsAsync(Ns, "client-huehue-one-two-three"), "the app shows on the server");
        await k.Client.KubectlAsync("delete", "svc", "nginx", "-n", "nginx");
        await TunnelLab.EventuallyAsync(async () => !await k.Server.ServiceExistsAsync(Ns, "client-huehue-one-two-three"), "the app is gone from the server");
    }

    [RootFact]
    public async Task Multiple_ports_selected_ports_and_changing_ports_leave_no_orphans()
    {
        await using var k = await KubeLab.StartAsync();
        await k.Client.KubectlAsync("annotate", "svc", "nginx-two-ports", "-n", "nginx", "wormhole.glothriel.github.com/exposed=yes", "wormhole.glothriel.github.com/name=custom");
        await k.EventuallyServerServicesAsync(["client-custom-http", "client-custom-https"], "both ports are exposed with suffixes");

        await k.Client.KubectlAsync("annotate", "svc", "nginx-two-ports", "-n", "nginx", "wormhole.glothriel.github.com/ports=http");
        await k.EventuallyServerServicesAsync(["client-custom"], "one selected port, no suffix, no orphans");

        await k.Client.KubectlAsync("annotate", "svc", "nginx-two-ports", "-n", "nginx", "--overwrite", "wormhole.glothriel.github.com/ports=http,https");
        await k.EventuallyServerServicesAsync(["client-custom-http", "client-custom-https"], "the single-port Service is replaced, not orphaned");

        await k.Client.KubectlAsync("annotate", "svc", "nginx-two-ports", "-n", "nginx", "--overwrite", "wormhole.glothriel.github.com/exposed=no");
        await k.EventuallyServerServicesAsync([], "all gone");
    }

    [RootFact]
    public async Task Traffic_reaches_the_backend_through_the_generated_service_and_a_network_policy_is_rendered()
    {
        await using var k = await KubeLab.StartAsync();
        await k.Client.KubectlAsync("annotate", "svc", "nginx", "-n", "nginx", "wormhole.glothriel.github.com/exposed=yes");
        await TunnelLab.EventuallyAsync(() => k.Server.ServiceExistsAsync(Ns, "client-nginx-nginx"), "the generated Service exists");

        var service = (await k.Server.GetAsync("svc", Ns, "client-nginx-nginx"))!;
        service["spec"]!["ports"]![0]!["port"]!.GetValue<int>().Should().Be(k.ClientBackendPort);
        service["spec"]!["selector"]!["application"]!.GetValue<string>().Should().Be("wormhole-server");
        var targetPort = service["spec"]!["ports"]![0]!["targetPort"]!.GetValue<int>();
        (await TunnelLab.FetchAsync(k.Lab.Hub, targetPort)).Should().Be("Hello world from the client cluster!");

        var policy = (await k.Server.GetAsync("networkpolicy", Ns, "client-nginx-nginx"))!;
        policy["spec"]!["podSelector"]!["matchLabels"]!["application"]!.GetValue<string>().Should().Be("wormhole-server");
        var rule = policy["spec"]!["ingress"]![0]!;
        rule["ports"]![0]!["port"]!.GetValue<int>().Should().Be(targetPort);
        rule["from"]![0]!["podSelector"]!["matchLabels"]!["wormhole.glothriel.github.com/network-policy-consumes-app"]!.GetValue<string>().Should().Be("nginx-nginx");

        var apps = (await TunnelLab.ApiAsync(k.Lab.Hub, "/api/apps")).AsArray();
        apps.Should().ContainSingle().Which!["address"]!.GetValue<string>().Should().Be($"client-nginx-nginx.{Ns}:{k.ClientBackendPort}");
    }

    [RootFact]
    public async Task Restarted_client_reconnects_with_its_cached_address()
    {
        await using var k = await KubeLab.StartAsync();
        k.ClientProcess.Output.Should().Contain("Paired with server, assigned IP");
        await k.ClientProcess.StopAsync();
        var again = await k.Lab.StartSpokeAsync(k.Lab.Network["client"], extra: k.Client.Flags("application=wormhole-client"), waitForPairing: false, appsFile: false);
        await again.WaitForOutputAsync("using IP from the cache", TunnelLab.Patience);
    }

    [RootFact]
    public async Task Unexpose_within_the_first_15_s_of_a_hubs_life_is_applied_within_1_s()
    {
        await using var k = await KubeLab.StartAsync();
        await ExposeNginxAsync(k);

        // A restart: the hub's grace (15 s) starts again, and the objects are from before its start.
        var uid = (string)(await k.Server.GetAsync("svc", Ns, "client-nginx-nginx"))!["metadata"]!["uid"]!;
        await k.HubProcess.StopAsync();
        var sinceStart = Stopwatch.StartNew();
        await k.StartHubAsync();
        var grace = TimeSpan.FromSeconds(15);
        var synced = await TunnelLab.EventuallyAsync(
            async () => (await TunnelLab.ApiAsync(k.Lab.Hub, "/api/apps")).AsArray().Count == 1, "the spoke has synced with the restarted hub");
        sinceStart.Elapsed.Should().BeLessThan(
            grace - TimeSpan.FromSeconds(1),
            "the spoke has to sync with the restarted hub early enough in its 15 s grace to change something within it (it took {0:0.0} s after the hub's start-up)",
            synced.TotalSeconds);
        Timings.Record("hub SIGTERM + restart (Kubernetes) -> the spoke has synced again", [sinceStart.Elapsed]);
        ((string)(await k.Server.GetAsync("svc", Ns, "client-nginx-nginx"))!["metadata"]!["uid"]!).Should().Be(uid, "kept in place across the restart");

        var took = await UnexposeNginxAsync(k);
        Timings.Record("kubectl annotate exposed=no within a restarted hub's first 15 s -> generated Service and NetworkPolicy gone", [took]);
        took.Should().BeLessThan(TimeSpan.FromSeconds(1), "the peer has synced since the start, so its app set is authoritative");
        sinceStart.Elapsed.Should().BeLessThan(grace, "all of this happened within the hub's grace");
    }

    [RootFact]
    public async Task Unexpose_within_the_first_15_s_of_a_new_hubs_life_is_applied_within_1_s()
    {
        var sinceStart = Stopwatch.StartNew();
        await using var k = await KubeLab.StartAsync();
        await ExposeNginxAsync(k);

        var took = await UnexposeNginxAsync(k);
        Timings.Record("kubectl annotate exposed=no within a new hub's first 15 s -> generated Service and NetworkPolicy gone", [took]);
        took.Should().BeLessThan(TimeSpan.FromSeconds(1), "the hub made these objects itself after its start: no grace applies");
        sinceStart.Elapsed.Should().BeLessThan(TimeSpan.FromSeconds(15), "all of this happened within the hub's grace");
    }

    [RootFact]
    public async Task Kill_9_and_restart_of_the_hub_then_the_spoke_keeps_every_generated_object_in_place()
    {
        await using var k = await KubeLab.StartAsync();
        foreach (var cluster in new[] { k.Client, k.Server })
        {
            await cluster.KubectlAsync("annotate", "svc", "nginx", "-n", "nginx", "wormhole.glothriel.github.com/exposed=yes");
        }

        await TrafficFlowsBothWaysAsync(k, "both sides expose nginx");
        var before = (Server: await GeneratedAsync(k.Server), Client: await GeneratedAsync(k.Client));
        before.Server.Keys.Should().BeEquivalentTo(["Service/client-nginx-nginx", "NetworkPolicy/client-nginx-nginx"]);
        before.Client.Keys.Should().BeEquivalentTo(["Service/server-nginx-nginx", "NetworkPolicy/server-nginx-nginx"]);

        k.HubProcess.Kill();
        await k.HubProcess.WaitForExitAsync(TimeSpan.FromSeconds(10));
        var hubStarted = Stopwatch.StartNew();
        await k.StartHubAsync();
        await TrafficFlowsBothWaysAsync(k, "after the hub's restart");
        Timings.Record("hub kill -9 + restart (Kubernetes) -> traffic both ways again", [hubStarted.Elapsed]);
        await PastTheGraceAsync(hubStarted);
        (await GeneratedAsync(k.Server)).Should().BeEquivalentTo(before.Server, "the hub updates its objects in place (same uid, same ClusterIP)");
        (await GeneratedAsync(k.Client)).Should().BeEquivalentTo(before.Client, "the spoke was never told 'no apps' by the starting hub");

        k.ClientProcess.Kill();
        await k.ClientProcess.WaitForExitAsync(TimeSpan.FromSeconds(10));
        var spokeStarted = Stopwatch.StartNew();
        await k.Lab.StartSpokeAsync(k.Lab.Network["client"], extra: k.Client.Flags("application=wormhole-client"), waitForPairing: false, appsFile: false);
        await TrafficFlowsBothWaysAsync(k, "after the spoke's restart");
        Timings.Record("spoke kill -9 + restart (Kubernetes) -> traffic both ways again", [spokeStarted.Elapsed]);
        await PastTheGraceAsync(spokeStarted);
        (await GeneratedAsync(k.Client)).Should().BeEquivalentTo(before.Client, "the spoke updates its objects in place");
        (await GeneratedAsync(k.Server)).Should().BeEquivalentTo(before.Server, "the hub was never told 'no apps' by the starting spoke");
    }

    [RootFact]
    public async Task Client_metadata_shows_in_peers_v2()
    {
        await using var k = await KubeLab.StartAsync(clientMetadata: """{"testFoo":"testBar"}""");
        await TunnelLab.EventuallyAsync(
            async () => (await TunnelLab.ApiAsync(k.Lab.Hub, "/api/peers/v2")).ToJsonString().Contains("\"testFoo\":\"testBar\"", StringComparison.Ordinal),
            "the metadata reaches the hub");
    }

    [RootFact]
    public async Task Peer_deletion_removes_its_services()
    {
        await using var k = await KubeLab.StartAsync(basicAuth: true);
        await k.Client.KubectlAsync("annotate", "svc", "nginx", "-n", "nginx", "wormhole.glothriel.github.com/exposed=yes");
        await TunnelLab.EventuallyAsync(() => k.Server.ServiceExistsAsync(Ns, "client-nginx-nginx"), "the generated Service exists");

        using (var response = await TunnelLab.DeletePeerAsync(k.Lab.Hub, "client", "kajtek:kajtek"))
        {
            response.StatusCode.Should().Be(HttpStatusCode.NoContent);
        }

        (await k.Server.ServiceExistsAsync(Ns, "client-nginx-nginx")).Should().BeFalse("the DELETE answers once the peer's objects are gone");
        (await k.Server.GetAsync("networkpolicy", Ns, "client-nginx-nginx")).Should().BeNull();
    }

    [RootFact]
    public async Task Peer_deletion_says_so_when_the_kubernetes_api_cannot_remove_its_services()
    {
        await using var k = await KubeLab.StartAsync(basicAuth: true);
        await k.Client.KubectlAsync("annotate", "svc", "nginx", "-n", "nginx", "wormhole.glothriel.github.com/exposed=yes");
        await TunnelLab.EventuallyAsync(() => k.Server.ServiceExistsAsync(Ns, "client-nginx-nginx"), "the generated Service exists");
        k.Server.Process.Kill();
        await k.Server.Process.WaitForExitAsync(TimeSpan.FromSeconds(10));

        using var response = await TunnelLab.DeletePeerAsync(k.Lab.Hub, "client", "kajtek:kajtek");

        response.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable, "the Service could not be deleted, so 204 would be a lie");
        (await response.Content.ReadAsStringAsync()).Should().Contain("kubernetes sink failed");
        (await TunnelLab.ApiAsync(k.Lab.Hub, "/api/peers")).AsArray().Should().BeEmpty("the peer itself is forgotten");
    }

    [RootFact]
    public async Task Orphans_from_before_a_restart_are_collected_at_start()
    {
        await using var k = await KubeLab.StartAsync(startSpoke: false);
        await k.Server.ApplyAsync($$"""
            apiVersion: v1
            kind: Service
            metadata:
              name: gone-peer-old-app
              namespace: {{Ns}}
              labels:
                wormhole.glothriel.github.com/exposed-by: wormhole
                wormhole.glothriel.github.com/exposed-peer: gone-peer
            spec:
              selector: {application: wormhole-server}
              ports: [{port: 80, targetPort: 25001}]
            ---
            apiVersion: v1
            kind: Service
            metadata:
              name: gone-peer-new-app
              namespace: {{Ns}}
              labels:
                wormhole.glothriel.github.com/exposed-by: wormhole
                wormhole.glothriel.github.com/exposed-peer: gone-peer
                wormhole.glothriel.github.com/instance: server
            spec:
              selector: {application: wormhole-server}
              ports: [{port: 80, targetPort: 25002}]
            ---
            apiVersion: v1
            kind: Service
            metadata:
              name: another-sides-app
              namespace: {{Ns}}
              labels:
                wormhole.glothriel.github.com/exposed-by: wormhole
                wormhole.glothriel.github.com/exposed-peer: gone-peer
                wormhole.glothriel.github.com/instance: another-side
            spec:
              selector: {application: wormhole-another-side}
              ports: [{port: 80, targetPort: 25003}]
            ---
            apiVersion: v1
            kind: Service
            metadata:
              name: not-ours
              namespace: {{Ns}}
            spec:
              ports: [{port: 80}]
            """);
        await k.HubProcess.StopAsync();
        await k.StartHubAsync();

        // One without an instance label (glothriel/wormhole's) is ours because it selects our pods; one with ours is ours.
        await TunnelLab.EventuallyAsync(
            async () => !await k.Server.ServiceExistsAsync(Ns, "gone-peer-old-app") && !await k.Server.ServiceExistsAsync(Ns, "gone-peer-new-app"),
            "the orphans are deleted");
        (await k.Server.ServiceExistsAsync(Ns, "not-ours")).Should().BeTrue("only objects labelled exposed-by=wormhole can be ours");
        (await k.Server.ServiceExistsAsync(Ns, "another-sides-app")).Should().BeTrue("it belongs to another side sharing the namespace");
    }

    [RootFact]
    public async Task A_peer_app_named_like_the_hubs_own_chart_service_leaves_it_untouched_with_a_warning_event()
    {
        // A spoke paired as "wormhole" offering an app "server" wants the name wormhole-server: what the chart calls the
        // hub's public Service (and, with networkPolicies.enabled, its own NetworkPolicy) for release "server".
        await using var k = await KubeLab.StartAsync(spoke: "wormhole");
        await k.Server.ApplyAsync($$$"""
            apiVersion: v1
            kind: Service
            metadata:
              name: wormhole-server
              namespace: {{{Ns}}}
              labels: {app.kubernetes.io/instance: server, app.kubernetes.io/managed-by: Helm, app.kubernetes.io/part-of: wormhole}
            spec:
              type: LoadBalancer
              selector: {application: wormhole-server}
              ports:
                - {name: peering, port: 8080, targetPort: peering, protocol: TCP}
                - {name: data, port: 51820, targetPort: wireguard, protocol: UDP}
            ---
            apiVersion: networking.k8s.io/v1
            kind: NetworkPolicy
            metadata:
              name: wormhole-server
              namespace: {{{Ns}}}
              labels: {app.kubernetes.io/instance: server, app.kubernetes.io/managed-by: Helm, app.kubernetes.io/part-of: wormhole}
            spec:
              podSelector: {matchLabels: {application: wormhole-server}}
              policyTypes: [Ingress]
              ingress: [{ports: [{protocol: TCP, port: 8082}, {protocol: TCP, port: 8080}, {protocol: UDP, port: 51820}]}]
            """);
        var service = (await k.Server.GetAsync("svc", Ns, "wormhole-server"))!.ToJsonString();
        var policy = (await k.Server.GetAsync("networkpolicy", Ns, "wormhole-server"))!.ToJsonString();

        await k.Client.KubectlAsync("annotate", "svc", "nginx", "-n", "nginx", "wormhole.glothriel.github.com/exposed=yes", "wormhole.glothriel.github.com/name=server");
        await TunnelLab.EventuallyAsync(async () => (await TunnelLab.ApiAsync(k.Lab.Hub, "/api/apps")).AsArray().Count == 1, "the hub plans the app 'server'");

        // Another app of the same peer still works; its Service appearing means the pass with the clash is done.
        await k.Client.KubectlAsync("annotate", "svc", "nginx-two-ports", "-n", "nginx", "wormhole.glothriel.github.com/exposed=yes", "wormhole.glothriel.github.com/ports=http");
        await TunnelLab.EventuallyAsync(() => k.Server.ServiceExistsAsync(Ns, "wormhole-nginx-nginx-two-ports"), "the other app's Service appears");
        var targetPort = (await k.Server.GetAsync("svc", Ns, "wormhole-nginx-nginx-two-ports"))!["spec"]!["ports"]![0]!["targetPort"]!.GetValue<int>();
        (await TunnelLab.FetchAsync(k.Lab.Hub, targetPort)).Should().Be("Hello world from the client cluster!");

        (await k.Server.GetAsync("svc", Ns, "wormhole-server"))!.ToJsonString().Should().Be(service, "the chart's Service is untouched: same spec, labels and resourceVersion");
        (await k.Server.GetAsync("networkpolicy", Ns, "wormhole-server"))!.ToJsonString().Should().Be(policy);
        var events = await ClashEventsAsync(k);
        events.Select(e => ((string)e["involvedObject"]!["kind"]!, (string)e["type"]!, (int)e["count"]!))
            .Should().BeEquivalentTo([("Service", "Warning", 1), ("NetworkPolicy", "Warning", 1)], "one Warning per clashing object, not repeated by later passes");
        events.Should().OnlyContain(e => ((string)e["message"]!).Contains("app 'server' of peer 'wormhole'", StringComparison.Ordinal));
        k.HubProcess.Output.Should().Contain("Service wormhole/wormhole-server is not ours").And.Contain("remote app server of peer wormhole");
        k.HubProcess.HasExited.Should().BeFalse();
    }

    [RootFact]
    public async Task Junk_ports_and_an_invalid_name_give_warning_events_and_change_nothing_else()
    {
        await using var k = await KubeLab.StartAsync();
        await k.Client.KubectlAsync("annotate", "svc", "nginx", "-n", "nginx", "wormhole.glothriel.github.com/exposed=yes");
        await TunnelLab.EventuallyAsync(() => k.Server.ServiceExistsAsync(Ns, "client-nginx-nginx"), "a good app is exposed");
        await k.Client.KubectlAsync("annotate", "svc", "nginx-two-ports", "-n", "nginx", "wormhole.glothriel.github.com/exposed=yes", "wormhole.glothriel.github.com/ports=99999,bogus", "wormhole.glothriel.github.com/name=bad/name");

        await TunnelLab.EventuallyAsync(
            async () => (await k.Client.KubectlAsync("get", "events", "-n", "nginx", "-o", "json")).Contains("WormholeInvalidExposure", StringComparison.Ordinal),
            "a Warning event is recorded on the Service");
        var events = JsonNode.Parse(await k.Client.KubectlAsync("get", "events", "-n", "nginx", "-o", "json"))!["items"]!.AsArray();
        events.Should().Contain(e => (string)e!["type"]! == "Warning" && (string)e["involvedObject"]!["name"]! == "nginx-two-ports" && ((string)e["message"]!).Contains("99999"));
        events.Should().Contain(e => (string)e!["type"]! == "Normal" && (string)e["involvedObject"]!["name"]! == "nginx" && ((string)e["message"]!).Contains("client-nginx-nginx"));
        (await k.Server.ServiceNamesAsync(Ns)).Should().Equal("client-nginx-nginx");
        k.ClientProcess.HasExited.Should().BeFalse();
    }

    /// <summary>
    /// Generated objects in a cluster's wormhole namespace: "Kind/name" → "uid clusterIP" (a Service deleted and made
    /// again has a new uid and, almost surely, a new ClusterIP).
    /// </summary>
    private static async Task<Dictionary<string, string>> GeneratedAsync(KubeCluster cluster)
    {
        var json = JsonNode.Parse(await cluster.KubectlAsync("get", "svc,networkpolicy", "-n", Ns, "-l", "wormhole.glothriel.github.com/exposed-by=wormhole", "-o", "json"))!;
        return json["items"]!.AsArray().ToDictionary(
            i => $"{(string)i!["kind"]!}/{(string)i["metadata"]!["name"]!}",
            i => $"{(string)i!["metadata"]!["uid"]!} {(string?)i["spec"]!["clusterIP"]}");
    }

    /// <summary>Waits until nginx answers through the generated Service's listener on each side; returns how long it took.</summary>
    private static async Task<TimeSpan> TrafficFlowsBothWaysAsync(KubeLab k, string when)
    {
        async Task<bool> Flows(KubeCluster cluster, Site site, string service, string body)
        {
            var svc = await cluster.GetAsync("svc", Ns, service);
            return svc is not null && await TunnelLab.FetchAsync(site, svc["spec"]!["ports"]![0]!["targetPort"]!.GetValue<int>()) == body;
        }

        return await TunnelLab.EventuallyAsync(
            async () => await Flows(k.Server, k.Lab.Hub, "client-nginx-nginx", "Hello world from the client cluster!")
                && await Flows(k.Client, k.Lab.Network["client"], "server-nginx-nginx", "Hello world from the server cluster!"),
            $"traffic flows both ways {when}");
    }

    /// <summary>
    /// Waits out the restarted side's grace (15 s, the chart's default): what it defers would be deleted then. The
    /// end of a time window is the condition here, so this is a wait for time, not a stand-in for a condition.
    /// </summary>
    private static async Task PastTheGraceAsync(Stopwatch sinceStart)
    {
        var left = TimeSpan.FromSeconds(16) - sinceStart.Elapsed;
        if (left > TimeSpan.Zero)
        {
            await Task.Delay(left);
        }
    }

    private static async Task ExposeNginxAsync(KubeLab k)
    {
        await k.Client.KubectlAsync("annotate", "svc", "nginx", "-n", "nginx", "wormhole.glothriel.github.com/exposed=yes");
        await TunnelLab.EventuallyAsync(
            async () => await k.Server.ServiceExistsAsync(Ns, "client-nginx-nginx") && await k.Server.GetAsync("networkpolicy", Ns, "client-nginx-nginx") is not null,
            "the generated Service and NetworkPolicy exist");
    }

    /// <summary>Annotates exposed=no; returns how long from just before kubectl starts until both generated objects are gone.</summary>
    private static async Task<TimeSpan> UnexposeNginxAsync(KubeLab k)
    {
        var clock = Stopwatch.StartNew();
        await k.Client.KubectlAsync("annotate", "svc", "nginx", "-n", "nginx", "--overwrite", "wormhole.glothriel.github.com/exposed=no");
        await TunnelLab.EventuallyAsync(
            async () => !await k.Server.ServiceExistsAsync(Ns, "client-nginx-nginx") && await k.Server.GetAsync("networkpolicy", Ns, "client-nginx-nginx") is null,
            "the generated Service and NetworkPolicy are gone");
        return clock.Elapsed;
    }

    /// <summary>The WormholeNameClash events about wormhole-server in the hub's namespace.</summary>
    private static async Task<List<JsonNode>> ClashEventsAsync(KubeLab k) =>
        JsonNode.Parse(await k.Server.KubectlAsync("get", "events", "-n", Ns, "-o", "json"))!["items"]!.AsArray()
            .Where(e => (string?)e!["reason"] == "WormholeNameClash" && (string?)e["involvedObject"]!["name"] == "wormhole-server")
            .Select(e => e!)
            .ToList();
}

/// <summary>The two-cluster setup: emulators, mock Services with a backend, hub "server" and spoke "client" (by default).</summary>
public sealed class KubeLab : IAsyncDisposable
{
    private KubeLab(TunnelLab lab)
    {
        Lab = lab;
    }

    public TunnelLab Lab { get; }

    public KubeCluster Server { get; private set; } = null!;

    public KubeCluster Client { get; private set; } = null!;

    public ProcessHandle HubProcess { get; private set; } = null!;

    public ProcessHandle ClientProcess { get; set; } = null!;

    public int ClientBackendPort { get; private set; }

    private bool BasicAuth { get; init; }

    private IReadOnlyList<string> HubFlags { get; init; } = [];

    /// <summary>Whether hub and spoke run with --network-policies (the chart's networkPolicies.enabled, false by default).</summary>
    public bool NetworkPolicies { get; private init; } = true;

    /// <param name="spoke">The spoke's site and peer name (its --name).</param>
    /// <param name="networkPolicies">--network-policies on both sides; false is the chart's default.</param>
    /// <param name="hubFlags">More flags for the hub (a test that needs a non-default one says why).</param>
    /// <param name="aot">Run the NativeAOT executables (scripts/publish-aot, <see cref="AotExecutables"/>).</param>
    public static async Task<KubeLab> StartAsync(
        string? clientMetadata = null, bool basicAuth = false, bool startSpoke = true, string spoke = "client", bool networkPolicies = true, bool aot = false,
        IReadOnlyList<string>? hubFlags = null)
    {
        var network = await TestNetwork.CreateAsync("hub", spoke);
        var lab = aot
            ? new TunnelLab(network) { HubName = "server", ServerExecutable = AotExecutables.Server, ClientExecutable = AotExecutables.Client }
            : new TunnelLab(network) { HubName = "server" };
        var k = new KubeLab(lab) { BasicAuth = basicAuth, NetworkPolicies = networkPolicies, HubFlags = hubFlags ?? [] };
        try
        {
            var client = lab.Network[spoke];
            k.Server = await KubeCluster.StartAsync(lab, lab.Hub);
            k.Client = await KubeCluster.StartAsync(lab, client);
            k.ClientBackendPort = await MockServicesAsync(lab, client, k.Client, "Hello world from the client cluster!");
            await MockServicesAsync(lab, lab.Hub, k.Server, "Hello world from the server cluster!");
            await k.StartHubAsync();
            if (startSpoke)
            {
                var extra = k.Client.Flags($"application=wormhole-{spoke}", networkPolicies).ToList();
                if (clientMetadata is not null)
                {
                    extra.AddRange(["--client-metadata", clientMetadata]);
                }

                k.ClientProcess = await lab.StartSpokeAsync(client, extra: extra, appsFile: false);
            }

            return k;
        }
        catch
        {
            await k.DisposeAsync();
            throw;
        }
    }

    public async Task StartHubAsync()
    {
        var extra = Server.Flags("application=wormhole-server", NetworkPolicies).ToList();
        if (BasicAuth)
        {
            extra.AddRange(["--basic-auth-username", "kajtek", "--basic-auth-password", "kajtek"]);
        }

        extra.AddRange(HubFlags);
        HubProcess = await Lab.StartHubAsync(extra, appsFile: false);
    }

    /// <summary>Waits until the generated Services in the hub's cluster are exactly <paramref name="names"/>.</summary>
    public Task<TimeSpan> EventuallyServerServicesAsync(string[] names, string what) =>
        TunnelLab.EventuallyAsync(async () => (await Server.ServiceNamesAsync("wormhole")).SequenceEqual(names.Order(StringComparer.Ordinal)), what);

    public ValueTask DisposeAsync() => Lab.DisposeAsync();

    /// <summary>The reference's mocks: Services nginx (http) and nginx-two-ports (http, https), backed by a tiny server.</summary>
    private static async Task<int> MockServicesAsync(TunnelLab lab, Site site, KubeCluster cluster, string body)
    {
        var port = lab.StartBackend(site, body);
        site.SetHosts(new Dictionary<string, IPAddress> { ["nginx.nginx"] = IPAddress.Loopback, ["nginx-two-ports.nginx"] = IPAddress.Loopback });
        await cluster.ApplyAsync($$"""
            apiVersion: v1
            kind: Namespace
            metadata:
              name: nginx
            ---
            apiVersion: v1
            kind: Service
            metadata:
              name: nginx
              namespace: nginx
            spec:
              selector: {app: nginx}
              ports: [{name: http, port: {{port}}, targetPort: 80}]
            ---
            apiVersion: v1
            kind: Service
            metadata:
              name: nginx-two-ports
              namespace: nginx
            spec:
              selector: {app: nginx}
              ports: [{name: http, port: {{port}}, targetPort: 80}, {name: https, port: 443, targetPort: 433}]
            """);
        return port;
    }
}
