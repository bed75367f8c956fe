using Wormhole.Tunnel.Chart.Tests.Infrastructure;

namespace Wormhole.Tunnel.Chart.Tests;

/// <summary>Names come from the release, so several spokes share a namespace; the reference's release names keep its object names.</summary>
public sealed class ChartNamingTests
{
    [Fact]
    public async Task Two_spoke_releases_in_one_namespace_share_no_object_name()
    {
        var first = await HelmChart.TemplateAsync("dev1", "spokes", "client.enabled=true", "client.name=dev1", "client.serverDsn=http://hub:8080", "networkPolicies.enabled=true");
        var second = await HelmChart.TemplateAsync("dev2", "spokes", "client.enabled=true", "client.name=dev2", "client.serverDsn=http://hub:8080", "networkPolicies.enabled=true");

        first.Identities.Intersect(second.Identities).Should().BeEmpty("two releases must not fight over one object");
        first.Deployment["spec"]!["selector"]!.ToJsonString().Should().NotBe(second.Deployment["spec"]!["selector"]!.ToJsonString(),
            "each spoke's generated Services must select its own pod");
        first.Args.Should().Contain("--kubernetes-labels=application=wormhole-dev1");
        second.Args.Should().Contain("--kubernetes-labels=application=wormhole-dev2");
    }

    [Fact]
    public async Task Releases_of_one_name_in_two_namespaces_share_no_cluster_scoped_object()
    {
        var a = await HelmChart.TemplateAsync("client", "team-a", HelmChart.Client);
        var b = await HelmChart.TemplateAsync("client", "team-b", HelmChart.Client);

        var clusterScoped = new[] { "ClusterRole", "ClusterRoleBinding" };
        a.Identities.Where(i => clusterScoped.Contains(i.Split('/')[0])).Intersect(b.Identities).Should().BeEmpty();
    }

    [Theory]
    [InlineData("server", "wormhole-server")]
    [InlineData("client", "wormhole-client")]
    [InlineData("wormhole-server", "wormhole-server")]
    [InlineData("my-wormhole", "my-wormhole")]
    [InlineData("dev1", "wormhole-dev1")]
    public async Task The_reference_release_names_give_the_reference_object_names(string release, string fullname)
    {
        var m = await HelmChart.TemplateAsync(release, "ns", HelmChart.Client);

        m.Deployment["metadata"]!["name"]!.GetValue<string>().Should().Be(fullname);
        m.Identities.Should().Contain($"Service/{fullname}-api").And.Contain($"Secret/{fullname}-env");
        m.Deployment["spec"]!["template"]!["metadata"]!["labels"]!["application"]!.GetValue<string>().Should().Be(fullname);
    }

    [Fact]
    public async Task Long_release_names_still_give_valid_service_names()
    {
        var release = new string('a', 53);
        var m = await HelmChart.TemplateAsync(release, "ns", HelmChart.Client);

        m.OfKind("Service").Select(Manifests.Name).Should().OnlyContain(n => n.Length <= 63 && !n.Contains("--", StringComparison.Ordinal));
        m.Deployment["spec"]!["template"]!["metadata"]!["labels"]!["application"]!.GetValue<string>().Length.Should().BeLessThanOrEqualTo(63);
    }
}
