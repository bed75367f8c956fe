using System.Diagnostics.Metrics;

namespace Wormhole.Tunnel.Metrics;

/// <summary>
/// Every instrument Wormhole.Tunnel reports, on one <see cref="Meter"/> named <see cref="MeterName"/>.
/// The Prometheus exporter turns them into text; nothing else reads them.
/// Names follow Prometheus conventions already (the exporter only replaces '.' with '_').
/// </summary>
public sealed class WormholeMetrics : IDisposable
{
    public const string MeterName = "Wormhole.Tunnel";

    private readonly Meter _meter;

    public WormholeMetrics(IMeterFactory? factory = null)
        : this(MeterName, factory)
    {
    }

    /// <summary>Same instruments on a meter with another name (tests use a unique name each, so parallel tests don't mix).</summary>
    public WormholeMetrics(string meterName, IMeterFactory? factory = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(meterName);
        _meter = factory?.Create(meterName) ?? new Meter(meterName);
        ProxyConnectionsActive = _meter.CreateUpDownCounter<long>(
            "wormhole_proxy_connections_active", description: "Proxied TCP connections open now.");
        ProxyConnectionsTotal = _meter.CreateCounter<long>(
            "wormhole_proxy_connections_total", description: "Proxied TCP connections accepted.");
        ProxyConnectionFailures = _meter.CreateCounter<long>(
            "wormhole_proxy_upstream_failures_total", description: "Proxied connections whose upstream could not be reached.");
        ProxyBytes = _meter.CreateCounter<long>(
            "wormhole_proxy_bytes_total", unit: "bytes", description: "Bytes carried by the proxy, per app and direction.");
        SyncRoundTrips = _meter.CreateCounter<long>(
            "wormhole_sync_round_trips_total", description: "Sync requests answered (hub) or completed (spoke).");
        SyncFailures = _meter.CreateCounter<long>(
            "wormhole_sync_failures_total", description: "Sync requests that failed.");
        Retries = _meter.CreateCounter<long>(
            "wormhole_retries_total", description: "Calls to the outside retried (pairing, sync, sinks, kubernetes-watch, wireguard), per operation.");
        PairingAttempts = _meter.CreateCounter<long>(
            "wormhole_pairing_attempts_total", description: "Pairing attempts by outcome.");
    }

    /// <summary>Tags: app, kind (local|remote).</summary>
    public UpDownCounter<long> ProxyConnectionsActive { get; }

    /// <summary>Tags: app, kind (local|remote).</summary>
    public Counter<long> ProxyConnectionsTotal { get; }

    /// <summary>Tags: app, kind (local|remote).</summary>
    public Counter<long> ProxyConnectionFailures { get; }

    /// <summary>Tags: app, kind (local|remote), direction (upstream = client→target, downstream = target→client).</summary>
    public Counter<long> ProxyBytes { get; }

    /// <summary>Tags: peer.</summary>
    public Counter<long> SyncRoundTrips { get; }

    /// <summary>Tags: peer, reason.</summary>
    public Counter<long> SyncFailures { get; }

    /// <summary>Tags: operation (the retry schedule's name).</summary>
    public Counter<long> Retries { get; }

    /// <summary>Tags: outcome (paired|key_mismatch|bad_request|pool_exhausted|error|cached).</summary>
    public Counter<long> PairingAttempts { get; }

    /// <summary>Registers a gauge read at scrape time (peers, apps).</summary>
    public void ObserveGauge(string name, string description, Func<IEnumerable<Measurement<long>>> observe) =>
        _meter.CreateObservableGauge(name, observe, description: description);

    public Meter Meter => _meter;

    public void Dispose() => _meter.Dispose();
}
