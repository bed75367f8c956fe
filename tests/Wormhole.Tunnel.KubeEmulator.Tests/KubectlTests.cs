using System.Text.Json.Nodes;

namespace Wormhole.Tunnel.KubeEmulator.Tests;

/// <summary>The emulator driven by the real kubectl, the way a user works with a cluster.</summary>
public sealed class KubectlTests
{
    internal const string WebApp = """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
          namespace: demo
          labels:
            app: web
        spec:
          selector:
            app: web
          ports:
          - name: http
            port: 80
          - name: https
            port: 443
            targetPort: 8443
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: web
          namespace: demo
        spec:
          podSelector:
            matchLabels:
              app: web
          ingress:
          - from:
            - podSelector:
                matchLabels:
                  role: client
            ports:
            - port: 80
        """;

    [KubectlFact]
    public async Task Create_namespace_then_get_shows_it_Active()
    {
        await using var cluster = await Cluster.StartAsync();

        (await cluster.KubectlAsync("create", "namespace", "demo")).ShouldSucceed().Output.Should().Contain("namespace/demo created");

        var table = (await cluster.KubectlAsync("get", "namespaces")).ShouldSucceed().Output;
        table.Should().MatchRegex(@"NAME\s+STATUS\s+AGE").And.MatchRegex(@"\ndemo\s+Active\s+\d+s").And.Contain("default").And.Contain("kube-system");
        var ns = await cluster.KubectlJsonAsync("get", "namespace", "demo");
        ns["metadata"]!["labels"]!["kubernetes.io/metadata.name"]!.GetValue<string>().Should().Be("demo");
    }

    [KubectlFact]
    public async Task Apply_of_multi_document_yaml_creates_a_service_and_a_network_policy_shown_by_get()
    {
        await using var cluster = await Cluster.StartAsync();
        await cluster.KubectlAsync("create", "namespace", "demo");

        var applied = (await cluster.KubectlWithInputAsync(WebApp, "apply", "-f", "-")).ShouldSucceed().Output;

        applied.Should().Contain("service/web created").And.Contain("networkpolicy.networking.k8s.io/web created");
        var services = (await cluster.KubectlAsync("get", "svc", "-n", "demo")).ShouldSucceed().Output;
        services.Should().MatchRegex(@"NAME\s+TYPE\s+CLUSTER-IP\s+EXTERNAL-IP\s+PORT\(S\)\s+AGE")
            .And.MatchRegex(@"\nweb\s+ClusterIP\s+10\.96\.\d+\.\d+\s+<none>\s+80/TCP,443/TCP\s+\d+s");
        (await cluster.KubectlAsync("get", "netpol", "-n", "demo")).ShouldSucceed().Output.Should().MatchRegex(@"\nweb\s+app=web\s+\d+s");
    }

    [KubectlFact]
    public async Task Apply_creates_a_namespace_and_what_follows_it_using_server_side_validation_without_openapi_v2()
    {
        await using var cluster = await Cluster.StartAsync();
        var yaml = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n---\n" + WebApp;

        var result = (await cluster.KubectlWithInputAsync(yaml, "apply", "-f", "-")).ShouldSucceed();

        result.Output.Should().Contain("namespace/demo created").And.Contain("service/web created").And.Contain("networkpolicy.networking.k8s.io/web created");
        result.Error.Should().BeEmpty();
        cluster.Emulator.Requests.Should().Contain(r => r.StartsWith("POST /api/v1/namespaces/demo/services?", StringComparison.Ordinal) && r.Contains("fieldValidation=Strict", StringComparison.Ordinal))
            .And.NotContain(r => r.StartsWith("GET /openapi/v2", StringComparison.Ordinal));
        (await cluster.KubectlWithInputAsync(yaml, "apply", "-f", "-")).ShouldSucceed().Output.Should().Contain("namespace/demo unchanged");
    }

    [KubectlFact]
    public async Task Get_events_prints_the_event_columns()
    {
        await using var cluster = await Cluster.StartAsync();
        cluster.Emulator.Apply("""
            {"kind":"Event","apiVersion":"v1","metadata":{"name":"web.1","namespace":"default"},"involvedObject":{"kind":"Service","name":"web","namespace":"default"},
             "reason":"Exposed","message":"exposed over the tunnel","type":"Normal","count":1}
            """);

        var output = (await cluster.KubectlAsync("get", "events")).ShouldSucceed().Output;

        output.Should().MatchRegex(@"LAST SEEN\s+TYPE\s+REASON\s+OBJECT\s+MESSAGE").And.MatchRegex(@"Normal\s+Exposed\s+service/web\s+exposed over the tunnel");
    }

    [KubectlFact]
    public async Task Get_as_json_shows_the_fields_the_apiserver_defaults()
    {
        await using var cluster = await Cluster.StartAsync();
        await cluster.KubectlAsync("create", "namespace", "demo");
        (await cluster.KubectlWithInputAsync(WebApp, "apply", "-f", "-")).ShouldSucceed();

        var svc = await cluster.KubectlJsonAsync("get", "svc", "web", "-n", "demo");
        var policy = await cluster.KubectlJsonAsync("get", "networkpolicy", "web", "-n", "demo");

        svc.Str("spec.type").Should().Be("ClusterIP");
        svc.Str("spec.clusterIP").Should().MatchRegex(@"^10\.96\.\d+\.\d+$");
        svc["spec"]!["clusterIPs"]!.AsArray().Should().ContainSingle().Which!.GetValue<string>().Should().Be(svc.Str("spec.clusterIP"));
        var ports = svc["spec"]!["ports"]!.AsArray();
        ports.Select(p => p!["protocol"]!.GetValue<string>()).Should().Equal("TCP", "TCP");
        ports.Select(p => p!["targetPort"]!.GetValue<int>()).Should().Equal(80, 8443);
        svc.Str("metadata.uid").Should().NotBeNullOrEmpty();
        svc.Str("metadata.resourceVersion").Should().MatchRegex(@"^\d+$");
        svc.Str("metadata.creationTimestamp").Should().MatchRegex(@"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$");
        policy["spec"]!["policyTypes"]!.AsArray().Select(t => t!.GetValue<string>()).Should().Equal("Ingress");
        policy["spec"]!["ingress"]![0]!["ports"]![0]!["protocol"]!.GetValue<string>().Should().Be("TCP");
        policy["metadata"]!["generation"]!.GetValue<long>().Should().Be(1);
    }

    [KubectlFact]
    public async Task Reapplying_unchanged_yaml_reports_unchanged_and_keeps_the_resourceVersion()
    {
        await using var cluster = await Cluster.StartAsync();
        await cluster.KubectlAsync("create", "namespace", "demo");
        var service = WebApp.Split("---")[0];
        (await cluster.KubectlWithInputAsync(service, "apply", "-f", "-")).ShouldSucceed();
        var before = cluster.Emulator.ResourceVersion;

        (await cluster.KubectlWithInputAsync(service, "apply", "-f", "-")).ShouldSucceed().Output.Should().Contain("service/web unchanged");

        cluster.Emulator.ResourceVersion.Should().Be(before);
    }

    [KubectlFact]
    public async Task Apply_of_a_changed_port_list_merges_ports_by_number_and_drops_removed_ones()
    {
        await using var cluster = await Cluster.StartAsync();
        await cluster.KubectlAsync("create", "namespace", "demo");
        (await cluster.KubectlWithInputAsync(WebApp, "apply", "-f", "-")).ShouldSucceed();
        var changed = WebApp.Split("---")[0].Replace("  - name: http\n    port: 80\n", "", StringComparison.Ordinal).Replace("8443", "9443", StringComparison.Ordinal);

        (await cluster.KubectlWithInputAsync(changed, "apply", "-f", "-")).ShouldSucceed().Output.Should().Contain("service/web configured");

        var ports = (await cluster.KubectlJsonAsync("get", "svc", "web", "-n", "demo"))["spec"]!["ports"]!.AsArray();
        ports.Should().ContainSingle();
        ports[0].ShouldBeJson("""{"name":"https","port":443,"protocol":"TCP","targetPort":9443}""");
    }

    [KubectlFact]
    public async Task Annotate_and_label_add_and_remove_keys()
    {
        await using var cluster = await Cluster.StartAsync();

        (await cluster.KubectlAsync("annotate", "svc", "kubernetes", "example.com/owner=team-a")).ShouldSucceed().Output.Should().Contain("service/kubernetes annotated");
        (await cluster.KubectlAsync("label", "svc", "kubernetes", "tier=control")).ShouldSucceed().Output.Should().Contain("service/kubernetes labeled");
        var annotated = cluster.Emulator.Get("svc", "default", "kubernetes")!;
        annotated["metadata"]!["annotations"]!["example.com/owner"]!.GetValue<string>().Should().Be("team-a");
        annotated["metadata"]!["labels"]!["tier"]!.GetValue<string>().Should().Be("control");

        (await cluster.KubectlAsync("annotate", "svc", "kubernetes", "example.com/owner-")).ShouldSucceed();
        (await cluster.KubectlAsync("label", "svc", "kubernetes", "tier-")).ShouldSucceed().Output.Should().Contain("unlabeled");

        var cleared = cluster.Emulator.Get("svc", "default", "kubernetes")!;
        cleared["metadata"]!["annotations"].Should().BeNull();
        cleared["metadata"]!["labels"]!.AsObject().Select(p => p.Key).Should().BeEquivalentTo("component", "provider");
    }

    [KubectlFact]
    public async Task Label_selectors_filter_get()
    {
        await using var cluster = await Cluster.StartAsync();
        cluster.Emulator.Seed(
            """{"kind":"Service","apiVersion":"v1","metadata":{"name":"a","labels":{"tier":"web"}},"spec":{"ports":[{"port":80}]}}""",
            """{"kind":"Service","apiVersion":"v1","metadata":{"name":"b","labels":{"tier":"db"}},"spec":{"ports":[{"port":5432}]}}""");

        var output = (await cluster.KubectlAsync("get", "svc", "-l", "tier in (web,cache),tier!=db", "-o", "name")).ShouldSucceed().Output;

        output.Trim().Should().Be("service/a");
    }

    [KubectlFact]
    public async Task Delete_service_removes_it()
    {
        await using var cluster = await Cluster.StartAsync();
        cluster.Emulator.Apply("""{"kind":"Service","apiVersion":"v1","metadata":{"name":"gone"},"spec":{"ports":[{"port":80}]}}""");

        (await cluster.KubectlAsync("delete", "svc", "gone")).ShouldSucceed().Output.Should().Contain("service \"gone\" deleted");

        cluster.Emulator.Get("services", "default", "gone").Should().BeNull();
        (await cluster.KubectlAsync("get", "svc", "gone")).ShouldFail().Error.Should().Contain("Error from server (NotFound): services \"gone\" not found");
    }

    [KubectlFact]
    public async Task Delete_namespace_deletes_the_objects_inside_it()
    {
        await using var cluster = await Cluster.StartAsync();
        await cluster.KubectlAsync("create", "namespace", "demo");
        (await cluster.KubectlWithInputAsync(WebApp, "apply", "-f", "-")).ShouldSucceed();

        (await cluster.KubectlAsync("delete", "namespace", "demo")).ShouldSucceed().Output.Should().Contain("namespace \"demo\" deleted");

        cluster.Emulator.Get("namespaces", null, "demo").Should().BeNull();
        cluster.Emulator.List("services", "demo").Should().BeEmpty();
        cluster.Emulator.List("networkpolicies", "demo").Should().BeEmpty();
        (await cluster.KubectlAsync("get", "svc", "-n", "demo")).ShouldSucceed().Error.Should().Contain("No resources found in demo namespace.");
    }

    [KubectlFact]
    public async Task Create_service_sends_protobuf_which_is_decoded_like_json()
    {
        await using var cluster = await Cluster.StartAsync();

        (await cluster.KubectlAsync("create", "service", "nodeport", "edge", "--tcp=80:8080")).ShouldSucceed();

        var svc = cluster.Emulator.Get("svc", "default", "edge")!;
        svc.Str("spec.type").Should().Be("NodePort");
        svc["spec"]!["ports"]![0].ShouldBeJson("""{"name":"80-8080","nodePort":30000,"port":80,"protocol":"TCP","targetPort":8080}""");
        svc["metadata"]!["labels"]!["app"]!.GetValue<string>().Should().Be("edge");
        svc["spec"]!["publishNotReadyAddresses"].Should().BeNull("false is the unset value of a Go bool");
    }

    [KubectlFact]
    public async Task Server_dry_run_validates_without_storing()
    {
        await using var cluster = await Cluster.StartAsync();
        var before = cluster.Emulator.ResourceVersion;

        (await cluster.KubectlAsync("create", "namespace", "dry", "--dry-run=server")).ShouldSucceed();

        cluster.Emulator.Get("ns", null, "dry").Should().BeNull();
        cluster.Emulator.ResourceVersion.Should().Be(before);
    }
}

internal static class JsonTestExtensions
{
    /// <summary>The string at a dotted path, or null.</summary>
    public static string? Str(this JsonNode? node, string path)
    {
        foreach (var part in path.Split('.'))
        {
            node = node is JsonObject o ? o[part] : null;
        }

        return node is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
    }

    /// <summary>Asserts JSON equality regardless of member order.</summary>
    public static void ShouldBeJson(this JsonNode? node, string expected) =>
        JsonNode.DeepEquals(node, JsonNode.Parse(expected)).Should().BeTrue("{0} should equal {1}", node?.ToJsonString(), expected);
}
