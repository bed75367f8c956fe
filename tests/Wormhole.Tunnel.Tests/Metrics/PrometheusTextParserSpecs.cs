using System.ComponentModel;
using System.Diagnostics;
using System.Diagnostics.Metrics;
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
        var meterName = UniqueName();
        using var metrics = new WormholeMetrics(meterName);
        using var exporter = new PrometheusExporter(meterName);
        const string weird = "we\"ird\\app\nline2";
        metrics.ProxyBytes.Add(100, new("app", "web"), new("kind", "local"), new("direction", "upstream"));
        metrics.ProxyBytes.Add(23, new("direction", "upstream"), new("app", "web"), new("kind", "local"));
        metrics.ProxyBytes.Add(7, new("app", weird), new("kind", "remote"), new("direction", "downstream"));
        metrics.PairingAttempts.Add(1, new KeyValuePair<string, object?>("outcome", "paired"));
        metrics.PairingAttempts.Add(1, new KeyValuePair<string, object?>("outcome", "paired"));
        metrics.PairingAttempts.Add(1, new KeyValuePair<string, object?>("outcome", "key_mismatch"));
        KeyValuePair<string, object?>[] web = [new("app", "web"), new("kind", "local")];
        metrics.ProxyConnectionsActive.Add(2, web);
        metrics.ProxyConnectionsActive.Add(-1, web);
        metrics.ProxyConnectionsActive.Add(1, new("app", "db"), new("kind", "remote"));
        metrics.ProxyConnectionsActive.Add(-1, new("app", "db"), new("kind", "remote"));
        metrics.ObserveGauge("wormhole_peers", "Peers known.\nSecond line with a \\ backslash.", () =>
            [new(3, new KeyValuePair<string, object?>("state", "online")), new(1, new KeyValuePair<string, object?>("state", "offline"))]);
        var seconds = metrics.Meter.CreateCounter<double>("wormhole.busy.seconds", description: "Busy time.");
        seconds.Add(1.5);
        seconds.Add(0.25);

        var families = (await ParseWithPrometheusClient(exporter.Scrape())).ToDictionary(f => f.Name);

        // The 0.0.4 parser names a counter family without its _total suffix; samples keep it.
        var bytes = families["wormhole_proxy_bytes"];
        bytes.Type.Should().Be("counter");
        bytes.Help.Should().Be("Bytes carried by the proxy, per app and direction.");
        bytes.Samples.Should().BeEquivalentTo(new[]
        {
            Counter("wormhole_proxy_bytes_total", 123, ("app", "web"), ("direction", "upstream"), ("kind", "local")),
            Counter("wormhole_proxy_bytes_total", 7, ("app", weird), ("direction", "downstream"), ("kind", "remote")),
        });
        families["wormhole_pairing_attempts"].Samples.Should().BeEquivalentTo(new[]
        {
            Counter("wormhole_pairing_attempts_total", 2, ("outcome", "paired")),
            Counter("wormhole_pairing_attempts_total", 1, ("outcome", "key_mismatch")),
        });
        families["wormhole_proxy_connections_active"].Type.Should().Be("gauge");
        families["wormhole_proxy_connections_active"].Samples.Should().BeEquivalentTo(new[]
        {
            Counter("wormhole_proxy_connections_active", 1, ("app", "web"), ("kind", "local")),
            Counter("wormhole_proxy_connections_active", 0, ("app", "db"), ("kind", "remote")),
        });
        families["wormhole_peers"].Type.Should().Be("gauge");
        families["wormhole_peers"].Help.Should().Be("Peers known.\nSecond line with a \\ backslash.");
        families["wormhole_peers"].Samples.Should().BeEquivalentTo(new[]
        {
            Counter("wormhole_peers", 3, ("state", "online")),
            Counter("wormhole_peers", 1, ("state", "offline")),
        });
        families["wormhole_busy_seconds"].Samples.Should().BeEquivalentTo(new[] { Counter("wormhole_busy_seconds_total", 1.75) });
        families["wormhole_sync_round_trips"].Samples.Should().BeEquivalentTo(new[] { Counter("wormhole_sync_round_trips_total", 0) },
            "an instrument with no measurements is still listed");
        families["process_resident_memory_bytes"].Samples.Single().Value.Should().BePositive();
        families["process_cpu_seconds"].Type.Should().Be("counter");
        families.Values.Should().OnlyContain(f => f.Type == "counter" || f.Type == "gauge", "every family declares its TYPE");
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
