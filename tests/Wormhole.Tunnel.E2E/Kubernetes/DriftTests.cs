using System.Globalization;
using System.Text.Json.Nodes;
using Wormhole.Tunnel.E2E.Infrastructure;

namespace Wormhole.Tunnel.E2E.Kubernetes;

/// <summary>
/// What happens to the generated objects when someone else changes them, with kubectl as users do: the hub's informer on
/// its namespace sees the change and a pass repairs it; what changes nothing of ours costs no request at all. Latencies
/// are read from the emulator's request log (its clock on both ends: the user's request arriving, ours arriving).
/// </summary>
public class DriftTests
{
    private const string Ns = "wormhole";
    private const string Generated = "client-nginx-nginx";
    private const string ServicePath = "/api/v1/namespaces/wormhole/services/" + Generated;
    private const string PolicyPath = "/apis/networking.k8s.io/v1/namespaces/wormhole/networkpolicies/" + Generated;

    [RootFact]
    public async Task A_deleted_generated_service_is_made_again_within_well_under_a_second()
    {
        await using var k = await KubeLab.StartAsync(networkPolicies: false); // the chart's default
        await ExposeNginxAsync(k);
        var repairs = new List<TimeSpan>();
        for (var round = 0; round < 10; round++)
        {
            var uid = await UidAsync(k.Server, "svc");
            var mark = (await RequestsAsync(k.Server)).Count;

            await k.Server.KubectlAsync("delete", "svc", Generated, "-n", Ns, "--wait=false");
            await TunnelLab.EventuallyAsync(async () => await UidAsync(k.Server, "svc") is { } again && again != uid, "the Service is back with a new uid");

            repairs.Add(RepairTime(await RequestsAsync(k.Server, mark), "DELETE", ServicePath, "PATCH"));
        }

        Timings.Record("kubectl delete of a generated Service -> our apply that makes it again (emulator clock)", repairs);
        repairs.Max().Should().BeLessThan(TimeSpan.FromSeconds(1), "the informer's DELETED event requests the pass that repairs it");
        (await TrafficThroughAsync(k)).Should().Be("Hello world from the client cluster!");
    }

    [AotFact]
    public async Task The_aot_hub_applies_watches_and_repairs_its_generated_objects_too()
    {
        if (AotExecutables.MissingReason is { } missing)
        {
            Assert.Fail("CI runs the NativeAOT executables: " + missing);
        }

        // The Kubernetes models, apply and JSON patches go through the library's source-generated JSON in this build.
        await using var k = await KubeLab.StartAsync(networkPolicies: true, aot: true);
        await ExposeNginxAsync(k);
        (await ManagersAsync(k.Server, "svc")).Should().Equal("wormhole-tunnel/Apply");
        var uid = await UidAsync(k.Server, "svc");

        await k.Server.KubectlAsync("delete", "svc", Generated, "-n", Ns, "--wait=false");
        await k.Server.KubectlAsync("patch", "networkpolicy", Generated, "-n", Ns, "--type=json", "-p", """[{"op":"replace","path":"/spec/ingress","value":[]}]""");

        await TunnelLab.EventuallyAsync(async () => await UidAsync(k.Server, "svc") is { } again && again != uid, "the Service is back");
        await TunnelLab.EventuallyAsync(
            async () => (await k.Server.GetAsync("networkpolicy", Ns, Generated))!["spec"]!["ingress"]!.AsArray().Count == 1, "the NetworkPolicy's rule is back");
        (await TrafficThroughAsync(k)).Should().Be("Hello world from the client cluster!");
    }

    [RootFact]
    public async Task A_deleted_generated_network_policy_is_made_again()
    {
        await using var k = await KubeLab.StartAsync(networkPolicies: true);
        await ExposeNginxAsync(k);
        var uid = await UidAsync(k.Server, "networkpolicy");
        var mark = (await RequestsAsync(k.Server)).Count;

        await k.Server.KubectlAsync("delete", "networkpolicy", Generated, "-n", Ns, "--wait=false");
        await TunnelLab.EventuallyAsync(async () => await UidAsync(k.Server, "networkpolicy") is { } again && again != uid, "the NetworkPolicy is back");

        var took = RepairTime(await RequestsAsync(k.Server, mark), "DELETE", PolicyPath, "PATCH");
        Timings.Record("kubectl delete of a generated NetworkPolicy -> our apply that makes it again (emulator clock)", [took]);
        took.Should().BeLessThan(TimeSpan.FromSeconds(1));
        var rule = (await k.Server.GetAsync("networkpolicy", Ns, Generated))!["spec"]!["ingress"]![0]!;
        rule["from"]![0]!["podSelector"]!["matchLabels"]!["wormhole.glothriel.github.com/network-policy-consumes-app"]!.GetValue<string>().Should().Be("nginx-nginx");
    }

    [RootFact]
    public async Task A_generated_services_port_selector_or_label_changed_with_kubectl_is_put_back_in_place()
    {
        await using var k = await KubeLab.StartAsync(networkPolicies: false);
        await ExposeNginxAsync(k);
        var wanted = Essentials((await k.Server.GetAsync("svc", Ns, Generated))!);
        var uid = await UidAsync(k.Server, "svc");
        var repairs = new List<TimeSpan>();
        string[][] edits =
        [
            ["--type=json", "-p", """[{"op":"replace","path":"/spec/ports/0/port","value":12345}]"""],
            ["--type=json", "-p", """[{"op":"replace","path":"/spec/ports/0/targetPort","value":9}]"""],
            ["-p", """{"spec":{"selector":{"application":"someone-else"}}}"""],
            ["-p", """{"spec":{"type":"NodePort"}}"""],
            ["-p", """{"metadata":{"labels":{"wormhole.glothriel.github.com/exposed-app":"renamed"}}}"""],
        ];
        foreach (var edit in edits)
        {
            var mark = (await RequestsAsync(k.Server)).Count;
            await k.Server.KubectlAsync(["patch", "svc", Generated, "-n", Ns, .. edit]);
            await TunnelLab.EventuallyAsync(
                async () => JsonNode.DeepEquals(Essentials((await k.Server.GetAsync("svc", Ns, Generated))!), wanted),
                $"the Service is as generated again after kubectl patch {string.Join(' ', edit)}");
            repairs.Add(RepairTime(await RequestsAsync(k.Server, mark), "PATCH", ServicePath, "PATCH"));
        }

        Timings.Record("kubectl patch of a generated Service's port, targetPort, selector, type or label -> our first write back (emulator clock)", repairs);
        (await UidAsync(k.Server, "svc")).Should().Be(uid, "repaired in place: same object, same ClusterIP");
        repairs.Max().Should().BeLessThan(TimeSpan.FromSeconds(1));
        (await TrafficThroughAsync(k)).Should().Be("Hello world from the client cluster!");
    }

    [RootFact]
    public async Task Service_events_that_change_no_app_cost_no_request_to_our_namespace()
    {
        await using var k = await KubeLab.StartAsync(networkPolicies: false);
        await ExposeNginxAsync(k);
        await k.Server.KubectlAsync("create", "service", "clusterip", "unrelated", "-n", "default", "--tcp=80");
        var mark = (await RequestsAsync(k.Server)).Count;

        // Changes to Services of the hub's cluster that change none of its apps...
        await k.Server.KubectlAsync("label", "svc", "nginx", "-n", "nginx", "team=a");
        await k.Server.KubectlAsync("annotate", "svc", "nginx-two-ports", "-n", "nginx", "note=x");
        await k.Server.KubectlAsync("label", "svc", "unrelated", "-n", "default", "team=b");
        await k.Server.KubectlAsync("delete", "svc", "unrelated", "-n", "default");
        // ...then one the hub answers with a Warning Event (still no app): once it is there, the hub has seen them all.
        await k.Server.KubectlAsync("annotate", "svc", "nginx-two-ports", "-n", "nginx", "wormhole.glothriel.github.com/exposed=yes", "wormhole.glothriel.github.com/ports=99999");
        await TunnelLab.EventuallyAsync(
            async () => (await k.Server.KubectlAsync("get", "events", "-n", "nginx", "-o", "json")).Contains("WormholeInvalidExposure", StringComparison.Ordinal),
            "the hub has reported the bad annotation");

        var ours = (await RequestsAsync(k.Server, mark)).Where(r => r.UserAgent.StartsWith("wormhole-tunnel", StringComparison.Ordinal)).ToList();
        ours.Where(r => r.Target.Contains("/namespaces/wormhole/", StringComparison.Ordinal)).Select(r => $"{r.Method} {r.Target}")
            .Should().BeEmpty("no app changed, so nothing is listed or written in the hub's namespace");
        ours.Select(r => $"{r.Method} {r.Target}").Should().OnlyContain(t => t.Contains("/namespaces/nginx/events", StringComparison.Ordinal), "the Warning Event is all the hub wrote");
    }

    [RootFact]
    public async Task Objects_left_by_an_earlier_version_are_adopted_in_place_and_lose_the_fields_it_set_and_this_one_does_not()
    {
        await using var k = await KubeLab.StartAsync(networkPolicies: true);
        await ExposeNginxAsync(k);
        var service = (await k.Server.GetAsync("svc", Ns, Generated))!;
        var port = service["spec"]!["ports"]![0]!["port"]!.GetValue<int>();
        var targetPort = service["spec"]!["ports"]![0]!["targetPort"]!.GetValue<int>();

        // The upgrade: the earlier version stops, having made its objects with POST and a merge patch, both recorded as
        // Updates by "wormhole-tunnel" (its User-Agent), with a label this version does not set.
        await k.HubProcess.StopAsync();
        await k.Server.KubectlAsync("delete", "svc,networkpolicy", Generated, "-n", Ns);
        var manifest = Path.Combine(k.Lab.WorkDir(k.Lab.Hub), "earlier-version.yaml");
        const string labels = "{wormhole.glothriel.github.com/exposed-by: wormhole, wormhole.glothriel.github.com/exposed-app: nginx-nginx, "
            + "wormhole.glothriel.github.com/exposed-peer: client, wormhole.glothriel.github.com/instance: server, "
            + "app.kubernetes.io/managed-by: wormhole-tunnel, wormhole.glothriel.github.com/earlier: \"yes\"}";
        await File.WriteAllTextAsync(manifest, $$$"""
            apiVersion: v1
            kind: Service
            metadata:
              name: {{{Generated}}}
              namespace: {{{Ns}}}
              labels: {{{labels}}}
            spec:
              type: ClusterIP
              selector: {application: wormhole-server}
              ports: [{protocol: TCP, port: {{{port}}}, targetPort: 25999}]
            ---
            apiVersion: networking.k8s.io/v1
            kind: NetworkPolicy
            metadata:
              name: {{{Generated}}}
              namespace: {{{Ns}}}
              labels: {{{labels}}}
            spec:
              podSelector: {matchLabels: {application: wormhole-server}}
              policyTypes: [Ingress]
              ingress: [{ports: [{protocol: TCP, port: 25999}]}]
            """);
        await k.Server.KubectlAsync("create", "-f", manifest, "--field-manager=wormhole-tunnel");
        await k.Server.KubectlAsync("patch", "svc", Generated, "-n", Ns, "--type=merge", "--field-manager=wormhole-tunnel",
            "-p", $$$"""{"spec":{"ports":[{"protocol":"TCP","port":{{{port}}},"targetPort":{{{targetPort}}}}]}}""");
        var uids = (Service: await UidAsync(k.Server, "svc"), Policy: await UidAsync(k.Server, "networkpolicy"));

        await k.StartHubAsync();

        foreach (var kind in new[] { "svc", "networkpolicy" })
        {
            await TunnelLab.EventuallyAsync(
                async () => await ManagersAsync(k.Server, kind) is ["wormhole-tunnel/Apply"],
                $"the {kind}'s fields are owned by our server-side apply alone");
            var obj = (await k.Server.GetAsync(kind, Ns, Generated))!;
            obj["metadata"]!["labels"]!.AsObject().Select(l => l.Key).Should().NotContain("wormhole.glothriel.github.com/earlier", "only the earlier version set it ({0})", kind);
        }

        (await UidAsync(k.Server, "svc")).Should().Be(uids.Service, "adopted in place: same object, same ClusterIP");
        (await UidAsync(k.Server, "networkpolicy")).Should().Be(uids.Policy);
        (await TrafficThroughAsync(k)).Should().Be("Hello world from the client cluster!");
        k.HubProcess.Output.Should().Contain($"Service {Generated}: the fields written by wormhole-tunnel (an earlier version) are now owned by our server-side apply");
    }

    /// <summary>
    /// From the user's request (<paramref name="userMethod"/> on <paramref name="path"/>, by kubectl) to the first of ours
    /// after it (<paramref name="ourMethod"/> on the same object, by wormhole-tunnel), both as the emulator received them.
    /// </summary>
    private static TimeSpan RepairTime(List<Request> log, string userMethod, string path, string ourMethod)
    {
        var user = log.First(r => r.Method == userMethod && r.Target.StartsWith(path, StringComparison.Ordinal) && r.UserAgent.StartsWith("kubectl", StringComparison.Ordinal));
        var ours = log.First(r => r.Method == ourMethod && r.Target.StartsWith(path, StringComparison.Ordinal) && r.UserAgent.StartsWith("wormhole-tunnel", StringComparison.Ordinal) && r.At >= user.At);
        return ours.At - user.At;
    }

    private static async Task ExposeNginxAsync(KubeLab k)
    {
        await k.Client.KubectlAsync("annotate", "svc", "nginx", "-n", "nginx", "wormhole.glothriel.github.com/exposed=yes");
        await TunnelLab.EventuallyAsync(
            async () => await UidAsync(k.Server, "svc") is not null && (!k.NetworkPolicies || await UidAsync(k.Server, "networkpolicy") is not null),
            "the generated objects exist");
    }

    private static async Task<string?> UidAsync(KubeCluster cluster, string kind) => (string?)(await cluster.GetAsync(kind, Ns, Generated))?["metadata"]!["uid"];

    /// <summary>managedFields of the generated object as "manager/operation".</summary>
    private static async Task<string[]> ManagersAsync(KubeCluster cluster, string kind)
    {
        var result = await cluster.TryKubectlAsync("get", kind, Generated, "-n", Ns, "-o", "json", "--show-managed-fields");
        return result.Succeeded
            ? [.. (JsonNode.Parse(result.StandardOutput)!["metadata"]!["managedFields"]?.AsArray() ?? []).Select(e => $"{(string)e!["manager"]!}/{(string)e["operation"]!}")]
            : [];
    }

    /// <summary>What a generated Service must keep: its labels, type, selector and ports.</summary>
    private static JsonObject Essentials(JsonNode service) => new()
    {
        ["labels"] = service["metadata"]!["labels"]!.DeepClone(),
        ["type"] = service["spec"]!["type"]!.DeepClone(),
        ["selector"] = service["spec"]!["selector"]?.DeepClone(),
        ["ports"] = service["spec"]!["ports"]!.DeepClone(),
    };

    private static async Task<string?> TrafficThroughAsync(KubeLab k)
    {
        var targetPort = (await k.Server.GetAsync("svc", Ns, Generated))!["spec"]!["ports"]![0]!["targetPort"]!.GetValue<int>();
        return await TunnelLab.FetchAsync(k.Lab.Hub, targetPort);
    }

    /// <summary>The emulator's request log from entry <paramref name="from"/> on.</summary>
    private static async Task<List<Request>> RequestsAsync(KubeCluster cluster, int from = 0) =>
        [.. JsonNode.Parse(await cluster.KubectlAsync("get", "--raw", $"/emulator/requests?from={from}"))!.AsArray().Select(r => new Request(
            (string)r!["method"]!, (string)r["target"]!, (string)r["userAgent"]!, DateTimeOffset.Parse((string)r["at"]!, CultureInfo.InvariantCulture)))];

    private sealed record Request(string Method, string Target, string UserAgent, DateTimeOffset At);
}
