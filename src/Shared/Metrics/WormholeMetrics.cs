using System.Collections.Concurrent;
using Prometheus;

namespace Wormhole.Tunnel.Metrics;

/// <summary>
/// Every metric one side (hub or spoke) reports, on its own prometheus-net <see cref="CollectorRegistry"/>: several sides
/// in one process (tests) never share a series. The native prometheus-net API rather than System.Diagnostics.Metrics
/// behind the meter adapter, because only the native API can remove a series: the app and peer label values present are
/// those of the current plan (<see cref="RetainApps"/>) and peer registry (<see cref="RetainPeers"/>).
/// docs/metrics.md describes each metric.
/// </summary>
public sealed class WormholeMetrics
{
    /// <summary>The app label value of apps beyond <see cref="MaxAppSeries"/>.</summary>
    public const string OtherApp = "_other";

    /// <summary>Distinct (app, kind) series a side keeps per proxy metric by default; the rest are summed in <see cref="OtherApp"/>.</summary>
    public const int DefaultMaxAppSeries = 100;

    /// <summary>One sync long-poll is held up to 25 s; the top buckets see it.</summary>
    internal static readonly double[] SyncBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30];

    /// <summary>A plan pass: pure planning plus the proxy table and, with Kubernetes, server-side applies.</summary>
    internal static readonly double[] ReconcileBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

    /// <summary>A TCP connect within a cluster or through the tunnel: well under a millisecond up to the 10 s connect timeout.</summary>
    internal static readonly double[] ConnectBuckets = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

    /// <summary>Pairing: a file write on the hub; on the spoke also the HTTP round trip and the WireGuard set-up (wg, ip).</summary>
    internal static readonly double[] PairingBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

    private static readonly string[] AppLabels = ["app", "kind"];

    private readonly ConcurrentDictionary<(string App, string Kind), AppSeries> _apps = new();
    private readonly Lock _appsLock = new();
    private int _ownSeries;
    private readonly Counter _proxyBytes;
    private readonly Counter _proxyConnectionsTotal;
    private readonly Gauge _proxyConnectionsActive;
    private readonly Counter _proxyUpstreamFailures;
    private readonly Histogram _upstreamConnect;
    private readonly Counter _syncRoundTrips;
    private readonly Counter _syncFailures;
    private readonly Histogram _syncDuration;
    private readonly Counter _pairingAttempts;
    private readonly Counter _retries;
    private readonly Histogram _pairingDuration;
    private readonly Histogram _reconcileDuration;
    private readonly Gauge _appsGauge;
    private readonly Gauge _globalSiteHealthy;
    private readonly Gauge _globalSiteConnections;

    /// <param name="registry">Where the metrics go; a new registry (with prometheus-net's process_* and dotnet_* metrics) when null.</param>
    /// <param name="maxAppSeries">Distinct (app, kind) series per proxy metric; more apps are summed under <see cref="OtherApp"/>.</param>
    public WormholeMetrics(CollectorRegistry? registry = null, int maxAppSeries = DefaultMaxAppSeries)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxAppSeries);
        MaxAppSeries = maxAppSeries;
        if (registry is null)
        {
            registry = Prometheus.Metrics.NewCustomRegistry();
            DotNetStats.Register(registry);
            ProcessExtras.Register(registry);
        }

        Registry = registry;
        var factory = Prometheus.Metrics.WithCustomRegistry(registry);
        var noExemplars = ExemplarBehavior.NoExemplars();
        Counter CreateCounter(string name, string help, params string[] labels) =>
            factory.CreateCounter(name, help, new CounterConfiguration { LabelNames = labels, ExemplarBehavior = noExemplars });
        Histogram CreateHistogram(string name, string help, double[] buckets, params string[] labels) =>
            factory.CreateHistogram(name, help, new HistogramConfiguration { LabelNames = labels, Buckets = buckets, ExemplarBehavior = noExemplars });

        _proxyConnectionsActive = factory.CreateGauge("wormhole_proxy_connections_active", "Proxied TCP connections open now.", AppLabels);
        _proxyConnectionsTotal = CreateCounter("wormhole_proxy_connections_total", "Proxied TCP connections accepted.", AppLabels);
        _proxyUpstreamFailures = CreateCounter("wormhole_proxy_upstream_failures_total", "Proxied connections whose upstream could not be reached.", AppLabels);
        _proxyBytes = CreateCounter("wormhole_proxy_bytes_total", "Bytes carried by the proxy, per app and direction.", "app", "kind", "direction");
        _upstreamConnect = CreateHistogram("wormhole_proxy_upstream_connect_duration_seconds",
            "Time the proxy took to connect to an app's target (successful connects).", ConnectBuckets, AppLabels);
        _syncRoundTrips = CreateCounter("wormhole_sync_round_trips_total", "Sync requests answered (hub) or completed (spoke).", "peer");
        _syncFailures = CreateCounter("wormhole_sync_failures_total", "Sync requests that failed.", "peer", "reason");
        _syncDuration = CreateHistogram("wormhole_sync_round_trip_duration_seconds",
            "Answered syncs: request to answer (spoke), handling (hub); a long-poll is held until a change or 25 s.", SyncBuckets, "peer");
        _pairingAttempts = CreateCounter("wormhole_pairing_attempts_total", "Pairing attempts by outcome.", "outcome");
        _retries = CreateCounter("wormhole_retries_total", "Calls to the outside retried, by operation (its retry schedule).", "operation");
        _pairingDuration = CreateHistogram("wormhole_pairing_duration_seconds",
            "Pairing: handling (hub), request to WireGuard configured and stored (spoke), by outcome.", PairingBuckets, "outcome");
        _reconcileDuration = CreateHistogram("wormhole_reconcile_duration_seconds",
            "One pass of the reconcile loop: plan, proxy listeners and the other sinks.", ReconcileBuckets);
        // Hub only: absent until the hub sets it (a spoke has no peer registry).
        Peers = factory.CreateGauge("wormhole_peers", "Paired peers.", new GaugeConfiguration { SuppressInitialValue = true });
        _appsGauge = factory.CreateGauge("wormhole_apps", "Apps by kind: local (offered here) and remote (exposed here).", "kind");
        _globalSiteHealthy = factory.CreateGauge(
            "wormhole_global_site_healthy", "Global services: 1 while a site of a global app takes new connections, 0 while it is down.",
            new GaugeConfiguration { LabelNames = ["app", "site"], SuppressInitialValue = true });
        _globalSiteConnections = factory.CreateGauge(
            "wormhole_global_site_connections_active", "Global services: connections open now through a global app's listener to a site.",
            new GaugeConfiguration { LabelNames = ["app", "site"], SuppressInitialValue = true });
        Http = new HttpMetrics(factory);
    }

    /// <summary>Per-request metrics of the HTTP listeners (apps marked HTTP).</summary>
    public HttpMetrics Http { get; }

    public CollectorRegistry Registry { get; }

    public int MaxAppSeries { get; }

    /// <summary>Hub only: set before each scrape (see <see cref="OnCollect"/>).</summary>
    public Gauge Peers { get; }

    /// <summary>Runs <paramref name="callback"/> before every scrape (gauges read from state, retention).</summary>
    public void OnCollect(Action callback) => Registry.AddBeforeCollectCallback(callback);

    /// <summary>Sets wormhole_apps.</summary>
    public void SetApps(int local, int remote)
    {
        _appsGauge.WithLabels("local").Set(local);
        _appsGauge.WithLabels("remote").Set(remote);
    }

    /// <summary>
    /// The series of one app (<paramref name="kind"/> local, remote or global), resolved once per proxied connection so the hot
    /// path only adds to a number. Beyond <see cref="MaxAppSeries"/> distinct apps, the shared <see cref="OtherApp"/> series.
    /// </summary>
    public AppSeries ForApp(string app, string kind)
    {
        if (_apps.TryGetValue((app, kind), out var series))
        {
            return series;
        }

        lock (_appsLock)
        {
            if (_apps.TryGetValue((app, kind), out series))
            {
                return series;
            }

            if (app == OtherApp || _ownSeries < MaxAppSeries)
            {
                series = new AppSeries(this, app, kind);
                _ownSeries += app == OtherApp ? 0 : 1;
            }
            else
            {
                series = ForOther(kind);
            }

            _apps[(app, kind)] = series;
            return series;
        }
    }

    /// <summary>
    /// Removes the series of every app not in <paramref name="current"/> (kind, app) — withdrawn apps leave the exposition.
    /// Apps of the plan beyond the cap share <see cref="OtherApp"/>, which goes too once no current app is folded into it.
    /// </summary>
    public void RetainApps(IEnumerable<(string Kind, string App)> current)
    {
        var keep = current.Select(c => (c.App, c.Kind)).ToHashSet();
        lock (_appsLock)
        {
            foreach (var key in _apps.Keys)
            {
                if (!keep.Contains(key) && key.App != OtherApp && _apps.TryRemove(key, out var gone) && gone.App != OtherApp)
                {
                    gone.Remove();
                    _ownSeries--;
                }
            }

            foreach (var kind in new[] { "local", "remote", "global" })
            {
                var folded = _apps.Any(e => e.Key.Kind == kind && e.Key.App != OtherApp && e.Value.App == OtherApp);
                if (!folded && !keep.Contains((OtherApp, kind)) && _apps.TryRemove((OtherApp, kind), out var other))
                {
                    other.Remove();
                }
            }
        }
    }

    /// <summary>
    /// Sets the global sites' series (global services) to <paramref name="sites"/> and removes those of sites and apps
    /// that are gone. The sites are paired peers and the apps the plan's, so their label values are bounded.
    /// </summary>
    public void SetGlobalSites(IReadOnlyCollection<(string App, string Site, bool Healthy, int Active)> sites)
    {
        var current = sites.Select(s => (s.App, s.Site)).ToHashSet();
        RemoveWhere(_globalSiteHealthy, labels => !current.Contains((labels[0], labels[1])));
        RemoveWhere(_globalSiteConnections, labels => !current.Contains((labels[0], labels[1])));
        foreach (var (app, site, healthy, active) in sites)
        {
            _globalSiteHealthy.WithLabels(app, site).Set(healthy ? 1 : 0);
            _globalSiteConnections.WithLabels(app, site).Set(active);
        }
    }

    /// <summary>
    /// Removes the sync series of peers not in <paramref name="current"/> (deleted or departed peers; the hub's
    /// <c>unknown</c> sender is kept).
    /// </summary>
    public void RetainPeers(IEnumerable<string> current)
    {
        var keep = current.Append(UnknownPeer).ToHashSet(StringComparer.Ordinal);
        RemoveWhere(_syncRoundTrips, labels => !keep.Contains(labels[0]));
        RemoveWhere(_syncFailures, labels => !keep.Contains(labels[0]));
        RemoveWhere(_syncDuration, labels => !keep.Contains(labels[0]));
    }

    /// <summary>The peer label of syncs from senders that are no paired peer.</summary>
    public const string UnknownPeer = "unknown";

    public void SyncAnswered(string peer, TimeSpan duration)
    {
        _syncRoundTrips.WithLabels(peer).Inc();
        _syncDuration.WithLabels(peer).Observe(duration.TotalSeconds);
    }

    /// <param name="reason">An HTTP status code, or <c>transport</c> when no answer came.</param>
    public void SyncFailed(string peer, string reason) => _syncFailures.WithLabels(peer, reason).Inc();

    /// <param name="outcome">paired, key_mismatch, bad_request, pool_exhausted, unavailable, error or cached.</param>
    public void Pairing(string outcome, TimeSpan? duration = null)
    {
        _pairingAttempts.WithLabels(outcome).Inc();
        if (duration is { } d)
        {
            _pairingDuration.WithLabels(outcome).Observe(d.TotalSeconds);
        }
    }

    /// <param name="operation">pairing, sync, sinks, kubernetes-watch or wireguard: names of this program's own schedules only.</param>
    public void Retried(string operation) => _retries.WithLabels(operation).Inc();

    public void Reconciled(TimeSpan duration) => _reconcileDuration.Observe(duration.TotalSeconds);

    private AppSeries ForOther(string kind) =>
        _apps.TryGetValue((OtherApp, kind), out var other) ? other : _apps[(OtherApp, kind)] = new AppSeries(this, OtherApp, kind);

    private static void RemoveWhere<TChild>(Collector<TChild> metric, Func<string[], bool> remove)
        where TChild : ChildBase
    {
        foreach (var labels in metric.GetAllLabelValues().ToList())
        {
            if (remove(labels))
            {
                metric.RemoveLabelled(labels);
            }
        }
    }

    /// <summary>The resolved series of one (app, kind): what a proxied connection records into.</summary>
    public sealed class AppSeries
    {
        private readonly WormholeMetrics _owner;

        internal AppSeries(WormholeMetrics owner, string app, string kind)
        {
            _owner = owner;
            App = app;
            Kind = kind;
            ConnectionsTotal = owner._proxyConnectionsTotal.WithLabels(app, kind);
            ConnectionsActive = owner._proxyConnectionsActive.WithLabels(app, kind);
            UpstreamFailures = owner._proxyUpstreamFailures.WithLabels(app, kind);
            BytesUpstream = owner._proxyBytes.WithLabels(app, kind, "upstream");
            BytesDownstream = owner._proxyBytes.WithLabels(app, kind, "downstream");
            UpstreamConnect = owner._upstreamConnect.WithLabels(app, kind);
        }

        /// <summary>The app label value: the app's name, or <see cref="OtherApp"/>.</summary>
        public string App { get; }

        public string Kind { get; }

        public Counter.Child ConnectionsTotal { get; }

        public Gauge.Child ConnectionsActive { get; }

        public Counter.Child UpstreamFailures { get; }

        /// <summary>Client → target.</summary>
        public Counter.Child BytesUpstream { get; }

        /// <summary>Target → client.</summary>
        public Counter.Child BytesDownstream { get; }

        public Histogram.Child UpstreamConnect { get; }

        internal void Remove()
        {
            _owner._proxyConnectionsTotal.RemoveLabelled(App, Kind);
            _owner._proxyConnectionsActive.RemoveLabelled(App, Kind);
            _owner._proxyUpstreamFailures.RemoveLabelled(App, Kind);
            _owner._proxyBytes.RemoveLabelled(App, Kind, "upstream");
            _owner._proxyBytes.RemoveLabelled(App, Kind, "downstream");
            _owner._upstreamConnect.RemoveLabelled(App, Kind);
        }
    }
}
