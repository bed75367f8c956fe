using System.Text.Json.Nodes;

namespace Wormhole.Tunnel.KubeEmulator.Tests;

/// <summary>
/// Writes aimed at one incarnation of an object (its uid), a Service changing type, and the request log, driven by kubectl
/// as the apiserver answers it.
/// </summary>
public sealed class PreconditionTests
{
    private const string Web = """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
          namespace: default
        spec:
          ports:
          - port: 80
        """;

    private static async Task<(Cluster Cluster, string Uid)> StartWithWebAsync()
    {
        var cluster = await Cluster.StartAsync();
        (await cluster.KubectlWithInputAsync(Web, "apply", "--server-side", "-f", "-")).ShouldSucceed();
        return (cluster, cluster.Emulator.Get("svc", "default", "web")!.Str("metadata.uid")!);
    }

    [KubectlFact]
    public async Task A_delete_with_another_uid_as_precondition_is_a_conflict_and_deletes_nothing()
    {
        var (cluster, uid) = await StartWithWebAsync();
        await using var _ = cluster;
        var body = Path.Combine(cluster.Directory, "delete.json");
        await File.WriteAllTextAsync(body, """{"kind":"DeleteOptions","apiVersion":"v1","preconditions":{"uid":"0b0b0b0b-0000-4000-8000-000000000000"}}""");

        var refused = (await cluster.KubectlAsync("delete", "--raw", "/api/v1/namespaces/default/services/web", "-f", body)).ShouldFail();

        refused.Error.Should().Contain(
            $"Operation cannot be fulfilled on services \"web\": Precondition failed: UID in precondition: 0b0b0b0b-0000-4000-8000-000000000000, UID in object meta: {uid}");
        cluster.Emulator.Get("svc", "default", "web").Should().NotBeNull();

        await File.WriteAllTextAsync(body, $$$"""{"kind":"DeleteOptions","apiVersion":"v1","preconditions":{"uid":"{{{uid}}}"}}""");
        (await cluster.KubectlAsync("delete", "--raw", "/api/v1/namespaces/default/services/web", "-f", body)).ShouldSucceed();
        cluster.Emulator.Get("svc", "default", "web").Should().BeNull();
    }

    [KubectlFact]
    public async Task A_server_side_apply_naming_another_uid_is_refused_as_a_change_of_an_immutable_field()
    {
        var (cluster, uid) = await StartWithWebAsync();
        await using var _ = cluster;
        var before = cluster.Emulator.Get("svc", "default", "web")!.ToJsonString();

        var refused = (await cluster.KubectlWithInputAsync(Web.Replace("  namespace: default", "  namespace: default\n  uid: 0b0b0b0b-0000-4000-8000-000000000000", StringComparison.Ordinal),
            "apply", "--server-side", "--force-conflicts", "-f", "-")).ShouldFail();

        refused.Error.Should().Contain("The Service \"web\" is invalid: metadata.uid: Invalid value: \"0b0b0b0b-0000-4000-8000-000000000000\": field is immutable");
        cluster.Emulator.Get("svc", "default", "web")!.ToJsonString().Should().Be(before);
        (await cluster.KubectlWithInputAsync(Web.Replace("  namespace: default", $"  namespace: default\n  uid: {uid}", StringComparison.Ordinal),
            "apply", "--server-side", "-f", "-")).ShouldSucceed();
    }

    [KubectlFact]
    public async Task A_replace_naming_another_uid_fails_its_precondition()
    {
        var (cluster, uid) = await StartWithWebAsync();
        await using var _ = cluster;

        var refused = (await cluster.KubectlWithInputAsync(Web.Replace("  namespace: default", "  namespace: default\n  uid: 0b0b0b0b-0000-4000-8000-000000000000", StringComparison.Ordinal),
            "replace", "-f", "-")).ShouldFail();

        refused.Error.Should().Contain(
            $"Operation cannot be fulfilled on services \"web\": Precondition failed: UID in precondition: 0b0b0b0b-0000-4000-8000-000000000000, UID in object meta: {uid}");
    }

    [KubectlFact]
    public async Task A_node_port_service_turned_back_into_a_cluster_ip_service_loses_its_node_ports()
    {
        var (cluster, uid) = await StartWithWebAsync();
        await using var _ = cluster;
        (await cluster.KubectlAsync("patch", "svc", "web", "-p", """{"spec":{"type":"NodePort"}}""")).ShouldSucceed();
        var nodePort = cluster.Emulator.Get("svc", "default", "web")!["spec"]!["ports"]![0]!["nodePort"];
        nodePort.Should().NotBeNull();

        (await cluster.KubectlAsync("patch", "svc", "web", "-p", """{"spec":{"type":"ClusterIP"}}""")).ShouldSucceed();

        var svc = cluster.Emulator.Get("svc", "default", "web")!;
        svc.Str("metadata.uid").Should().Be(uid);
        svc["spec"]!["ports"]![0]!.AsObject().Select(p => p.Key).Should().NotContain("nodePort", "the apiserver drops allocated node ports the patch left as they were");
        svc["spec"]!.AsObject().Select(p => p.Key).Should().NotContain("externalTrafficPolicy");

        (await cluster.KubectlAsync("patch", "svc", "web", "-p", """{"spec":{"type":"NodePort"}}""")).ShouldSucceed();
        var changed = (await cluster.KubectlAsync("patch", "svc", "web", "-p", """{"spec":{"type":"ClusterIP","ports":[{"port":80,"nodePort":30999}]}}""")).ShouldFail();
        changed.Error.Should().Contain("spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'", "a node port the patch sets itself is kept, and refused");
    }

    [KubectlFact]
    public async Task The_request_log_lists_every_request_with_its_user_agent()
    {
        await using var cluster = await Cluster.StartAsync();
        (await cluster.KubectlAsync("get", "svc", "-n", "default")).ShouldSucceed();
        var seen = cluster.Emulator.ReceivedRequests.Count;

        var log = JsonNode.Parse((await cluster.KubectlAsync("get", "--raw", $"{KubeEmulator.RequestLogPath}?from={seen}")).ShouldSucceed().Output)!.AsArray();

        log.Select(r => (string)r!["target"]!).Should().Contain(t => t.StartsWith(KubeEmulator.RequestLogPath, StringComparison.Ordinal));
        cluster.Emulator.ReceivedRequests.Take(seen).Should().Contain(r => r.Method == "GET" && r.Target.StartsWith("/api/v1/namespaces/default/services", StringComparison.Ordinal)
            && r.UserAgent.StartsWith("kubectl/", StringComparison.Ordinal));
        log.Should().OnlyContain(r => ((string)r!["userAgent"]!).StartsWith("kubectl/", StringComparison.Ordinal));
    }
}
