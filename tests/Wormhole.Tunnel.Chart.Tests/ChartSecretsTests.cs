using System.Text.Json.Nodes;
using Wormhole.Tunnel.Chart.Tests.Infrastructure;

namespace Wormhole.Tunnel.Chart.Tests;

/// <summary>Secrets (PSK, basic auth) from the chart's Secret or the user's own, never on the command line; image tag and pull policy; the ServiceMonitor.</summary>
public sealed class ChartSecretsTests
{
    private const string Ns = "wormhole";

    [Fact]
    public async Task Existing_secrets_replace_the_charts_and_then_no_secret_is_rendered()
    {
        var m = await HelmChart.TemplateAsync("wormhole-server", Ns, [.. HelmChart.Server, "peering.existingSecret=hub-psk", "peering.existingSecretKey=token",
            "server.basicAuth.existingSecret=hub-admin"]);

        m.OfKind("Secret").Should().BeEmpty("every secret comes from the user's Secrets");
        m.Yaml.Should().NotContain("correct-horse-battery-staple").And.NotContain("12345678", "values a Secret replaces are not rendered anywhere");
        References(m).Should().BeEquivalentTo(new Dictionary<string, (string, string, bool)>
        {
            ["INVITE_TOKEN"] = ("hub-psk", "token", false),
            ["BASIC_AUTH_USERNAME"] = ("hub-admin", "username", true),
            ["BASIC_AUTH_PASSWORD"] = ("hub-admin", "password", true),
        });
    }

    [Fact]
    public async Task An_existing_psk_secret_leaves_the_basic_auth_values_in_the_charts_secret()
    {
        var m = await HelmChart.TemplateAsync("wormhole-server", Ns, [.. HelmChart.Server, "peering.existingSecret=hub-psk"]);

        m.Get("Secret", "wormhole-server-env")["stringData"]!.AsObject().Select(p => p.Key).Should().BeEquivalentTo(["BASIC_AUTH_USERNAME", "BASIC_AUTH_PASSWORD"]);
        References(m)["INVITE_TOKEN"].Should().Be(("hub-psk", "psk", false), "psk is the default key");
        m.ConfigEnvironment.Should().Equal(new Dictionary<string, string> { ["BASIC_AUTH_USERNAME"] = "kajtek", ["BASIC_AUTH_PASSWORD"] = "12345678" });
    }

    [Fact]
    public async Task Without_basic_auth_the_container_gets_no_credentials_variables()
    {
        var m = await HelmChart.TemplateAsync("wormhole-server", Ns, "server.enabled=true", "server.wg.publicHost=hub.example.com");

        References(m).Keys.Should().BeEquivalentTo(["INVITE_TOKEN"]);
        m.Get("Secret", "wormhole-server-env")["stringData"]!.AsObject().Select(p => p.Key).Should().Equal("INVITE_TOKEN");
    }

    [Theory]
    [MemberData(nameof(RenderedSets.All), MemberType = typeof(RenderedSets))]
    public async Task Secrets_never_reach_the_command_line(string what, string role, string release, string ns, string[] values)
    {
        var m = await HelmChart.TemplateAsync(release, ns, values);

        var secrets = m.OfKind("Secret").SelectMany(s => s["stringData"]!.AsObject().Select(p => (string)p.Value!)).Where(v => v.Length > 0).ToList();
        if (!values.Any(v => v.Contains("existingSecret", StringComparison.Ordinal)))
        {
            secrets.Should().NotBeEmpty($"the {what} ({role}) has a PSK at least");
        }

        m.Args.Should().NotContain(a => secrets.Any(s => a == s || a.EndsWith("=" + s, StringComparison.Ordinal)), $"the {what}'s arguments are visible to every user of the node");
        m.Container["env"]!.AsArray().Where(e => e!["value"] is not null).Select(e => (string)e!["value"]!)
            .Should().NotContain(v => secrets.Contains(v), "secrets are referenced, not copied into the pod spec");
    }

    [Theory]
    [InlineData("server")]
    [InlineData("client")]
    public async Task The_image_tag_is_the_charts_app_version_and_pulled_only_when_missing(string role)
    {
        var appVersion = (await File.ReadAllLinesAsync(Path.Combine(Repository.Chart, "Chart.yaml"))).Single(l => l.StartsWith("appVersion:", StringComparison.Ordinal))[11..].Trim().Trim('"');
        var m = await HelmChart.TemplateAsync(role, Ns, role == "server" ? HelmChart.Server : HelmChart.Client);
        var pinned = await HelmChart.TemplateAsync(role, Ns, [.. role == "server" ? HelmChart.Server : HelmChart.Client, "docker.version=1.2.3"]);

        m.Container["image"]!.GetValue<string>().Should().Be($"ghcr.io/wormhole-tunnel/wormhole-{role}:{appVersion}");
        m.Container["imagePullPolicy"]!.GetValue<string>().Should().Be("IfNotPresent");
        pinned.Container["image"]!.GetValue<string>().Should().EndWith(":1.2.3");
    }

    [Fact]
    public async Task A_service_monitor_scrapes_the_metrics_service_and_nothing_else()
    {
        var m = await HelmChart.TemplateAsync("wormhole-server", Ns, [.. HelmChart.Server, "metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=kube-prometheus-stack"]);

        var monitor = m.OfKind("ServiceMonitor").Should().ContainSingle().Subject;
        monitor["apiVersion"]!.GetValue<string>().Should().Be("monitoring.coreos.com/v1");
        ((string)monitor["metadata"]!["labels"]!["release"]!).Should().Be("kube-prometheus-stack");
        var selector = monitor["spec"]!["selector"]!["matchLabels"]!.AsObject().ToDictionary(p => p.Key, p => (string)p.Value!);
        m.OfKind("Service").Where(s => selector.All(l => (string?)s["metadata"]!["labels"]![l.Key] == l.Value)).Select(Manifests.Name)
            .Should().Equal("wormhole-server-metrics");
        var endpoint = monitor["spec"]!["endpoints"]!.AsArray().Single()!;
        ((string)endpoint["port"]!).Should().Be("metrics");
        ((string)endpoint["path"]!).Should().Be("/metrics");
        (await HelmChart.TemplateAsync("wormhole-server", Ns, HelmChart.Server)).OfKind("ServiceMonitor").Should().BeEmpty("it is off by default");
        (await HelmChart.TryTemplateAsync("wormhole-server", Ns, [.. HelmChart.Server, "metrics.serviceMonitor.enabled=true", "metrics.enabled=false"]))
            .StandardError.Should().Contain("need metrics.enabled=true");
    }

    /// <summary>Variables taken from Secrets: name → (Secret, key, optional).</summary>
    private static Dictionary<string, (string Secret, string Key, bool Optional)> References(Manifests m) =>
        m.Container["env"]!.AsArray()
            .Where(e => e!["valueFrom"]?["secretKeyRef"] is not null)
            .ToDictionary(
                e => (string)e!["name"]!,
                e => ((string)e!["valueFrom"]!["secretKeyRef"]!["name"]!, (string)e["valueFrom"]!["secretKeyRef"]!["key"]!, (bool?)e["valueFrom"]!["secretKeyRef"]!["optional"] ?? false));
}
