using System.Text.Json.Nodes;
using Wormhole.Tunnel.Chart.Tests.Infrastructure;

namespace Wormhole.Tunnel.Chart.Tests;

/// <summary>The optional metrics pieces: a Grafana dashboard ConfigMap and a PrometheusRule, both off by default.</summary>
public sealed class MetricsChartTests
{
    private const string Promtool = "/usr/bin/promtool";

    public static TheoryData<string, string, string[]> Sides => new()
    {
        { "wormhole-server", "wormhole", HelmChart.Server },
        { "dev1", "dev1", HelmChart.Client },
    };

    [Theory]
    [MemberData(nameof(Sides))]
    public async Task Neither_the_dashboard_nor_the_rule_is_rendered_by_default(string release, string ns, string[] values)
    {
        var m = await HelmChart.TemplateAsync(release, ns, values);

        Dashboards(m).Should().BeEmpty();
        m.OfKind("PrometheusRule").Should().BeEmpty();
    }

    [Theory]
    [MemberData(nameof(Sides))]
    public async Task The_dashboard_is_a_configmap_for_grafanas_sidecar_holding_the_dashboard_file(string release, string ns, string[] values)
    {
        var m = await HelmChart.TemplateAsync(release, ns, [.. values, "metrics.dashboard.enabled=true", "metrics.dashboard.labels.team=platform"]);

        var fullname = Manifests.Name(m.Deployment);
        var map = m.Get("ConfigMap", $"{fullname}-dashboard");
        Manifests.Namespace(map).Should().Be(ns);
        map["metadata"]!["labels"]!["grafana_dashboard"]!.GetValue<string>().Should().Be("1");
        map["metadata"]!["labels"]!["team"]!.GetValue<string>().Should().Be("platform");
        var json = map["data"]!["wormhole-tunnel.json"]!.GetValue<string>();
        var dashboard = JsonNode.Parse(json)!;
        dashboard["uid"]!.GetValue<string>().Should().Be("wormhole-tunnel");
        dashboard["panels"]!.AsArray().Should().NotBeEmpty();
        JsonNode.DeepEquals(dashboard, JsonNode.Parse(await File.ReadAllTextAsync(Path.Combine(Repository.Chart, "files", "dashboard.json")))).Should().BeTrue();
        m.OfKind("PrometheusRule").Should().BeEmpty("each piece has its own switch");

        var result = await SchemaValidator.ValidateAsync(m.Yaml);
        result.Succeeded.Should().BeTrue($"{result.StandardOutput}{result.StandardError}");
    }

    [Theory]
    [MemberData(nameof(Sides))]
    public async Task The_rule_is_a_prometheus_operator_rule_whose_groups_promtool_accepts(string release, string ns, string[] values)
    {
        var m = await HelmChart.TemplateAsync(release, ns, [.. values, "metrics.prometheusRule.enabled=true", "metrics.prometheusRule.labels.release=kube-prometheus-stack"]);

        var rule = m.OfKind("PrometheusRule").Should().ContainSingle().Subject;
        rule["apiVersion"]!.GetValue<string>().Should().Be("monitoring.coreos.com/v1");
        Manifests.Name(rule).Should().Be(Manifests.Name(m.Deployment));
        Manifests.Namespace(rule).Should().Be(ns);
        rule["metadata"]!["labels"]!["release"]!.GetValue<string>().Should().Be("kube-prometheus-stack");
        var alerts = rule["spec"]!["groups"]!.AsArray().SelectMany(g => g!["rules"]!.AsArray()).Select(r => (string)r!["alert"]!).ToList();
        alerts.Should().BeEquivalentTo(["WormholePeerSilent", "WormholeSyncFailing", "WormholePairingFailures", "WormholeUpstreamFailures"]);
        Dashboards(m).Should().BeEmpty();

        // The rendered spec is plain Prometheus rule syntax: promtool parses every expression and template.
        File.Exists(Promtool).Should().BeTrue($"{Promtool} comes with the Debian package prometheus, which scripts/test installs");
        using var dir = new TempDirectory();
        var file = Path.Combine(dir.Path, "rules.json");
        await File.WriteAllTextAsync(file, rule["spec"]!.ToJsonString());
        var check = await Tools.RunAsync(Promtool, ["check", "rules", file]);
        check.Succeeded.Should().BeTrue(check.ToString());
        check.StandardOutput.Should().Contain("SUCCESS: 4 rules found");
    }

    [Theory]
    [InlineData("metrics.dashboard.enabled=true")]
    [InlineData("metrics.prometheusRule.enabled=true")]
    public async Task Either_piece_without_metrics_is_refused_with_the_reason(string piece)
    {
        var result = await HelmChart.TryTemplateAsync("wormhole-server", "wormhole", [.. HelmChart.Server, "metrics.enabled=false", piece]);

        result.Succeeded.Should().BeFalse();
        result.StandardError.Should().Contain("need metrics.enabled=true");
    }

    [Fact]
    public async Task The_schema_refuses_unknown_keys_under_the_new_values()
    {
        var result = await HelmChart.TryTemplateAsync("wormhole-server", "wormhole", [.. HelmChart.Server, "metrics.dashboard.namespace=grafana"]);

        result.Succeeded.Should().BeFalse();
        result.StandardError.Should().Contain("namespace");
    }

    /// <summary>The dashboard ConfigMaps (a spoke also renders its -config ConfigMap with the sync metadata).</summary>
    private static IEnumerable<System.Text.Json.Nodes.JsonObject> Dashboards(Manifests m) =>
        m.OfKind("ConfigMap").Where(c => c["metadata"]!["labels"]?["grafana_dashboard"] is not null);
}
