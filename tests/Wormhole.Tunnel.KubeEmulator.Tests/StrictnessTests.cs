using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;

namespace Wormhole.Tunnel.KubeEmulator.Tests;

/// <summary>What the apiserver refuses, refused the same way: status codes, Status bodies, and kubectl's messages.</summary>
public sealed class StrictnessTests
{
    private static string Service(string name, string extraMetadata = "") => $"""
        apiVersion: v1
        kind: Service
        metadata:
          name: {name}{extraMetadata}
        spec:
          ports:
          - port: 80
        """;

    [KubectlFact]
    public async Task Apply_of_a_service_named_1bad_fails_with_the_apiservers_Invalid_value_message()
    {
        await using var cluster = await Cluster.StartAsync();

        var result = (await cluster.KubectlWithInputAsync(Service("1bad"), "apply", "-f", "-")).ShouldFail();

        result.Error.Should().Contain("The Service \"1bad\" is invalid: metadata.name: Invalid value: \"1bad\": a DNS-1035 label must consist of lower case alphanumeric characters");
        cluster.Emulator.Get("svc", "default", "1bad").Should().BeNull();
    }

    [KubectlFact]
    public async Task Apply_of_a_service_with_a_64_character_name_fails()
    {
        await using var cluster = await Cluster.StartAsync();
        var name = new string('a', 64);

        var result = (await cluster.KubectlWithInputAsync(Service(name), "apply", "-f", "-")).ShouldFail();

        result.Error.Should().Contain($"metadata.name: Invalid value: \"{name}\": must be no more than 63 characters");
    }

    [KubectlFact]
    public async Task A_63_character_service_name_is_accepted()
    {
        await using var cluster = await Cluster.StartAsync();

        (await cluster.KubectlWithInputAsync(Service(new string('a', 63)), "apply", "-f", "-")).ShouldSucceed();
    }

    [KubectlFact]
    public async Task Apply_of_a_label_value_longer_than_63_characters_fails_on_the_server()
    {
        await using var cluster = await Cluster.StartAsync();
        var value = new string('v', 64);

        var result = (await cluster.KubectlWithInputAsync(Service("web", $"\n  labels:\n    app: {value}"), "apply", "-f", "-")).ShouldFail();

        result.Error.Should().Contain($"metadata.labels: Invalid value: \"{value}\": must be no more than 63 characters");
    }

    [KubectlFact]
    public async Task Kubectl_label_rejects_a_value_longer_than_63_characters()
    {
        await using var cluster = await Cluster.StartAsync();

        (await cluster.KubectlAsync("label", "svc", "kubernetes", "app=" + new string('v', 64))).ShouldFail().Error.Should().Contain("must be no more than 63 characters");
    }

    [KubectlFact]
    public async Task Creating_an_existing_namespace_reports_AlreadyExists()
    {
        await using var cluster = await Cluster.StartAsync();
        (await cluster.KubectlAsync("create", "namespace", "demo")).ShouldSucceed();

        (await cluster.KubectlAsync("create", "namespace", "demo")).ShouldFail().Error.Should().Contain("Error from server (AlreadyExists): namespaces \"demo\" already exists");
    }

    [KubectlFact]
    public async Task Apply_with_an_unknown_field_fails_under_kubectls_strict_field_validation()
    {
        await using var cluster = await Cluster.StartAsync();
        var yaml = Service("web").Replace("  - port: 80", "  - port: 80\n    bogus: 1", StringComparison.Ordinal);

        var result = (await cluster.KubectlWithInputAsync(yaml, "apply", "-f", "-")).ShouldFail();

        result.Error.Should().Contain("strict decoding error: unknown field \"spec.ports[0].bogus\"");
    }

    [KubectlFact]
    public async Task Apply_into_a_missing_namespace_reports_NotFound()
    {
        await using var cluster = await Cluster.StartAsync();

        (await cluster.KubectlWithInputAsync(Service("web"), "apply", "-n", "nowhere", "-f", "-")).ShouldFail()
            .Error.Should().Contain("namespaces \"nowhere\" not found");
    }

    [KubectlFact]
    public async Task Deleting_the_default_namespace_is_forbidden()
    {
        await using var cluster = await Cluster.StartAsync();

        (await cluster.KubectlAsync("delete", "namespace", "default")).ShouldFail()
            .Error.Should().Contain("Error from server (Forbidden): namespaces \"default\" is forbidden: this namespace may not be deleted");
    }

    [Fact]
    public async Task A_request_without_the_token_gets_401_with_an_Unauthorized_Status()
    {
        await using var emulator = await KubeEmulator.StartAsync();
        using var anonymous = emulator.CreateHttpClient(authenticated: false);
        using var wrong = emulator.CreateHttpClient(authenticated: false);
        wrong.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "not-the-token");

        foreach (var client in new[] { anonymous, wrong })
        {
            using var response = await client.GetAsync(new Uri("/api/v1/namespaces", UriKind.Relative));
            response.StatusCode.Should().Be(HttpStatusCode.Unauthorized);
            (await response.Content.ReadAsStringAsync()).Should().Be("""{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}""");
        }
    }

    [Fact]
    public async Task A_put_with_a_stale_resourceVersion_is_rejected_with_409_Conflict()
    {
        await using var emulator = await KubeEmulator.StartAsync();
        using var client = emulator.CreateHttpClient();
        var svc = emulator.Get("svc", "default", "kubernetes")!;
        var stale = svc.Str("metadata.resourceVersion");
        emulator.Apply(WithLabel(svc, "touched", "yes"));

        using var response = await client.PutAsync(new Uri("/api/v1/namespaces/default/services/kubernetes", UriKind.Relative), Json(WithLabel(svc, "mine", "yes")));

        response.StatusCode.Should().Be(HttpStatusCode.Conflict);
        var status = await ReadAsync(response);
        status.Str("reason").Should().Be("Conflict");
        status.Str("message").Should().Be("Operation cannot be fulfilled on services \"kubernetes\": the object has been modified; please apply your changes to the latest version and try again");
        status["details"].ShouldBeJson("""{"name":"kubernetes","kind":"services"}""");
        svc.Str("metadata.resourceVersion").Should().Be(stale);
    }

    [Fact]
    public async Task A_put_with_the_current_resourceVersion_succeeds_and_bumps_it()
    {
        await using var emulator = await KubeEmulator.StartAsync();
        using var client = emulator.CreateHttpClient();
        var svc = emulator.Get("svc", "default", "kubernetes")!;

        using var response = await client.PutAsync(new Uri("/api/v1/namespaces/default/services/kubernetes", UriKind.Relative), Json(WithLabel(svc, "mine", "yes")));

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        var updated = await ReadAsync(response);
        long.Parse(updated.Str("metadata.resourceVersion")!).Should().Be(emulator.ResourceVersion).And.BeGreaterThan(long.Parse(svc.Str("metadata.resourceVersion")!));
        updated.Str("spec.clusterIP").Should().Be("10.96.0.1");
    }

    [Fact]
    public async Task A_put_of_a_missing_object_is_404_and_a_put_with_another_name_is_400()
    {
        await using var emulator = await KubeEmulator.StartAsync();
        using var client = emulator.CreateHttpClient();
        var svc = emulator.Get("svc", "default", "kubernetes")!;

        using var missing = await client.PutAsync(new Uri("/api/v1/namespaces/default/services/other", UriKind.Relative), Json(Renamed(svc, "other")));
        using var mismatch = await client.PutAsync(new Uri("/api/v1/namespaces/default/services/kubernetes", UriKind.Relative), Json(Renamed(svc, "other")));

        missing.StatusCode.Should().Be(HttpStatusCode.NotFound);
        (await ReadAsync(missing)).Str("message").Should().Be("services \"other\" not found");
        mismatch.StatusCode.Should().Be(HttpStatusCode.BadRequest);
        (await ReadAsync(mismatch)).Str("message").Should().Be("the name of the object (other) does not match the name on the URL (kubernetes)");
    }

    [Fact]
    public async Task A_merge_patch_with_a_too_long_label_value_is_422_with_a_cause_per_field()
    {
        await using var emulator = await KubeEmulator.StartAsync();
        using var client = emulator.CreateHttpClient();
        using var patch = new StringContent("""{"metadata":{"labels":{"ok":"yes","app":"VALUE"}}}""".Replace("VALUE", new string('v', 64), StringComparison.Ordinal), Encoding.UTF8, "application/merge-patch+json");

        using var response = await client.PatchAsync(new Uri("/api/v1/namespaces/default/services/kubernetes", UriKind.Relative), patch);

        response.StatusCode.Should().Be(HttpStatusCode.UnprocessableEntity);
        var status = await ReadAsync(response);
        status.Str("reason").Should().Be("Invalid");
        status["details"]!["causes"]!.AsArray().Should().ContainSingle().Which.ShouldBeJson(
            $$"""{"reason":"FieldValueInvalid","message":"Invalid value: \"{{new string('v', 64)}}\": must be no more than 63 characters","field":"metadata.labels"}""");
        emulator.Get("svc", "default", "kubernetes")!["metadata"]!["labels"]!["ok"].Should().BeNull("a rejected patch changes nothing");
    }

    [Fact]
    public async Task Json_patch_operations_apply_in_order_and_a_failed_test_rejects_the_patch()
    {
        await using var emulator = await KubeEmulator.StartAsync();
        using var client = emulator.CreateHttpClient();
        var uri = new Uri("/api/v1/namespaces/default/services/kubernetes", UriKind.Relative);
        using var good = new StringContent("""[{"op":"test","path":"/spec/ports/0/port","value":443},{"op":"add","path":"/metadata/annotations","value":{"a/b":"c"}},{"op":"replace","path":"/spec/ports/0/name","value":"api"}]""", Encoding.UTF8, "application/json-patch+json");
        using var bad = new StringContent("""[{"op":"test","path":"/spec/ports/0/port","value":80},{"op":"remove","path":"/metadata/labels"}]""", Encoding.UTF8, "application/json-patch+json");

        using var applied = await client.PatchAsync(uri, good);
        using var rejected = await client.PatchAsync(uri, bad);

        applied.StatusCode.Should().Be(HttpStatusCode.OK);
        var svc = emulator.Get("svc", "default", "kubernetes")!;
        svc["metadata"]!["annotations"].ShouldBeJson("""{"a/b":"c"}""");
        svc.Str("spec.ports.0.name").Should().BeNull("ports is a list; checked below");
        svc["spec"]!["ports"]![0]!["name"]!.GetValue<string>().Should().Be("api");
        rejected.StatusCode.Should().Be(HttpStatusCode.UnprocessableEntity);
        svc["metadata"]!["labels"].Should().NotBeNull();
    }

    [Theory]
    [InlineData("""[{"port":80,"name":"a"},{"port":81,"name":"a"}]""", "spec.ports[1].name", "Duplicate value: \"a\"")]
    [InlineData("""[{"port":80},{"port":81,"name":"b"}]""", "spec.ports[0].name", "Required value")]
    [InlineData("""[{"port":0}]""", "spec.ports[0].port", "Invalid value: 0: must be between 1 and 65535, inclusive")]
    [InlineData("""[{"port":80,"protocol":"ICMP"}]""", "spec.ports[0].protocol", "Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"")]
    [InlineData("""[{"port":80,"targetPort":70000}]""", "spec.ports[0].targetPort", "Invalid value: 70000: must be between 1 and 65535, inclusive")]
    [InlineData("""[{"port":80,"targetPort":"Web_Port"}]""", "spec.ports[0].targetPort", "Invalid value: \"Web_Port\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")]
    [InlineData("""[{"port":80,"name":"Http"}]""", "spec.ports[0].name", "Invalid value: \"Http\": a lowercase RFC 1123 label must consist of")]
    [InlineData("[]", "spec.ports", "Required value")]
    public async Task Service_port_rules_are_those_of_the_apiserver(string ports, string field, string message)
    {
        await using var emulator = await KubeEmulator.StartAsync();

        var act = () => emulator.Apply($$$"""{"kind":"Service","apiVersion":"v1","metadata":{"name":"web"},"spec":{"ports":{{{ports}}}}}""");

        var error = act.Should().Throw<KubeApiException>().Which;
        error.Code.Should().Be(422);
        error.Details!["causes"]!.AsArray().Should().Contain(c => c!["field"]!.GetValue<string>() == field && c["message"]!.GetValue<string>().StartsWith(message, StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("""{"ingress":[{}]}""", "spec.podSelector")]
    [InlineData("""{"podSelector":{"matchExpressions":[{"key":"app","operator":"In"}]}}""", "spec.podSelector.matchExpressions[0].values")]
    [InlineData("""{"podSelector":{},"ingress":[{"ports":[{"port":80,"protocol":"ICMP"}]}]}""", "spec.ingress[0].ports[0].protocol")]
    [InlineData("""{"podSelector":{},"ingress":[{"from":[{"ipBlock":{"cidr":"10.0.0.0/33"}}]}]}""", "spec.ingress[0].from[0].ipBlock.cidr")]
    [InlineData("""{"podSelector":{},"policyTypes":["Sideways"]}""", "spec.policyTypes[0]")]
    public async Task Network_policy_rules_are_enforced(string spec, string field)
    {
        await using var emulator = await KubeEmulator.StartAsync();

        var act = () => emulator.Apply($$"""{"kind":"NetworkPolicy","apiVersion":"networking.k8s.io/v1","metadata":{"name":"p"},"spec":{{spec}}}""");

        act.Should().Throw<KubeApiException>().Which.Details!["causes"]!.AsArray().Select(c => c!["field"]!.GetValue<string>()).Should().Contain(field);
    }

    [Theory]
    [InlineData("Namespace", "v1", "Has_Upper", "")]
    [InlineData("Namespace", "v1", "dots.are.not.labels", "")]
    [InlineData("NetworkPolicy", "networking.k8s.io/v1", "-leading-dash", ""","spec":{"podSelector":{}}""")]
    [InlineData("Event", "v1", "UPPER", ""","involvedObject":{"kind":"Service","name":"web"}""")]
    public async Task Names_follow_the_dns_rule_of_their_resource(string kind, string apiVersion, string name, string rest)
    {
        await using var emulator = await KubeEmulator.StartAsync();

        var act = () => emulator.Apply($$"""{"kind":"{{kind}}","apiVersion":"{{apiVersion}}","metadata":{"name":"{{name}}"}{{rest}}}""");

        act.Should().Throw<KubeApiException>().Which.Details!["causes"]![0]!["field"]!.GetValue<string>().Should().Be("metadata.name");
    }

    [Fact]
    public async Task Annotation_keys_are_qualified_names_and_all_annotations_fit_in_256_KiB()
    {
        await using var emulator = await KubeEmulator.StartAsync();

        var badKey = () => emulator.Apply("""{"kind":"Namespace","apiVersion":"v1","metadata":{"name":"n","annotations":{"a/b/c":"x"}}}""");
        var tooBig = () => emulator.Apply("""{"kind":"Namespace","apiVersion":"v1","metadata":{"name":"n","annotations":{"big":"VALUE"}}}""".Replace("VALUE", new string('x', 256 * 1024), StringComparison.Ordinal));

        badKey.Should().Throw<KubeApiException>().Which.Message.Should().Contain("metadata.annotations: Invalid value: \"a/b/c\": a qualified name must consist of");
        tooBig.Should().Throw<KubeApiException>().Which.Message.Should().Contain("metadata.annotations: Too long");
    }

    [Fact]
    public async Task Creating_with_a_resourceVersion_is_refused_like_the_apiserver()
    {
        await using var emulator = await KubeEmulator.StartAsync();
        using var client = emulator.CreateHttpClient();

        using var response = await client.PostAsync(new Uri("/api/v1/namespaces", UriKind.Relative), Json(JsonNode.Parse("""{"kind":"Namespace","apiVersion":"v1","metadata":{"name":"n","resourceVersion":"5"}}""")!));

        response.StatusCode.Should().Be(HttpStatusCode.InternalServerError);
        (await ReadAsync(response)).Str("message").Should().Be("resourceVersion should not be set on objects to be created");
    }

    [Fact]
    public async Task Unknown_paths_and_resources_are_404()
    {
        await using var emulator = await KubeEmulator.StartAsync();
        using var client = emulator.CreateHttpClient();

        using var page = await client.GetAsync(new Uri("/nothing/here", UriKind.Relative));
        using var resource = await client.GetAsync(new Uri("/api/v1/namespaces/default/pods", UriKind.Relative));

        page.StatusCode.Should().Be(HttpStatusCode.NotFound);
        (await page.Content.ReadAsStringAsync()).Should().Be("404 page not found\n");
        resource.StatusCode.Should().Be(HttpStatusCode.NotFound);
        (await ReadAsync(resource)).Str("message").Should().Be("the server could not find the requested resource");
    }

    [Fact]
    public async Task A_caller_supplied_listening_socket_is_used()
    {
        var created = 0;
        await using var emulator = await KubeEmulator.StartAsync(new KubeEmulatorOptions
        {
            CreateListenSocket = endpoint =>
            {
                Interlocked.Increment(ref created);
                var socket = new System.Net.Sockets.Socket(endpoint.AddressFamily, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
                socket.Bind(endpoint);
                return socket;
            },
        });
        using var client = emulator.CreateHttpClient();

        using var response = await client.GetAsync(new Uri("/version", UriKind.Relative));

        created.Should().Be(1);
        (await ReadAsync(response)).Str("gitVersion").Should().Be("v1.32.0");
    }

    internal static StringContent Json(JsonNode body) => new(body.ToJsonString(), Encoding.UTF8, "application/json");

    internal static async Task<JsonObject> ReadAsync(HttpResponseMessage response) => (JsonObject)JsonNode.Parse(await response.Content.ReadAsStringAsync())!;

    private static JsonObject WithLabel(JsonObject obj, string key, string value)
    {
        var copy = (JsonObject)obj.DeepClone();
        copy["metadata"]!["labels"]![key] = value;
        return copy;
    }

    private static JsonObject Renamed(JsonObject obj, string name)
    {
        var copy = (JsonObject)obj.DeepClone();
        copy["metadata"]!["name"] = name;
        copy["metadata"]!.AsObject().Remove("resourceVersion");
        return copy;
    }
}
