using System.Diagnostics.Metrics;
using Wormhole.Tunnel.Metrics;
using static Wormhole.Tunnel.Tests.Metrics.MetricsTestMeter;

namespace Wormhole.Tunnel.Tests.Metrics;

public sealed class PrometheusExporterSpecs : IDisposable
{
    private readonly string _meterName = UniqueName();
    private readonly WormholeMetrics _metrics;
    private readonly PrometheusExporter _exporter;

    public PrometheusExporterSpecs()
    {
        _metrics = new WormholeMetrics(_meterName);
        _exporter = new PrometheusExporter(_meterName);
    }

    public void Dispose()
    {
        _exporter.Dispose();
        _metrics.Dispose();
    }

    [Theory]
    [InlineData("plain", "plain")]
    [InlineData("back\\slash", "back\\\\slash")]
    [InlineData("say \"hi\"", "say \\\"hi\\\"")]
    [InlineData("two\nlines", "two\\nlines")]
    [InlineData("\\\"\n", "\\\\\\\"\\n")]
    public void Label_values_escape_backslash_quote_and_newline(string raw, string escaped) =>
        PrometheusExporter.EscapeLabelValue(raw).Should().Be(escaped);

    [Fact]
    public void Help_text_escapes_backslash_and_newline_but_not_quotes() =>
        PrometheusExporter.EscapeHelp("a\\b\n\"c\"").Should().Be("a\\\\b\\n\"c\"");

    [Theory]
    [InlineData("wormhole.proxy.bytes", "wormhole_proxy_bytes")]
    [InlineData("http.server:requests", "http_server:requests")]
    [InlineData("9lives", "_9lives")]
    [InlineData("caf\u00e9-latency ms", "caf__latency_ms")]
    [InlineData("", "_")]
    public void Metric_names_are_sanitised(string raw, string sanitised) =>
        PrometheusExporter.SanitizeMetricName(raw).Should().Be(sanitised);

    [Theory]
    [InlineData("app", "app")]
    [InlineData("peer.id", "peer_id")]
    [InlineData("a:b", "a_b")]
    [InlineData("0day", "_0day")]
    public void Label_names_are_sanitised_without_colons(string raw, string sanitised) =>
        PrometheusExporter.SanitizeLabelName(raw).Should().Be(sanitised);

    [Fact]
    public void A_counter_accumulates_per_tag_set_regardless_of_tag_order()
    {
        _metrics.ProxyBytes.Add(100, new("app", "web"), new("kind", "local"), new("direction", "upstream"));
        _metrics.ProxyBytes.Add(20, new("direction", "upstream"), new("kind", "local"), new("app", "web"));
        _metrics.ProxyBytes.Add(5, new("app", "web"), new("kind", "local"), new("direction", "downstream"));
        _metrics.ProxyBytes.Add(7, new("app", "db"), new("kind", "remote"), new("direction", "upstream"));

        Samples(_exporter.Scrape()).Where(l => l.StartsWith("wormhole_proxy_bytes_total", StringComparison.Ordinal))
            .Should().Equal(
                "wormhole_proxy_bytes_total{app=\"db\",direction=\"upstream\",kind=\"remote\"} 7",
                "wormhole_proxy_bytes_total{app=\"web\",direction=\"downstream\",kind=\"local\"} 5",
                "wormhole_proxy_bytes_total{app=\"web\",direction=\"upstream\",kind=\"local\"} 120");
    }

    [Fact]
    public void A_counter_ignores_negative_increments()
    {
        _metrics.SyncRoundTrips.Add(3, new KeyValuePair<string, object?>("peer", "a"));
        _metrics.SyncRoundTrips.Add(-2, new KeyValuePair<string, object?>("peer", "a"));

        _exporter.Scrape().Should().Contain("wormhole_sync_round_trips_total{peer=\"a\"} 3\n");
    }

    [Fact]
    public void An_up_down_counter_goes_down_and_is_a_gauge()
    {
        KeyValuePair<string, object?>[] tags = [new("app", "web"), new("kind", "local")];
        _metrics.ProxyConnectionsActive.Add(1, tags);
        _metrics.ProxyConnectionsActive.Add(1, tags);
        _metrics.ProxyConnectionsActive.Add(-1, tags);
        _metrics.ProxyConnectionsActive.Add(-3, new KeyValuePair<string, object?>("app", "db"));

        var text = _exporter.Scrape();

        text.Should().Contain("# TYPE wormhole_proxy_connections_active gauge\n")
            .And.Contain("wormhole_proxy_connections_active{app=\"web\",kind=\"local\"} 1\n")
            .And.Contain("wormhole_proxy_connections_active{app=\"db\"} -3\n");
    }

    [Fact]
    public void Instruments_without_measurements_are_listed_with_help_type_and_a_zero_sample()
    {
        var text = _exporter.Scrape();

        text.Should().Contain(
            "# HELP wormhole_pairing_attempts_total Pairing attempts by outcome.\n" +
            "# TYPE wormhole_pairing_attempts_total counter\n" +
            "wormhole_pairing_attempts_total 0\n");
        text.Should().Contain("# TYPE wormhole_proxy_connections_active gauge\nwormhole_proxy_connections_active 0\n");
    }

    [Fact]
    public void The_bytes_counter_keeps_its_name_as_given()
    {
        _metrics.ProxyBytes.Add(1);

        var text = _exporter.Scrape();

        text.Should().Contain("# TYPE wormhole_proxy_bytes_total counter\nwormhole_proxy_bytes_total 1\n");
        text.Should().NotContain("wormhole_proxy_bytes_total_bytes");
    }

    [Fact]
    public void Counter_names_without_total_get_the_suffix_and_dots_become_underscores()
    {
        _metrics.Meter.CreateCounter<long>("wormhole.custom.events").Add(2);

        _exporter.Scrape().Should().Contain("# TYPE wormhole_custom_events_total counter\nwormhole_custom_events_total 2\n");
    }

    [Fact]
    public void Double_measurements_are_summed_and_rendered_as_floats()
    {
        var seconds = _metrics.Meter.CreateCounter<double>("wormhole_busy_seconds_total");
        seconds.Add(1.5);
        seconds.Add(0.25);
        var ratio = _metrics.Meter.CreateUpDownCounter<double>("wormhole_ratio");
        ratio.Add(0.5);
        ratio.Add(-1.25);

        var text = _exporter.Scrape();

        text.Should().Contain("wormhole_busy_seconds_total 1.75\n").And.Contain("wormhole_ratio -0.75\n");
    }

    [Fact]
    public void An_observable_gauge_is_read_at_scrape_time_and_only_reports_current_tag_sets()
    {
        var peers = new List<Measurement<long>> { new(3, new KeyValuePair<string, object?>("state", "online")) };
        _metrics.ObserveGauge("wormhole_peers", "Peers known.", () => peers.ToArray());

        _exporter.Scrape().Should().Contain("# TYPE wormhole_peers gauge\nwormhole_peers{state=\"online\"} 3\n");

        peers[0] = new(5, new KeyValuePair<string, object?>("state", "offline"));
        var second = _exporter.Scrape();

        second.Should().Contain("wormhole_peers{state=\"offline\"} 5\n");
        second.Should().NotContain("state=\"online\"");
    }

    [Fact]
    public void An_observable_counter_is_exported_as_a_counter()
    {
        _metrics.Meter.CreateObservableCounter("wormhole_ticks_total", () => 42L, description: "Ticks.");

        _exporter.Scrape().Should().Contain("# HELP wormhole_ticks_total Ticks.\n# TYPE wormhole_ticks_total counter\nwormhole_ticks_total 42\n");
    }

    [Fact]
    public void A_throwing_observable_callback_does_not_break_the_scrape()
    {
        _metrics.ObserveGauge("wormhole_broken", "Throws.", () => throw new InvalidOperationException("boom"));
        _metrics.SyncFailures.Add(1);

        _exporter.Scrape().Should().Contain("wormhole_sync_failures_total 1\n");
    }

    [Fact]
    public void Families_are_sorted_by_name_and_samples_by_label_set()
    {
        _metrics.PairingAttempts.Add(1, new KeyValuePair<string, object?>("outcome", "paired"));
        _metrics.PairingAttempts.Add(1, new KeyValuePair<string, object?>("outcome", "cached"));
        _metrics.PairingAttempts.Add(1, new KeyValuePair<string, object?>("outcome", "error"));

        var text = _exporter.Scrape();
        var names = text.Split('\n').Where(l => l.StartsWith("# TYPE ", StringComparison.Ordinal)).Select(l => l.Split(' ')[2]).ToList();

        names.Should().BeInAscendingOrder(StringComparer.Ordinal).And.OnlyHaveUniqueItems();
        Samples(text).Where(l => l.StartsWith("wormhole_pairing_attempts_total", StringComparison.Ordinal)).Should().Equal(
            "wormhole_pairing_attempts_total{outcome=\"cached\"} 1",
            "wormhole_pairing_attempts_total{outcome=\"error\"} 1",
            "wormhole_pairing_attempts_total{outcome=\"paired\"} 1");
        WithoutProcessMetrics(_exporter.Scrape()).Should().Be(WithoutProcessMetrics(text), "a second scrape renders identically");
    }

    [Fact]
    public void Label_names_are_sanitised_sorted_and_non_string_values_formatted_invariantly()
    {
        _metrics.SyncFailures.Add(1, new("reason", "timeout"), new("peer.id", 7), new("retry", true), new("ratio", 0.5));

        _exporter.Scrape().Should().Contain(
            "wormhole_sync_failures_total{peer_id=\"7\",ratio=\"0.5\",reason=\"timeout\",retry=\"true\"} 1\n");
    }

    [Fact]
    public void Only_the_meters_it_was_given_are_exported()
    {
        using var other = new WormholeMetrics(UniqueName());
        other.Meter.CreateCounter<long>("wormhole_elsewhere_total").Add(1);

        _exporter.Scrape().Should().NotContain("wormhole_elsewhere_total");
    }

    [Fact]
    public void Two_meters_with_the_same_name_produce_one_family_with_summed_samples()
    {
        using var twin = new WormholeMetrics(_meterName);
        _metrics.ProxyConnectionsTotal.Add(2);
        twin.ProxyConnectionsTotal.Add(3);

        var text = _exporter.Scrape();

        text.Split('\n').Count(l => l == "# TYPE wormhole_proxy_connections_total counter").Should().Be(1);
        text.Should().Contain("wormhole_proxy_connections_total 5\n");
    }

    [Fact]
    public void Standard_process_metrics_are_included()
    {
        var samples = Samples(_exporter.Scrape()).Select(l => l.Split(' ')).ToDictionary(p => p[0], p => double.Parse(p[1], System.Globalization.CultureInfo.InvariantCulture));

        samples["process_resident_memory_bytes"].Should().BePositive();
        samples["process_cpu_seconds_total"].Should().BePositive();
        samples["dotnet_gc_heap_bytes"].Should().BePositive();
        samples["process_start_time_seconds"].Should().BeInRange(
            DateTimeOffset.UtcNow.AddDays(-1).ToUnixTimeSeconds(), DateTimeOffset.UtcNow.ToUnixTimeSeconds() + 1);
        if (OperatingSystem.IsLinux())
        {
            samples["process_open_fds"].Should().BePositive();
        }
    }

    [Fact]
    public async Task Concurrent_increments_are_not_lost()
    {
        const int threads = 8, perThread = 10_000;

        await Task.WhenAll(Enumerable.Range(0, threads).Select(t => Task.Run(() =>
        {
            for (var i = 0; i < perThread; i++)
            {
                _metrics.ProxyBytes.Add(2, new("app", $"app{t % 2}"), new("direction", "upstream"));
            }
        })));

        var text = _exporter.Scrape();
        text.Should().Contain($"wormhole_proxy_bytes_total{{app=\"app0\",direction=\"upstream\"}} {threads / 2 * perThread * 2}\n");
        text.Should().Contain($"wormhole_proxy_bytes_total{{app=\"app1\",direction=\"upstream\"}} {threads / 2 * perThread * 2}\n");
    }

    [Fact]
    public void Recording_into_an_existing_series_does_not_allocate()
    {
        KeyValuePair<string, object?> app = new("app", "web"), kind = new("kind", "local"), direction = new("direction", "upstream");
        _metrics.ProxyBytes.Add(1, app, kind, direction);

        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < 1_000; i++)
        {
            _metrics.ProxyBytes.Add(1, app, kind, direction);
        }
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        allocated.Should().Be(0);
        _exporter.Scrape().Should().Contain("wormhole_proxy_bytes_total{app=\"web\",direction=\"upstream\",kind=\"local\"} 1001\n");
    }

    private static string WithoutProcessMetrics(string text) =>
        string.Join('\n', text.Split('\n').Where(l => !l.Contains("process_", StringComparison.Ordinal) && !l.Contains("dotnet_", StringComparison.Ordinal)));
}
