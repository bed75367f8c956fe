using System.Text.RegularExpressions;
using Wormhole.Tunnel.Metrics;
using static Wormhole.Tunnel.Tests.Metrics.MetricsTestMeter;

namespace Wormhole.Tunnel.Tests.Metrics;

/// <summary>The chart's dashboard and alerts, and docs/metrics.md, name only metrics the product exports, and the docs name them all.</summary>
public sealed partial class MetricNamesSpecs
{
    [Fact]
    public async Task The_dashboard_and_the_alert_rules_use_only_exported_metrics()
    {
        var exported = await ExportedSamplesAsync();

        foreach (var file in new[] { "helm/files/dashboard.json", "helm/files/alerts.yaml" })
        {
            var used = MetricName().Matches(await File.ReadAllTextAsync(Path.Combine(Root, file))).Select(m => m.Value).ToHashSet();
            used.Should().NotBeEmpty();
            used.Should().BeSubsetOf(exported, $"{file} must not query a metric that does not exist");
        }
    }

    [Fact]
    public async Task Docs_metrics_md_lists_every_exported_family_and_no_other()
    {
        var families = await ExportedFamiliesAsync();
        var docs = await File.ReadAllTextAsync(Path.Combine(Root, "docs/metrics.md"));
        var documented = MetricName().Matches(docs).Select(m => m.Value).ToHashSet();

        families.Should().BeSubsetOf(documented, "docs/metrics.md documents every metric");
        documented.Except(families).Where(n => n.StartsWith("wormhole_", StringComparison.Ordinal)).Should().BeEmpty("docs/metrics.md names no wormhole metric that does not exist");
    }

    /// <summary>Every sample name (with _bucket, _sum, _count) of a side with one series of each metric.</summary>
    private static async Task<HashSet<string>> ExportedSamplesAsync() =>
        Samples(await PopulatedScrapeAsync()).Select(line => line.Split('{', ' ')[0]).ToHashSet();

    private static async Task<HashSet<string>> ExportedFamiliesAsync() =>
        (await PopulatedScrapeAsync()).Split('\n').Where(l => l.StartsWith("# TYPE ", StringComparison.Ordinal)).Select(l => l.Split(' ')[2]).ToHashSet();

    private static async Task<string> PopulatedScrapeAsync()
    {
        var metrics = new WormholeMetrics();
        metrics.ForApp("web", "local").UpstreamConnect.Observe(0.001);
        metrics.SyncAnswered("hub", TimeSpan.FromSeconds(1));
        metrics.SyncFailed("hub", "503");
        metrics.Pairing("paired", TimeSpan.FromSeconds(0.1));
        metrics.Reconciled(TimeSpan.FromSeconds(0.01));
        metrics.SetApps(1, 1);
        metrics.Peers.Set(1);
        return await ScrapeAsync(metrics);
    }

    private static string Root
    {
        get
        {
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            while (!File.Exists(Path.Combine(dir!.FullName, "Wormhole.Tunnel.sln")))
            {
                dir = dir.Parent;
            }

            return dir.FullName;
        }
    }

    [GeneratedRegex(@"\b(?:wormhole|process|dotnet)_[a-z_]+[a-z]\b")]
    private static partial Regex MetricName();
}
