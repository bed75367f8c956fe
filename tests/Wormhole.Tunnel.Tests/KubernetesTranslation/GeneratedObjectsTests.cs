using System.Collections.Immutable;
using System.Net;
using System.Runtime.CompilerServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using Wormhole.Tunnel.Kubernetes;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Sinks;

namespace Wormhole.Tunnel.Tests.KubernetesTranslation;

public class GeneratedObjectsTests
{
    private static readonly Plan Plan = Plan.Empty with
    {
        RemoteListeners = ImmutableArray.Create(
            new RemoteListener("client", "nginx-nginx", 25001, IPAddress.Parse("10.188.0.2"), 20000, 80, ""),
            new RemoteListener("1client", "Custom_App", 25002, IPAddress.Parse("10.188.0.3"), 20001, 8080, "")),
    };

    private static readonly KubernetesSinkOptions Options = new("wormhole", new Dictionary<string, string> { ["application"] = "wormhole-server" }, NetworkPolicies: true, Instance: "server");

    [Fact]
    public void Services_and_network_policies_match_the_golden_file()
    {
        var objects = GeneratedObjects.Build(Plan, Options);
        // Written as the client sends them (KubeJson); compared as JSON, key order aside.
        var actual = new JsonObject
        {
            ["services"] = new JsonArray([.. objects.Services.Select(s => JsonNode.Parse(KubeJson.Serialize(s)))]),
            ["networkPolicies"] = new JsonArray([.. objects.NetworkPolicies.Select(p => JsonNode.Parse(KubeJson.Serialize(p)))]),
        };
        var path = Path.Combine("testdata", "generated-objects", "expected.json");
        if (Environment.GetEnvironmentVariable("UPDATE_GOLDEN") == "1")
        {
            File.WriteAllText(Path.Combine(SourceDir(), path), actual.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        }

        var expected = JsonNode.Parse(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, path)));
        JsonNode.DeepEquals(actual, expected).Should().BeTrue($"the generated objects must keep their shape; got\n{actual.ToJsonString(new JsonSerializerOptions { WriteIndented = true })}");
    }

    [Fact]
    public void Without_network_policies_only_services_are_wanted()
    {
        GeneratedObjects.Build(Plan, Options with { NetworkPolicies = false }).NetworkPolicies.Should().BeEmpty();
    }

    [Fact]
    public void Exposed_addresses_name_the_service_in_our_namespace_and_the_original_port()
    {
        GeneratedObjects.Exposed(Plan, "wormhole").Select(a => a.Address).Should().Equal(
            "client-nginx-nginx.wormhole:80",
            $"{KubeNames.ObjectName("1client", "Custom_App")}.wormhole:8080");
    }

    private static string SourceDir([CallerFilePath] string path = "") => Path.GetDirectoryName(Path.GetDirectoryName(path))!;
}
