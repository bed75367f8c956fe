using System.Text.Json;
using Wormhole.Tunnel.Chart.Tests.Infrastructure;
using static Wormhole.Tunnel.Chart.Tests.ServerChartTests;

namespace Wormhole.Tunnel.Chart.Tests;

/// <summary>A spoke's rendering: <c>helm template dev1 ./helm -n dev1 --set client.enabled=true --set client.name=dev1 ...</c>.</summary>
public sealed class ClientChartTests
{
    private const string Ns = "dev1";
    private const string Release = "dev1";
    private const string Fullname = "wormhole-dev1";

    [Fact]
    public async Task Renders_the_spoke_objects_with_no_public_service()
    {
        var m = await HelmChart.TemplateAsync(Release, Ns, HelmChart.Client);

        m.Identities.Should().BeEquivalentTo(
        [
            "Secret/wormhole-dev1-env", "ConfigMap/wormhole-dev1-config", "ServiceAccount/wormhole-dev1", "PersistentVolumeClaim/wormhole-dev1",
            "ClusterRole/wormhole-dev1-dev1", "ClusterRoleBinding/wormhole-dev1-dev1", "Role/wormhole-dev1", "RoleBinding/wormhole-dev1",
            "Service/wormhole-dev1-api", "Service/wormhole-dev1-metrics", "Deployment/wormhole-dev1", "NetworkPolicy/wormhole-dev1",
        ]);
    }

    [Fact]
    public async Task One_container_runs_the_spoke_with_name_and_hub_url_and_the_metadata_as_json()
    {
        var m = await HelmChart.TemplateAsync(Release, Ns, HelmChart.Client);

        m.PodSpec["containers"]!.AsArray().Should().ContainSingle();
        m.Container["image"]!.GetValue<string>().Should().Be("ghcr.io/wormhole-tunnel/wormhole-client:1.0.0");
        m.Args.Should().Equal(
            "--name=dev1", "--kubernetes", "--kubernetes-namespace=dev1", "--kubernetes-labels=application=wormhole-dev1", "--network-policies",
            "--kubernetes-gc-grace=15s", "--state-dir=/storage", "--api-listen-address=0.0.0.0:8082", "--metrics", "--metrics-port=8090", "--log-format=console",
            "--server=http://wormhole-server.server.svc.cluster.local:8080");
        var env = m.ConfigEnvironment;
        env.Keys.Should().BeEquivalentTo(["INVITE_TOKEN", "CLIENT_METADATA"]);
        env["INVITE_TOKEN"].Should().Be("correct-horse-battery-staple");
        JsonSerializer.Deserialize<Dictionary<string, string>>(env["CLIENT_METADATA"]).Should().Equal(new Dictionary<string, string>
        {
            ["metadata_key"] = "metadata_value_dev1", ["team"] = "platform",
        });
    }

    [Fact]
    public async Task Without_sync_metadata_the_spoke_sends_an_empty_object()
    {
        var m = await HelmChart.TemplateAsync(Release, Ns, HelmChart.ClientMinimal);

        m.ConfigEnvironment["CLIENT_METADATA"].Should().Be("{}");
        m.Args.Should().NotContain(["--network-policies", "--metrics", "--debug"]);
        m.OfKind("NetworkPolicy").Should().BeEmpty();
        m.Identities.Should().NotContain("Service/wormhole-dev1-metrics");
        ContainerPorts(m).Should().ContainSingle().Which.Key.Should().Be("api");
    }

    [Fact]
    public async Task The_spoke_listens_on_api_and_metrics_only_and_its_policy_admits_just_those()
    {
        var m = await HelmChart.TemplateAsync(Release, Ns, HelmChart.Client);

        ContainerPorts(m).Should().Equal(new Dictionary<string, (long, string)> { ["api"] = (8082, "TCP"), ["metrics"] = (8090, "TCP") });
        m.Get("NetworkPolicy", Fullname)["spec"]!["ingress"]!.AsArray().Single()!["ports"]!.AsArray()
            .Select(p => (p!["port"]!.GetValue<long>(), p["protocol"]!.GetValue<string>()))
            .Should().BeEquivalentTo([(8082L, "TCP"), (8090L, "TCP")]);
    }

    [Fact]
    public async Task The_spoke_has_the_same_security_context_rbac_and_probes_as_the_hub()
    {
        var m = await HelmChart.TemplateAsync(Release, Ns, HelmChart.Client);

        var container = m.Container["securityContext"]!;
        container["capabilities"]!["drop"]!.AsArray().Select(c => c!.GetValue<string>()).Should().Equal("ALL");
        container["capabilities"]!["add"]!.AsArray().Select(c => c!.GetValue<string>()).Should().Equal("NET_ADMIN");
        container["allowPrivilegeEscalation"]!.GetValue<bool>().Should().BeFalse();
        container["readOnlyRootFilesystem"]!.GetValue<bool>().Should().BeTrue();
        m.PodSpec["securityContext"]!["runAsUser"]!.GetValue<long>().Should().Be(0);
        Rules(m.OfKind("ClusterRole").Single()).Should().BeEquivalentTo([("", "services", "list,watch"), ("", "events", "create,get,patch")]);
        Rules(m.OfKind("Role").Single()).Select(r => r.Resource).Should().BeEquivalentTo(["services", "networkpolicies"]);
        m.Container["readinessProbe"]!["httpGet"]!["path"]!.GetValue<string>().Should().Be("/readyz");
        m.Container["livenessProbe"]!["httpGet"]!["path"]!.GetValue<string>().Should().Be("/livez");
        m.Deployment["spec"]!["strategy"]!["type"]!.GetValue<string>().Should().Be("Recreate");
    }

    [Theory]
    [InlineData("client.syncMetadata.testFoo=testBar", true)]
    [InlineData("client.basicAuth.username=x", true)]
    [InlineData("client.serverDsn=http://elsewhere.example.com:8080", false)]
    public async Task Changing_the_metadata_restarts_the_spoke(string change, bool restarts)
    {
        var before = Checksum(await HelmChart.TemplateAsync(Release, Ns, HelmChart.Client));
        var after = Checksum(await HelmChart.TemplateAsync(Release, Ns, [.. HelmChart.Client, change]));

        (before != after).Should().Be(restarts);
    }

    [Fact]
    public async Task The_notes_say_how_to_check_pairing_and_expose_a_service()
    {
        var notes = await HelmChart.NotesAsync(Release, Ns, HelmChart.Client);

        notes.Should().Contain("kubectl logs -n dev1 -l application=wormhole-dev1 -c wormhole | grep \"Paired with server\"");
        notes.Should().Contain("http://wormhole-server.server.svc.cluster.local:8080");
        notes.Should().Contain("wormhole.glothriel.github.com/exposed=yes");
        notes.Should().Contain("dev1-<app name>");
    }
}
