using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Wormhole.Tunnel.Metrics;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Runtime;
using Wormhole.Tunnel.Sinks;
using Wormhole.Tunnel.Sources;
using Wormhole.Tunnel.Tests.Server;
using static Wormhole.Tunnel.Tests.Metrics.MetricsTestMeter;

namespace Wormhole.Tunnel.Tests.Metrics;

public sealed class WormholeMetricsSpecs
{
    private static readonly string[] ProxyMetrics =
    [
        "wormhole_proxy_connections_total", "wormhole_proxy_connections_active", "wormhole_proxy_upstream_failures_total",
        "wormhole_proxy_bytes_total", "wormhole_proxy_upstream_connect_duration_seconds_count",
        "wormhole_proxy_upstream_connect_duration_seconds_bucket",
    ];

    [Fact]
    public async Task Series_of_withdrawn_apps_are_removed_and_those_of_current_apps_stay()
    {
        var metrics = new WormholeMetrics();
        Traffic(metrics.ForApp("web", "local"), 10);
        Traffic(metrics.ForApp("db", "remote"), 20);
        Traffic(metrics.ForApp("web", "remote"), 30);

        metrics.RetainApps([("remote", "db"), ("remote", "web")]);

        var text = await ScrapeAsync(metrics);
        foreach (var name in ProxyMetrics)
        {
            AppsOf(text, name).Should().BeEquivalentTo(["db/remote", "web/remote"], $"{name} keeps only the current apps");
        }

        Series(text, "wormhole_proxy_bytes_total")["{app=\"db\",kind=\"remote\",direction=\"upstream\"}"].Should().Be(20);
    }

    [Fact]
    public async Task A_withdrawn_app_that_comes_back_starts_from_zero_and_old_connections_do_not_touch_it()
    {
        var metrics = new WormholeMetrics();
        var old = metrics.ForApp("web", "local");
        Traffic(old, 10);
        old.ConnectionsActive.Inc();

        metrics.RetainApps([]);
        var again = metrics.ForApp("web", "local");
        old.ConnectionsActive.Dec(); // a connection of the withdrawn listener ends late
        again.BytesUpstream.Inc(1);

        var text = await ScrapeAsync(metrics);
        Series(text, "wormhole_proxy_bytes_total")["{app=\"web\",kind=\"local\",direction=\"upstream\"}"].Should().Be(1);
        Series(text, "wormhole_proxy_connections_active")["{app=\"web\",kind=\"local\"}"].Should().Be(0, "never negative");
    }

    [Fact]
    public async Task Apps_beyond_the_cap_are_summed_under_other_and_the_series_stay_bounded()
    {
        var metrics = new WormholeMetrics(maxAppSeries: 3);
        for (var i = 0; i < 50; i++)
        {
            Traffic(metrics.ForApp($"app{i}", "remote"), 1);
        }

        var text = await ScrapeAsync(metrics);
        AppsOf(text, "wormhole_proxy_bytes_total").Should().BeEquivalentTo(["app0/remote", "app1/remote", "app2/remote", "_other/remote"]);
        Series(text, "wormhole_proxy_bytes_total")["{app=\"_other\",kind=\"remote\",direction=\"upstream\"}"].Should().Be(47, "nothing is lost");
        Series(text, "wormhole_proxy_connections_total").Values.Sum().Should().Be(50);
    }

    [Fact]
    public async Task Other_goes_once_no_current_app_is_folded_into_it_and_a_freed_slot_is_reused()
    {
        var metrics = new WormholeMetrics(maxAppSeries: 2);
        Traffic(metrics.ForApp("a", "local"), 1);
        Traffic(metrics.ForApp("b", "local"), 1);
        Traffic(metrics.ForApp("c", "local"), 1); // folded

        metrics.RetainApps([("local", "a"), ("local", "b"), ("local", "c")]);
        AppsOf(await ScrapeAsync(metrics), "wormhole_proxy_bytes_total").Should().Contain("_other/local", "c is still current");

        metrics.RetainApps([("local", "a")]);
        AppsOf(await ScrapeAsync(metrics), "wormhole_proxy_bytes_total").Should().BeEquivalentTo(["a/local"]);

        Traffic(metrics.ForApp("d", "local"), 1);
        AppsOf(await ScrapeAsync(metrics), "wormhole_proxy_bytes_total").Should().BeEquivalentTo(["a/local", "d/local"], "b's slot is free again");
    }

    [Fact]
    public async Task Sync_series_of_departed_peers_are_removed_and_unknown_senders_stay()
    {
        var metrics = new WormholeMetrics();
        metrics.SyncAnswered("spoke-a", TimeSpan.FromMilliseconds(30));
        metrics.SyncAnswered("spoke-b", TimeSpan.FromMilliseconds(30));
        metrics.SyncFailed("spoke-b", "503");
        metrics.SyncFailed(WormholeMetrics.UnknownPeer, "403");

        metrics.RetainPeers(["spoke-a"]);

        var text = await ScrapeAsync(metrics);
        Series(text, "wormhole_sync_round_trips_total").Keys.Should().BeEquivalentTo(["{peer=\"spoke-a\"}"]);
        Series(text, "wormhole_sync_failures_total").Keys.Should().BeEquivalentTo(["{peer=\"unknown\",reason=\"403\"}"]);
        Series(text, "wormhole_sync_round_trip_duration_seconds_count").Keys.Should().BeEquivalentTo(["{peer=\"spoke-a\"}"]);
        text.Should().NotContain("spoke-b");
    }

    [Fact]
    public async Task Histograms_have_the_documented_buckets_in_seconds()
    {
        var metrics = new WormholeMetrics();
        metrics.SyncAnswered("hub", TimeSpan.FromMilliseconds(40));
        metrics.Pairing("paired", TimeSpan.FromMilliseconds(3));
        metrics.Reconciled(TimeSpan.FromMilliseconds(2));
        metrics.ForApp("web", "local").UpstreamConnect.Observe(0.0003);

        var text = await ScrapeAsync(metrics);
        Buckets(text, "wormhole_sync_round_trip_duration_seconds").Should().Equal(WormholeMetrics.SyncBuckets);
        Buckets(text, "wormhole_pairing_duration_seconds").Should().Equal(WormholeMetrics.PairingBuckets);
        Buckets(text, "wormhole_reconcile_duration_seconds").Should().Equal(WormholeMetrics.ReconcileBuckets);
        Buckets(text, "wormhole_proxy_upstream_connect_duration_seconds").Should().Equal(WormholeMetrics.ConnectBuckets);
        Series(text, "wormhole_sync_round_trip_duration_seconds_bucket")["{peer=\"hub\",le=\"0.025\"}"].Should().Be(0);
        Series(text, "wormhole_sync_round_trip_duration_seconds_bucket")["{peer=\"hub\",le=\"0.05\"}"].Should().Be(1);
        Series(text, "wormhole_pairing_attempts_total")["{outcome=\"paired\"}"].Should().Be(1);
        Series(text, "wormhole_pairing_duration_seconds_count")["{outcome=\"paired\"}"].Should().Be(1);
    }

    [Fact]
    public async Task Each_side_has_its_own_registry()
    {
        var hub = new WormholeMetrics();
        var spoke = new WormholeMetrics();
        hub.Pairing("paired");

        Series(await ScrapeAsync(hub), "wormhole_pairing_attempts_total").Should().ContainKey("{outcome=\"paired\"}");
        Series(await ScrapeAsync(spoke), "wormhole_pairing_attempts_total").Should().BeEmpty();
        (await ScrapeAsync(spoke)).Should().Contain("process_cpu_seconds_total").And.Contain("process_resident_memory_bytes");
        Series(await ScrapeAsync(spoke), "wormhole_peers").Should().BeEmpty("only a hub has peers");
    }

    private static void Traffic(WormholeMetrics.AppSeries series, int bytes)
    {
        series.ConnectionsTotal.Inc();
        series.BytesUpstream.Inc(bytes);
        series.BytesDownstream.Inc(bytes);
        series.UpstreamConnect.Observe(0.001);
    }

    /// <summary>"app/kind" of every series of <paramref name="name"/>.</summary>
    private static HashSet<string> AppsOf(string text, string name) =>
        Series(text, name).Keys.Select(labels => $"{Label(labels, "app")}/{Label(labels, "kind")}").ToHashSet();

    private static string Label(string labels, string key)
    {
        var start = labels.IndexOf(key + "=\"", StringComparison.Ordinal) + key.Length + 2;
        return labels[start..labels.IndexOf('"', start)];
    }

    private static double[] Buckets(string text, string histogram) =>
        Series(text, histogram + "_bucket").Keys.Select(l => Label(l, "le")).Distinct().Where(le => le != "+Inf")
            .Select(le => double.Parse(le, System.Globalization.CultureInfo.InvariantCulture)).Order().ToArray();
}

public sealed class ReconcilerMetricsSpecs
{
    [Fact]
    public async Task A_reconcile_pass_is_timed_and_removes_the_series_of_apps_the_plan_no_longer_has()
    {
        var metrics = new WormholeMetrics();
        var signal = new ReconcileSignal();
        var local = new MutableLocalApps(signal);
        var tunnel = new TunnelSource(signal);
        tunnel.SetAddress(IPAddress.Parse("10.188.0.1"));
        var reconciler = new Reconciler(
            new ReconcilerOptions("hub", TimeSpan.FromHours(1)), local, new RemoteAppStore(signal, TimeProvider.System), tunnel,
            [new ProxySink(new RecordingProxyTable())], signal, TimeProvider.System, NullLogger<Reconciler>.Instance,
            metrics: metrics);
        local.Set([new LocalApp("web", "127.0.0.1", 8088, 8088), new LocalApp("db", "127.0.0.1", 5432, 5432)]);
        await reconciler.ReconcileOnceAsync(CancellationToken.None);
        metrics.ForApp("web", "local").ConnectionsTotal.Inc();
        metrics.ForApp("db", "local").ConnectionsTotal.Inc();

        local.Set([new LocalApp("db", "127.0.0.1", 5432, 5432)]);
        await reconciler.ReconcileOnceAsync(CancellationToken.None);

        var text = await ScrapeAsync(metrics);
        Series(text, "wormhole_proxy_connections_total").Keys.Should().BeEquivalentTo(["{app=\"db\",kind=\"local\"}"]);
        Series(text, "wormhole_reconcile_duration_seconds_count")[""].Should().Be(2);
    }
}
