using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;

namespace Wormhole.Tunnel.KubeEmulator.Tests;

/// <summary>Server-side apply and managedFields, driven by the real kubectl where it can send the request.</summary>
public sealed class ServerSideApplyTests
{
    private const string Web = """
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
        """;

    private const string Policy = """
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
          - ports:
            - port: 80
        """;

    private static async Task<Cluster> StartWithNamespaceAsync()
    {
        var cluster = await Cluster.StartAsync();
        cluster.Emulator.Apply("""{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"demo"}}""");
        return cluster;
    }

    private static JsonObject Entry(JsonObject obj, string manager) =>
        obj["metadata"]!["managedFields"]!.AsArray().OfType<JsonObject>().Single(e => e.Str("manager") == manager);

    private static async Task<HttpResponseMessage> ApplyAsync(HttpClient http, string path, string body, string query = "?fieldManager=test")
    {
        using var content = new StringContent(body, Encoding.UTF8);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/apply-patch+yaml");
        return await http.PatchAsync(new Uri(path + query, UriKind.Relative), content);
    }

    private static async Task<JsonObject> BodyAsync(HttpResponseMessage response) => (JsonObject)JsonNode.Parse(await response.Content.ReadAsStringAsync())!;

    [KubectlFact]
    public async Task Apply_server_side_creates_the_service_owned_by_kubectl_with_the_apiservers_field_set()
    {
        await using var cluster = await StartWithNamespaceAsync();

        (await cluster.KubectlWithInputAsync(Web, "apply", "--server-side", "-f", "-")).ShouldSucceed().Output.Should().Contain("service/web serverside-applied");

        cluster.Emulator.Requests.Should().Contain(r => r.StartsWith("PATCH /api/v1/namespaces/demo/services/web?", StringComparison.Ordinal)
            && r.Contains("fieldManager=kubectl", StringComparison.Ordinal) && r.Contains("force=false", StringComparison.Ordinal));
        var svc = await cluster.KubectlJsonAsync("get", "svc", "web", "-n", "demo", "--show-managed-fields");
        svc["metadata"]!["managedFields"]!.AsArray().Should().ContainSingle();
        var entry = Entry(svc, "kubectl");
        entry.Str("operation").Should().Be("Apply");
        entry.Str("apiVersion").Should().Be("v1");
        entry.Str("fieldsType").Should().Be("FieldsV1");
        entry.Str("time").Should().MatchRegex(@"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$");
        // Defaulted and allocated fields (protocol, targetPort, type, clusterIP, ...) are in the object but owned by nobody.
        entry["fieldsV1"].ShouldBeJson("""
            {"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:ports":{"k:{\"port\":80,\"protocol\":\"TCP\"}":{".":{},"f:name":{},"f:port":{}}},"f:selector":{}}}
            """);
        svc.Str("spec.type").Should().Be("ClusterIP");
        svc["spec"]!["ports"]![0].ShouldBeJson("""{"name":"http","port":80,"protocol":"TCP","targetPort":80}""");
    }

    [KubectlFact]
    public async Task Get_hides_managed_fields_unless_asked_with_show_managed_fields()
    {
        await using var cluster = await StartWithNamespaceAsync();
        (await cluster.KubectlWithInputAsync(Web, "apply", "--server-side", "-f", "-")).ShouldSucceed();

        var plain = (await cluster.KubectlAsync("get", "svc", "web", "-n", "demo", "-o", "yaml")).ShouldSucceed().Output;
        var shown = (await cluster.KubectlAsync("get", "svc", "web", "-n", "demo", "-o", "yaml", "--show-managed-fields")).ShouldSucceed().Output;

        plain.Should().NotContain("managedFields");
        shown.Should().Contain("managedFields:").And.Contain("manager: kubectl").And.Contain("operation: Apply").And.Contain("f:selector: {}")
            .And.Contain("k:{\"port\":80,\"protocol\":\"TCP\"}:");
    }

    [KubectlFact]
    public async Task Network_policy_lists_and_the_pod_selector_are_owned_whole()
    {
        await using var cluster = await StartWithNamespaceAsync();

        (await cluster.KubectlWithInputAsync(Policy, "apply", "--server-side", "--field-manager=wormhole", "-f", "-")).ShouldSucceed();

        var policy = await cluster.KubectlJsonAsync("get", "netpol", "web", "-n", "demo", "--show-managed-fields");
        Entry(policy, "wormhole")["fieldsV1"].ShouldBeJson("""{"f:spec":{"f:ingress":{},"f:podSelector":{}}}""");
        policy["spec"]!["policyTypes"]!.AsArray().Select(t => t!.GetValue<string>()).Should().Equal("Ingress");
    }

    [KubectlFact]
    public async Task Kubectl_create_and_label_are_recorded_as_updates_by_their_field_managers()
    {
        await using var cluster = await StartWithNamespaceAsync();
        (await cluster.KubectlWithInputAsync(Web, "create", "-f", "-")).ShouldSucceed();

        (await cluster.KubectlAsync("label", "svc", "web", "-n", "demo", "tier=front")).ShouldSucceed();

        var svc = cluster.Emulator.Get("svc", "demo", "web")!;
        var create = Entry(svc, "kubectl-create");
        create.Str("operation").Should().Be("Update");
        // An Update owns what the request set, including what the scheme defaulted in it, and "." for the maps it added.
        create["fieldsV1"].ShouldBeJson("""
            {"f:metadata":{"f:labels":{".":{},"f:app":{}}},"f:spec":{"f:internalTrafficPolicy":{},
             "f:ports":{".":{},"k:{\"port\":80,\"protocol\":\"TCP\"}":{".":{},"f:name":{},"f:port":{},"f:protocol":{},"f:targetPort":{}}},
             "f:selector":{},"f:sessionAffinity":{},"f:type":{}}}
            """);
        Entry(svc, "kubectl-label")["fieldsV1"].ShouldBeJson("""{"f:metadata":{"f:labels":{"f:tier":{}}}}""");
        Entry(svc, "kubectl-label").Str("operation").Should().Be("Update");
    }

    [KubectlFact]
    public async Task Applying_a_field_another_manager_set_differently_conflicts_and_kubectl_prints_the_apiservers_message()
    {
        await using var cluster = await StartWithNamespaceAsync();
        (await cluster.KubectlWithInputAsync(Web, "create", "-f", "-")).ShouldSucceed();
        var before = cluster.Emulator.ResourceVersion;

        var result = (await cluster.KubectlWithInputAsync(Web.Replace("    app: web\n  ports", "    app: api\n  ports", StringComparison.Ordinal),
            "apply", "--server-side", "--field-manager=wormhole", "-f", "-")).ShouldFail();

        result.Error.Should().Contain("Apply failed with 1 conflict: conflict with \"kubectl-create\" using v1: .spec.selector")
            .And.Contain("--force-conflicts");
        cluster.Emulator.ResourceVersion.Should().Be(before);
        cluster.Emulator.Get("svc", "demo", "web")!["spec"]!["selector"].ShouldBeJson("""{"app":"web"}""");
    }

    [KubectlFact]
    public async Task Two_appliers_conflict_and_force_conflicts_takes_the_field_over()
    {
        await using var cluster = await StartWithNamespaceAsync();
        (await cluster.KubectlWithInputAsync(Web, "apply", "--server-side", "--field-manager=alpha", "-f", "-")).ShouldSucceed();
        var changed = Web.Replace("    app: web\n  ports", "    app: api\n  ports", StringComparison.Ordinal);

        var refused = (await cluster.KubectlWithInputAsync(changed, "apply", "--server-side", "--field-manager=beta", "-f", "-")).ShouldFail();
        (await cluster.KubectlWithInputAsync(changed, "apply", "--server-side", "--field-manager=beta", "--force-conflicts", "-f", "-")).ShouldSucceed();

        refused.Error.Should().Contain("Apply failed with 1 conflict: conflict with \"alpha\": .spec.selector");
        var svc = cluster.Emulator.Get("svc", "demo", "web")!;
        svc["spec"]!["selector"].ShouldBeJson("""{"app":"api"}""");
        Entry(svc, "beta")["fieldsV1"]!["f:spec"]!["f:selector"].Should().NotBeNull();
        Entry(svc, "alpha")["fieldsV1"]!["f:spec"]!["f:selector"].Should().BeNull("forcing took the selector away from alpha");
        Entry(svc, "alpha")["fieldsV1"]!["f:metadata"]!["f:labels"]!["f:app"].Should().NotBeNull("the label was applied by both with the same value");
    }

    [KubectlFact]
    public async Task A_field_the_applier_stops_applying_is_removed_unless_another_manager_owns_it()
    {
        await using var cluster = await StartWithNamespaceAsync();
        var labelled = Web.Replace("    app: web\nspec", "    app: web\n    tier: front\n    team: net\nspec", StringComparison.Ordinal);
        (await cluster.KubectlWithInputAsync(labelled, "apply", "--server-side", "-f", "-")).ShouldSucceed();
        // Another applier claims team=net with the same value: shared, so no conflict.
        (await cluster.KubectlWithInputAsync("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: demo\n  labels:\n    team: net\n",
            "apply", "--server-side", "--field-manager=other", "-f", "-")).ShouldSucceed();

        (await cluster.KubectlWithInputAsync(Web, "apply", "--server-side", "-f", "-")).ShouldSucceed();

        var labels = cluster.Emulator.Get("svc", "demo", "web")!["metadata"]!["labels"]!.AsObject();
        labels.Select(p => p.Key).Should().BeEquivalentTo("app", "team");
    }

    [KubectlFact]
    public async Task A_client_side_applied_service_migrates_to_server_side_apply_without_losing_fields()
    {
        await using var cluster = await StartWithNamespaceAsync();
        (await cluster.KubectlWithInputAsync(Web, "apply", "-f", "-")).ShouldSucceed();

        // kubectl applies, hands the client-side manager's fields to its own (a JSON patch of managedFields), then applies again.
        var result = (await cluster.KubectlWithInputAsync(Web, "apply", "--server-side", "-f", "-")).ShouldSucceed();

        result.Error.Should().BeEmpty();
        var svc = cluster.Emulator.Get("svc", "demo", "web")!;
        svc["metadata"]!["managedFields"]!.AsArray().Select(e => e.Str("manager")).Should().BeEquivalentTo("kubectl", "kubectl-last-applied");
        Entry(svc, "kubectl")["fieldsV1"].ShouldBeJson("""
            {"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:ports":{"k:{\"port\":80,\"protocol\":\"TCP\"}":{".":{},"f:name":{},"f:port":{}}},"f:selector":{}}}
            """);
        svc["spec"]!["ports"]![0].ShouldBeJson("""{"name":"http","port":80,"protocol":"TCP","targetPort":80}""");
    }

    [KubectlFact]
    public async Task Dry_run_apply_answers_the_object_and_stores_nothing()
    {
        await using var cluster = await StartWithNamespaceAsync();
        var before = cluster.Emulator.ResourceVersion;

        (await cluster.KubectlWithInputAsync(Web, "apply", "--server-side", "--dry-run=server", "-f", "-")).ShouldSucceed()
            .Output.Should().Contain("service/web serverside-applied (server dry run)");

        cluster.Emulator.Get("svc", "demo", "web").Should().BeNull();
        cluster.Emulator.ResourceVersion.Should().Be(before);
    }

    [KubectlFact]
    public async Task An_unchanged_apply_keeps_the_resourceVersion_and_sends_no_watch_event()
    {
        await using var cluster = await StartWithNamespaceAsync();
        (await cluster.KubectlWithInputAsync(Web, "apply", "--server-side", "-f", "-")).ShouldSucceed();
        var first = cluster.Emulator.Get("svc", "demo", "web")!;
        var version = cluster.Emulator.ResourceVersion;
        using var http = cluster.Emulator.CreateHttpClient();
        await using var watch = await WatchStream.OpenAsync(http, $"/api/v1/namespaces/demo/services?watch=true&resourceVersion={version}");

        (await cluster.KubectlWithInputAsync(Web, "apply", "--server-side", "-f", "-")).ShouldSucceed();
        cluster.Emulator.ResourceVersion.Should().Be(version);
        cluster.Emulator.Get("svc", "demo", "web").ShouldBeJson(first.ToJsonString());
        (await cluster.KubectlAsync("label", "svc", "web", "-n", "demo", "after=yes")).ShouldSucceed();

        // The first event the watch sees is the label, not the unchanged apply.
        var next = await watch.NextChangeAsync();
        next.Str("type").Should().Be("MODIFIED");
        next!["object"]!["metadata"]!["labels"]!["after"]!.GetValue<string>().Should().Be("yes");
    }

    [Fact]
    public async Task Apply_without_a_field_manager_is_refused_as_invalid_patch_options()
    {
        await using var emulator = await KubeEmulator.StartAsync();
        using var http = emulator.CreateHttpClient();

        using var response = await ApplyAsync(http, "/api/v1/namespaces/default/services/web", """{"apiVersion":"v1","kind":"Service","metadata":{"name":"web"}}""", query: "");

        response.StatusCode.Should().Be(HttpStatusCode.UnprocessableEntity);
        var status = await BodyAsync(response);
        status.Str("message").Should().Be("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch");
        status.Str("reason").Should().Be("Invalid");
        status["details"]!["causes"]![0].ShouldBeJson("""{"reason":"FieldValueRequired","message":"Required value: is required for apply patch","field":"fieldManager"}""");
    }

    [Fact]
    public async Task Apply_of_another_kind_than_the_url_names_is_a_bad_request()
    {
        await using var emulator = await KubeEmulator.StartAsync();
        using var http = emulator.CreateHttpClient();

        using var response = await ApplyAsync(http, "/api/v1/namespaces/default/services/web", """{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"web"}}""");

        response.StatusCode.Should().Be(HttpStatusCode.BadRequest);
        (await BodyAsync(response)).Str("message").Should().Be("invalid object type: /v1, Kind=ConfigMap");
        emulator.Get("svc", "default", "web").Should().BeNull();
    }

    [Fact]
    public async Task Apply_with_another_name_than_the_url_is_a_bad_request()
    {
        await using var emulator = await KubeEmulator.StartAsync();
        using var http = emulator.CreateHttpClient();

        using var response = await ApplyAsync(http, "/api/v1/namespaces/default/services/web",
            """{"apiVersion":"v1","kind":"Service","metadata":{"name":"other"},"spec":{"ports":[{"port":80}]}}""");

        response.StatusCode.Should().Be(HttpStatusCode.BadRequest);
        (await BodyAsync(response)).Str("message").Should().Be("the name of the object (other) does not match the name on the URL (web)");
    }

    [Fact]
    public async Task Apply_of_a_yaml_body_creates_with_201_then_a_stale_resourceVersion_conflicts()
    {
        await using var emulator = await KubeEmulator.StartAsync();
        using var http = emulator.CreateHttpClient();
        const string Yaml = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: 80\n";

        using var created = await ApplyAsync(http, "/api/v1/namespaces/default/services/web", Yaml);
        using var again = await ApplyAsync(http, "/api/v1/namespaces/default/services/web", Yaml);
        using var stale = await ApplyAsync(http, "/api/v1/namespaces/default/services/web", Yaml.Replace("  name: web\n", "  name: web\n  resourceVersion: \"1\"\n", StringComparison.Ordinal));

        created.StatusCode.Should().Be(HttpStatusCode.Created);
        again.StatusCode.Should().Be(HttpStatusCode.OK);
        (await BodyAsync(again)).Str("metadata.resourceVersion").Should().Be((await BodyAsync(created)).Str("metadata.resourceVersion"));
        stale.StatusCode.Should().Be(HttpStatusCode.Conflict);
        (await BodyAsync(stale)).Str("message").Should().Be(
            "Operation cannot be fulfilled on services \"web\": the object has been modified; please apply your changes to the latest version and try again");
    }

    [Fact]
    public async Task Apply_that_creates_ignores_a_resourceVersion_in_the_body_as_storage_does()
    {
        await using var emulator = await KubeEmulator.StartAsync();
        using var http = emulator.CreateHttpClient();

        using var response = await ApplyAsync(http, "/api/v1/namespaces/default/services/web",
            """{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","resourceVersion":"12345"},"spec":{"ports":[{"port":80}]}}""");

        response.StatusCode.Should().Be(HttpStatusCode.Created);
        (await BodyAsync(response)).Str("metadata.resourceVersion").Should().Be(emulator.ResourceVersion.ToString(System.Globalization.CultureInfo.InvariantCulture));
    }

    [Fact]
    public async Task Apply_into_a_missing_namespace_is_not_found()
    {
        await using var emulator = await KubeEmulator.StartAsync();
        using var http = emulator.CreateHttpClient();

        using var response = await ApplyAsync(http, "/api/v1/namespaces/nowhere/services/web",
            """{"apiVersion":"v1","kind":"Service","metadata":{"name":"web"},"spec":{"ports":[{"port":80}]}}""");

        response.StatusCode.Should().Be(HttpStatusCode.NotFound);
        (await BodyAsync(response)).Str("message").Should().Be("namespaces \"nowhere\" not found");
    }

    [Fact]
    public async Task Apply_of_an_undeclared_field_fails_the_typed_conversion_as_the_apiserver_does()
    {
        await using var emulator = await KubeEmulator.StartAsync();
        using var http = emulator.CreateHttpClient();

        using var response = await ApplyAsync(http, "/api/v1/namespaces/default/services/web",
            """{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"default"},"spec":{"ports":[{"port":80}],"topologyKeys":["x"]}}""",
            "?fieldManager=test&fieldValidation=Ignore");

        response.StatusCode.Should().Be(HttpStatusCode.InternalServerError);
        var status = await BodyAsync(response);
        status.Str("message").Should().Be("failed to create typed patch object (default/web; /v1, Kind=Service): .spec.topologyKeys: field not declared in schema");
        status["reason"].Should().BeNull();
    }

    [Fact]
    public async Task Apply_of_a_port_without_its_key_fails_the_typed_conversion()
    {
        await using var emulator = await KubeEmulator.StartAsync();
        using var http = emulator.CreateHttpClient();

        using var response = await ApplyAsync(http, "/api/v1/namespaces/default/services/web",
            """{"apiVersion":"v1","kind":"Service","metadata":{"name":"web"},"spec":{"ports":[{"name":"http","targetPort":8080}]}}""");

        response.StatusCode.Should().Be(HttpStatusCode.InternalServerError);
        (await BodyAsync(response)).Str("message").Should().Be("failed to create typed patch object (/web; /v1, Kind=Service): .spec.ports: element 0: "
            + "associative list with keys has an element that omits key field \"port\" (and doesn't have default value)");
    }

    [Fact]
    public async Task Force_on_a_patch_that_is_not_an_apply_is_refused()
    {
        await using var emulator = await KubeEmulator.StartAsync();
        using var http = emulator.CreateHttpClient();
        using var content = new StringContent("""{"metadata":{"labels":{"a":"b"}}}""", Encoding.UTF8);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/merge-patch+json");

        using var response = await http.PatchAsync(new Uri("/api/v1/namespaces/default/services/kubernetes?force=true", UriKind.Relative), content);

        response.StatusCode.Should().Be(HttpStatusCode.UnprocessableEntity);
        (await BodyAsync(response)).Str("message").Should().Be("PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch");
        emulator.Get("svc", "default", "kubernetes")!["metadata"]!["labels"]!["a"].Should().BeNull();
    }

    [Fact]
    public async Task A_conflict_answers_409_with_one_cause_per_field_and_force_takes_them()
    {
        await using var emulator = await KubeEmulator.StartAsync();
        emulator.Apply(JsonNode.Parse("""
            {"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"default","labels":{"app":"web"}},"spec":{"selector":{"app":"web"},"ports":[{"port":80}]}}
            """)!.AsObject(), "operator");
        using var http = emulator.CreateHttpClient();
        const string Config = """{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","labels":{"app":"api"}},"spec":{"selector":{"app":"api"},"ports":[{"port":80,"targetPort":8080}]}}""";

        using var refused = await ApplyAsync(http, "/api/v1/namespaces/default/services/web", Config, "?fieldManager=wormhole");
        using var forced = await ApplyAsync(http, "/api/v1/namespaces/default/services/web", Config, "?fieldManager=wormhole&force=true");

        refused.StatusCode.Should().Be(HttpStatusCode.Conflict);
        var status = await BodyAsync(refused);
        status.Str("reason").Should().Be("Conflict");
        status.Str("message").Should().Be("Apply failed with 3 conflicts: conflicts with \"operator\" using v1:\n- .metadata.labels.app\n- .spec.selector\n"
            + "- .spec.ports[port=80,protocol=\"TCP\"].targetPort");
        status["details"].ShouldBeJson("""
            {"causes":[
              {"type":"FieldManagerConflict","message":"conflict with \"operator\" using v1","field":".metadata.labels.app"},
              {"type":"FieldManagerConflict","message":"conflict with \"operator\" using v1","field":".spec.selector"},
              {"type":"FieldManagerConflict","message":"conflict with \"operator\" using v1","field":".spec.ports[port=80,protocol=\"TCP\"].targetPort"}]}
            """);
        forced.StatusCode.Should().Be(HttpStatusCode.OK);
        var svc = await BodyAsync(forced);
        svc["spec"]!["ports"]![0]!["targetPort"]!.GetValue<int>().Should().Be(8080);
        // operator keeps the labels map it created ("." alone is written as {}), loses what wormhole took.
        Entry(svc, "operator")["fieldsV1"].ShouldBeJson("""
            {"f:metadata":{"f:labels":{}},"f:spec":{"f:internalTrafficPolicy":{},"f:ports":{".":{},"k:{\"port\":80,\"protocol\":\"TCP\"}":{".":{},"f:port":{},"f:protocol":{}}},"f:sessionAffinity":{},"f:type":{}}}
            """);
    }

    [Fact]
    public async Task Writes_without_a_field_manager_are_recorded_under_the_user_agent_prefix()
    {
        await using var emulator = await KubeEmulator.StartAsync();
        using var http = emulator.CreateHttpClient();
        http.DefaultRequestHeaders.UserAgent.ParseAdd("wormhole-tunnel/1.0");
        using var content = new StringContent("""{"apiVersion":"v1","kind":"Service","metadata":{"name":"web"},"spec":{"ports":[{"port":80}]}}""", Encoding.UTF8, "application/json");

        using var response = await http.PostAsync(new Uri("/api/v1/namespaces/default/services", UriKind.Relative), content);

        response.StatusCode.Should().Be(HttpStatusCode.Created);
        var entry = Entry(emulator.Get("svc", "default", "web")!, "wormhole-tunnel");
        entry.Str("operation").Should().Be("Update");
    }
}
