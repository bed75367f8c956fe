using System.Collections.Concurrent;
using Prometheus;

namespace Wormhole.Tunnel.Metrics;

/// <summary>
/// Per-request metrics of the HTTP listeners (apps marked <c>protocol=http</c>): requests by status class, latency and
/// failed attempts per site, retries. Label values are bounded as the proxy's are: <c>app</c> and <c>site</c> come from
/// peers, so at most <see cref="MaxSeries"/> distinct (app, kind, site) triples get series of their own; the rest are
/// summed under <c>app="_other", site="_other"</c>. Series of listeners that are gone are removed
/// (<see cref="Retain"/>). docs/metrics.md describes each metric.
/// </summary>
public sealed class HttpMetrics
{
    /// <summary>Distinct (app, kind, site) series kept; beyond them, <see cref="WormholeMetrics.OtherApp"/>.</summary>
    public const int MaxSeries = 100;

    /// <summary>The site label of requests no site answered (none reachable, or none left to try).</summary>
    public const string NoSite = "none";

    /// <summary>A request through the tunnel: well under a millisecond to a long download or a slow backend.</summary>
    internal static readonly double[] DurationBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

    private static readonly string[] Classes = ["1xx", "2xx", "3xx", "4xx", "5xx"];

    private readonly ConcurrentDictionary<(string App, string Kind, string Site), Series> _series = new();
    private readonly Lock _lock = new();
    private readonly Counter _requests;
    private readonly Histogram _duration;
    private readonly Counter _failures;
    private readonly Counter _retries;
    private int _own;

    internal HttpMetrics(MetricFactory factory)
    {
        var noExemplars = ExemplarBehavior.NoExemplars();
        _requests = factory.CreateCounter("wormhole_http_requests_total",
            "Requests through the HTTP listeners, by the site that answered and the status class sent to the client.",
            new CounterConfiguration { LabelNames = ["app", "kind", "site", "code"], ExemplarBehavior = noExemplars });
        _duration = factory.CreateHistogram("wormhole_http_request_duration_seconds",
            "Requests through the HTTP listeners that a site answered: from the request's arrival to the end of the response.",
            new HistogramConfiguration { LabelNames = ["app", "kind", "site"], Buckets = DurationBuckets, ExemplarBehavior = noExemplars });
        _failures = factory.CreateCounter("wormhole_http_upstream_failures_total",
            "Attempts of the HTTP listeners that failed before a site's response began (refused, timed out, reset, site marked down).",
            new CounterConfiguration { LabelNames = ["app", "kind", "site"], ExemplarBehavior = noExemplars });
        _retries = factory.CreateCounter("wormhole_http_retries_total",
            "Idempotent requests sent again to another site after the first failed before a response began.",
            new CounterConfiguration { LabelNames = ["app", "kind"], ExemplarBehavior = noExemplars });
    }

    /// <summary>The series of one site of one listener (resolved once per request).</summary>
    public Series For(string app, string kind, string site)
    {
        if (_series.TryGetValue((app, kind, site), out var series))
        {
            return series;
        }

        lock (_lock)
        {
            if (_series.TryGetValue((app, kind, site), out series))
            {
                return series;
            }

            if (_own < MaxSeries)
            {
                series = new Series(this, app, kind, site);
                _own++;
            }
            else
            {
                series = _series.GetOrAdd((WormholeMetrics.OtherApp, kind, WormholeMetrics.OtherApp), k => new Series(this, k.App, k.Kind, k.Site));
            }

            _series[(app, kind, site)] = series;
            return series;
        }
    }

    /// <summary>Counts one request sent again to another site.</summary>
    public void Retried(string app, string kind) => _retries.WithLabels(For(app, kind, NoSite).App, kind).Inc();

    /// <summary>Removes the series of every (app, kind, site) not in <paramref name="current"/>: listeners and sites that are gone.</summary>
    public void Retain(IEnumerable<(string App, string Kind, string Site)> current)
    {
        var keep = current.Concat(current.Select(c => (c.App, c.Kind, NoSite))).ToHashSet();
        lock (_lock)
        {
            foreach (var (key, series) in _series)
            {
                if (keep.Contains(key) || key.App == WormholeMetrics.OtherApp)
                {
                    continue;
                }

                _series.TryRemove(key, out _);
                if (ReferenceEquals(series.App, key.App) || series.App == key.App)
                {
                    series.Remove();
                    _own--;
                }
            }

            var folded = _series.Any(e => e.Key.App != WormholeMetrics.OtherApp && e.Value.App == WormholeMetrics.OtherApp);
            if (!folded)
            {
                foreach (var key in _series.Keys.Where(k => k.App == WormholeMetrics.OtherApp).ToList())
                {
                    _series.TryRemove(key, out var other);
                    other!.Remove();
                }
            }
        }

        foreach (var labels in _retries.GetAllLabelValues().ToList())
        {
            if (labels[0] != WormholeMetrics.OtherApp && !keep.Any(k => k.App == labels[0] && k.Kind == labels[1]))
            {
                _retries.RemoveLabelled(labels);
            }
        }
    }

    /// <summary>What one request records into.</summary>
    public sealed class Series
    {
        private readonly HttpMetrics _owner;
        private readonly Counter.Child?[] _codes = new Counter.Child?[Classes.Length];

        internal Series(HttpMetrics owner, string app, string kind, string site)
        {
            _owner = owner;
            App = app;
            Kind = kind;
            Site = site;
            Duration = owner._duration.WithLabels(app, kind, site);
            Failures = owner._failures.WithLabels(app, kind, site);
        }

        public string App { get; }

        public string Kind { get; }

        public string Site { get; }

        public Histogram.Child Duration { get; }

        public Counter.Child Failures { get; }

        /// <summary>Counts a request answered with <paramref name="status"/> (its class; 100-599).</summary>
        public void Answered(int status)
        {
            var i = Math.Clamp((status / 100) - 1, 0, Classes.Length - 1);
            (_codes[i] ??= _owner._requests.WithLabels(App, Kind, Site, Classes[i])).Inc();
        }

        internal void Remove()
        {
            foreach (var code in Classes)
            {
                _owner._requests.RemoveLabelled(App, Kind, Site, code);
            }

            _owner._duration.RemoveLabelled(App, Kind, Site);
            _owner._failures.RemoveLabelled(App, Kind, Site);
        }
    }
}
