using System.Globalization;
using System.Net;
using System.Text.Json.Nodes;
using Wormhole.Tunnel.E2E.Infrastructure;

namespace Wormhole.Tunnel.E2E.Metrics;

/// <summary>
/// The real /metrics of a running hub and spoke: linted by promtool, and scraped by a real Prometheus server started in
/// the hub's namespace (which reaches the hub on 127.0.0.1 and the spoke on its LAN address).
/// </summary>
public class MetricsTests
{
    private const string Promtool = "/usr/bin/promtool";
    private const string Prometheus = "/usr/bin/prometheus";

    [RootFact]
    public async Task Promtool_accepts_the_hub_and_spoke_metrics_and_a_withdrawn_apps_series_leave_them()
    {
        await using var lab = await TunnelLab.CreateAsync("spoke1");
        var spoke = lab.Network["spoke1"];
        var backend = lab.StartBackend(spoke, "hello");
        lab.WriteApps(spoke, ("web", $"127.0.0.1:{backend}"));
        await lab.StartHubAsync();
        await lab.StartSpokeAsync(spoke);
        int? port = null;
        await TunnelLab.EventuallyAsync(
            async () => (port ??= await TunnelLab.ExposedPortAsync(lab.Hub, "web")) is { } p && await TunnelLab.FetchAsync(lab.Hub, p) == "hello",
            "the spoke's app answers through the hub");

        // Every family the product exports, once the hub and the spoke have paired, synced and proxied.
        var hub = await EventuallyValueAsync(() => MetricsAsync(lab.Hub, "127.0.0.1"),
            text => text.Contains("wormhole_proxy_connections_total{app=\"web\",kind=\"remote\"} 1", StringComparison.Ordinal), "the hub counted the connection");
        var spokeText = await EventuallyValueAsync(() => MetricsAsync(spoke, "127.0.0.1"),
            text => text.Contains("wormhole_proxy_upstream_connect_duration_seconds_count{app=\"web\",kind=\"local\"} 1", StringComparison.Ordinal),
            "the spoke timed its connect to the backend");
        foreach (var (side, text) in new[] { ("hub", hub), ("spoke", spokeText) })
        {
            var check = await lab.Hub.RunAsync(Promtool, ["check", "metrics"], text);
            check.ExitCode.Should().Be(0, $"promtool accepts the {side}'s metrics:\n{check.StandardOutput}{check.StandardError}");
            text.Should().Contain("wormhole_sync_round_trip_duration_seconds_bucket{peer=").And.Contain("wormhole_reconcile_duration_seconds_bucket{le=");
        }

        hub.Should().Contain("wormhole_pairing_duration_seconds_bucket{outcome=\"paired\"").And.Contain("wormhole_peers 1");
        spokeText.Should().Contain("wormhole_pairing_duration_seconds_bucket{outcome=\"paired\"");

        lab.WriteApps(spoke);
        await TunnelLab.EventuallyAsync(async () => await TunnelLab.ExposedPortAsync(lab.Hub, "web") is null, "the app is withdrawn from the hub");
        await EventuallyValueAsync(() => MetricsAsync(lab.Hub, "127.0.0.1"), text => !text.Contains("app=\"web\"", StringComparison.Ordinal),
            "the hub's series of the withdrawn app are gone");
        await EventuallyValueAsync(() => MetricsAsync(spoke, "127.0.0.1"), text => !text.Contains("app=\"web\"", StringComparison.Ordinal),
            "the spoke's series of the withdrawn app are gone");
    }

    [RootFact]
    public async Task A_real_Prometheus_scrapes_hub_and_spoke_and_queries_their_series_and_histograms()
    {
        File.Exists(Prometheus).Should().BeTrue($"{Prometheus} comes with the Debian package prometheus, which scripts/test installs");
        await using var lab = await TunnelLab.CreateAsync("spoke1");
        var spoke = lab.Network["spoke1"];
        await lab.StartHubAsync();
        await lab.StartSpokeAsync(spoke);

        var dir = Path.Combine(lab.WorkDir(lab.Hub), "prometheus");
        Directory.CreateDirectory(dir);
        var config = Path.Combine(dir, "prometheus.yml");
        await File.WriteAllTextAsync(config, $"""
            global:
              scrape_interval: 1s
              scrape_timeout: 1s
            scrape_configs:
              - job_name: wormhole
                static_configs:
                  - targets: ["127.0.0.1:8090"]
                    labels: {"{"}side: hub{"}"}
                  - targets: ["{spoke.LanAddress}:8090"]
                    labels: {"{"}side: spoke{"}"}
            """);
        var webPort = FreePort(lab.Hub);
        var prometheus = await lab.Hub.StartProcessAsync(Prometheus,
        [
            "--config.file", config, "--storage.tsdb.path", Path.Combine(dir, "data"),
            "--web.listen-address", $"127.0.0.1:{webPort}",
        ]);
        var api = $"http://127.0.0.1:{webPort}/api/v1";

        await TunnelLab.EventuallyAsync(async () =>
        {
            var targets = await ApiAsync(lab.Hub, $"{api}/targets");
            var active = targets?["data"]?["activeTargets"]?.AsArray();
            return active is { Count: 2 } && active.All(t => (string?)t!["health"] == "up");
        }, $"Prometheus sees both targets up (its output:\n{prometheus.Output})");

        await TunnelLab.EventuallyAsync(async () =>
            Values(await ApiAsync(lab.Hub, $"{api}/query?query={Uri.EscapeDataString("wormhole_peers{side=\"hub\"}")}")).SequenceEqual([1.0]),
            "Prometheus has the hub's wormhole_peers = 1");
        await TunnelLab.EventuallyAsync(async () =>
            Values(await ApiAsync(lab.Hub, $"{api}/query?query={Uri.EscapeDataString("sum(wormhole_sync_round_trip_duration_seconds_bucket{side=\"spoke\",le=\"+Inf\"})")}"))
                is [> 0] && Values(await ApiAsync(lab.Hub, $"{api}/query?query={Uri.EscapeDataString("wormhole_sync_round_trip_duration_seconds_bucket{side=\"spoke\"}")}")).Count > 1,
            "Prometheus has the spoke's sync round-trip histogram buckets");
        await TunnelLab.EventuallyAsync(async () =>
            Values(await ApiAsync(lab.Hub, $"{api}/query?query={Uri.EscapeDataString("wormhole_pairing_attempts_total{side=\"hub\",outcome=\"paired\"}")}")).SequenceEqual([1.0]),
            "Prometheus has the hub's paired count");
    }

    /// <summary>Polls <paramref name="read"/> until its value meets <paramref name="condition"/>, and returns that value.</summary>
    private static async Task<string> EventuallyValueAsync(Func<Task<string?>> read, Func<string, bool> condition, string what)
    {
        string? last = null;
        try
        {
            await TunnelLab.EventuallyAsync(async () => (last = await read()) is { } value && condition(value), what);
        }
        catch (TimeoutException ex)
        {
            throw new TimeoutException($"{ex.Message} Last value:\n{last}", ex);
        }

        return last!;
    }

    private static async Task<string?> MetricsAsync(Site site, string host)
    {
        using var response = await site.HttpGetAsync($"http://{host}:8090/metrics");
        return response.IsSuccessStatusCode ? await response.Content.ReadAsStringAsync() : null;
    }

    private static async Task<JsonNode?> ApiAsync(Site site, string url)
    {
        try
        {
            using var response = await site.HttpGetAsync(url);
            return response.IsSuccessStatusCode ? JsonNode.Parse(await response.Content.ReadAsStringAsync()) : null;
        }
        catch (HttpRequestException)
        {
            return null; // not listening yet
        }
    }

    /// <summary>The sample values of an instant-vector query result.</summary>
    private static List<double> Values(JsonNode? query) =>
        query?["data"]?["result"]?.AsArray().Select(r => double.Parse((string)r!["value"]![1]!, CultureInfo.InvariantCulture)).ToList() ?? [];

    /// <summary>A port free inside the site's namespace right now.</summary>
    private static int FreePort(Site site)
    {
        using var socket = site.ListenTcp(IPAddress.Loopback, 0);
        return ((IPEndPoint)socket.LocalEndPoint!).Port;
    }
}
