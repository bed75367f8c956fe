// bench-metrics-hotpath: nanoseconds per call of what the proxy does for every chunk it moves (count bytes for an app,
// kind and direction), 20 million calls per round, the median of 5 rounds after one warm-up, on one thread:
//   native         the product: prometheus-net Counter.Child.Inc on the series a connection resolved once (ForApp)
//   meter-adapter  the alternative: System.Diagnostics.Metrics Counter<long>.Add with three tags, exported by
//                  prometheus-net's meter adapter into a registry of its own
//   no-listener    the same Counter<long>.Add with nothing listening (a floor, not an option: nothing is exported)
// Also: ForApp, once per accepted connection.
using System.Diagnostics;
using System.Diagnostics.Metrics;
using Prometheus;
using Wormhole.Tunnel.Metrics;

const int Calls = 20_000_000;

static double Measure(Action<int> calls)
{
    calls(Calls);
    var rounds = new List<double>();
    for (var round = 0; round < 5; round++)
    {
        var watch = Stopwatch.StartNew();
        calls(Calls);
        rounds.Add(watch.Elapsed.TotalNanoseconds / Calls);
    }

    rounds.Sort();
    return rounds[2];
}

var metrics = new WormholeMetrics();
var series = metrics.ForApp("web", "local");
Console.WriteLine($"native:        {Measure(n => { for (var i = 0; i < n; i++) { series.BytesUpstream.Inc(65536); } }):0.0} ns per call");

KeyValuePair<string, object?> app = new("app", "web"), kind = new("kind", "local"), up = new("direction", "upstream");
using (var meter = new Meter("bench.no-listener"))
{
    var bytes = meter.CreateCounter<long>("wormhole_proxy_bytes_total");
    Console.WriteLine($"no-listener:   {Measure(n => { for (var i = 0; i < n; i++) { bytes.Add(65536, app, kind, up); } }):0.0} ns per call");
}

using (var meter = new Meter("bench.meter-adapter"))
{
    var registry = Prometheus.Metrics.NewCustomRegistry();
    using var adapter = MeterAdapter.StartListening(new MeterAdapterOptions { Registry = registry, InstrumentFilterPredicate = i => i.Meter == meter });
    var bytes = meter.CreateCounter<long>("wormhole_proxy_bytes_total");
    Console.WriteLine($"meter-adapter: {Measure(n => { for (var i = 0; i < n; i++) { bytes.Add(65536, app, kind, up); } }):0.0} ns per call");
}

var perConnection = Stopwatch.StartNew();
for (var i = 0; i < 1_000_000; i++)
{
    metrics.ForApp("web", "local");
}

Console.WriteLine($"ForApp:        {perConnection.Elapsed.TotalNanoseconds / 1_000_000:0.0} ns per connection");
