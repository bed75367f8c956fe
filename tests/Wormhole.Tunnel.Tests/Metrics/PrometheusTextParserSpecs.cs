using System.ComponentModel;
using System.Diagnostics;
using System.Text.Json;
using Wormhole.Tunnel.Metrics;
using static Wormhole.Tunnel.Tests.Metrics.MetricsTestMeter;

namespace Wormhole.Tunnel.Tests.Metrics;

/// <summary>
/// Feeds the exposition to the reference parser (Debian python3-prometheus-client) and compares what it reads
/// with what was recorded. Missing python/prometheus_client is a failure, not a skip: the test script installs it.
/// </summary>
public sealed class PrometheusTextParserSpecs
{
    private const string Python = "/usr/bin/python3";

    private const string ParseScript = """
        import sys, json
        from prometheus_client.parser import text_string_to_metric_families as parse
        print(json.dumps([{"name": f.name, "type": f.type, "help": f.documentation,
                           "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]}
                          for f in parse(sys.stdin.read())]))
        """;

    private sealed record Sample(string Name, Dictionary<string, string> Labels, double Value);

    private sealed record Family(string Name, string Type, string Help, List<Sample> Samples);

    [Fact]
    public async Task The_reference_parser_reads_back_exactly_what_was_recorded()
    {
        var metrics = new WormholeMetrics();
        const string weird = "we\"ird\\app\nline2";
        metrics.ForApp("web", "local").BytesUpstream.Inc(100);
        metrics.ForApp("web", "local").BytesUpstream.Inc(23);
        metrics.ForApp(weird, "remote").BytesDownstream.Inc(7);
        metrics.Pairing("paired", TimeSpan.FromMilliseconds(2));
        metrics.Pairing("paired", TimeSpan.FromMilliseconds(20));
        metrics.Pairing("key_mismatch");
        var web = metrics.ForApp("web", "local").ConnectionsActive;
        web.Inc(2);
        web.Dec();
        metrics.Peers.Set(3);
        metrics.Reconciled(TimeSpan.FromMilliseconds(3));

        var families = (await ParseWithPrometheusClient(await ScrapeAsync(metrics))).ToDictionary(f => f.Name);

        // The 0.0.4 parser names a counter family without its _total suffix; samples keep it.
        var bytes = families["wormhole_proxy_bytes"];
        bytes.Type.Should().Be("counter");
        bytes.Help.Should().Be("Bytes carried by the proxy, per app and direction.");
        bytes.Samples.Should().BeEquivalentTo(new[]
        {
            Counter("wormhole_proxy_bytes_total", 123, ("app", "web"), ("direction", "upstream"), ("kind", "local")),
            Counter("wormhole_proxy_bytes_total", 0, ("app", "web"), ("direction", "downstream"), ("kind", "local")),
            Counter("wormhole_proxy_bytes_total", 0, ("app", weird), ("direction", "upstream"), ("kind", "remote")),
            Counter("wormhole_proxy_bytes_total", 7, ("app", weird), ("direction", "downstream"), ("kind", "remote")),
        });
        families["wormhole_pairing_attempts"].Samples.Should().BeEquivalentTo(new[]
        {
            Counter("wormhole_pairing_attempts_total", 2, ("outcome", "paired")),
            Counter("wormhole_pairing_attempts_total", 1, ("outcome", "key_mismatch")),
        });
        families["wormhole_proxy_connections_active"].Type.Should().Be("gauge");
        families["wormhole_proxy_connections_active"].Samples.Should().ContainEquivalentOf(
            Counter("wormhole_proxy_connections_active", 1, ("app", "web"), ("kind", "local")));
        families["wormhole_peers"].Samples.Should().BeEquivalentTo(new[] { Counter("wormhole_peers", 3) });
        var pairing = families["wormhole_pairing_duration_seconds"];
        pairing.Type.Should().Be("histogram");
        pairing.Samples.Should().ContainEquivalentOf(Counter("wormhole_pairing_duration_seconds_count", 2, ("outcome", "paired")));
        pairing.Samples.Should().ContainEquivalentOf(Counter("wormhole_pairing_duration_seconds_bucket", 1, ("outcome", "paired"), ("le", "0.005")));
        pairing.Samples.Should().ContainEquivalentOf(Counter("wormhole_pairing_duration_seconds_bucket", 2, ("outcome", "paired"), ("le", "+Inf")));
        families["wormhole_reconcile_duration_seconds"].Samples.Should().ContainEquivalentOf(Counter("wormhole_reconcile_duration_seconds_count", 1));
        families["process_resident_memory_bytes"].Samples.Single().Value.Should().BePositive();
        families["process_cpu_seconds"].Type.Should().Be("counter");
    }

    private static Sample Counter(string name, double value, params (string Key, string Value)[] labels) =>
        new(name, labels.ToDictionary(l => l.Key, l => l.Value), value);

    private static async Task<List<Family>> ParseWithPrometheusClient(string exposition)
    {
        var start = new ProcessStartInfo(Python)
        {
            ArgumentList = { "-c", ParseScript },
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        Process process;
        try
        {
            process = Process.Start(start) ?? throw new InvalidOperationException("Process.Start returned null");
        }
        catch (Win32Exception e)
        {
            throw new InvalidOperationException($"{Python} could not be started ({e.Message}); install python3 and python3-prometheus-client.", e);
        }
        using (process)
        {
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            await process.StandardInput.WriteAsync(exposition);
            process.StandardInput.Close();
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await process.WaitForExitAsync(timeout.Token);
            var (output, errors) = (await stdout, await stderr);
            if (errors.Contains("ModuleNotFoundError", StringComparison.Ordinal))
            {
                Assert.Fail($"{Python} cannot import prometheus_client: run `apt-get install -y python3-prometheus-client`.\n{errors}");
            }
            process.ExitCode.Should().Be(0, $"the reference parser must accept the exposition.\nstderr:\n{errors}\nexposition:\n{exposition}");
            return JsonSerializer.Deserialize<List<Family>>(output, new JsonSerializerOptions(JsonSerializerDefaults.Web))!;
        }
    }
}
