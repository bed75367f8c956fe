using System.Collections.Immutable;
using System.Net;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Kubernetes;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Runtime;

namespace Wormhole.Tunnel.Sources;

/// <summary>
/// The latest app list of every peer, with the time it was last confirmed. A peer whose syncs stop for the TTL has its
/// apps withdrawn (<see cref="Expire"/>); they return with its next sync.
/// A peer's list is kept up to <paramref name="maxAppsPerPeer"/> apps (the first by name; the number left out is kept
/// for the planner to report), so one peer's huge sync cannot hold memory beyond its quota.
/// </summary>
public sealed class RemoteAppStore(ReconcileSignal signal, TimeProvider time, int maxAppsPerPeer = int.MaxValue)
{
    private readonly Lock _lock = new();
    private ImmutableDictionary<string, Entry> _peers = ImmutableDictionary<string, Entry>.Empty.WithComparers(StringComparer.Ordinal);

    public IReadOnlyList<PeerApps> Snapshot()
    {
        var peers = _peers;
        return peers.Values.Select(e => e.Apps).ToList();
    }

    /// <summary>How many apps of <paramref name="peer"/> are kept (at most the quota); 0 for an unknown peer.</summary>
    public int CountOf(string peer) => _peers.TryGetValue(peer, out var entry) ? entry.Apps.Apps.Count : 0;

    /// <summary>Records a sync from <paramref name="peer"/>; requests a recompute when its apps changed.</summary>
    public void Update(string peer, IPAddress tunnelAddress, IReadOnlyList<AppDescriptor> apps)
    {
        var now = time.GetUtcNow();
        var dropped = 0;
        IEnumerable<AppDescriptor> kept = apps;
        if (apps.Count > maxAppsPerPeer)
        {
            // Distinct names first, so duplicates cannot push real apps out of the quota.
            var distinct = apps.DistinctBy(a => a.Name, StringComparer.Ordinal).OrderBy(a => a.Name, StringComparer.Ordinal).ToList();
            dropped = Math.Max(0, distinct.Count - maxAppsPerPeer);
            kept = distinct.Take(maxAppsPerPeer);
        }

        var normalized = kept.Select(a => a with { Peer = peer }).ToImmutableArray();
        bool changed;
        lock (_lock)
        {
            changed = !_peers.TryGetValue(peer, out var old)
                || !old.Apps.TunnelAddress.Equals(tunnelAddress)
                || old.Apps.Dropped != dropped
                || !old.Apps.Apps.SequenceEqual(normalized);
            _peers = _peers.SetItem(peer, new Entry(new PeerApps(peer, tunnelAddress, normalized) { Dropped = dropped }, now));
        }

        if (changed)
        {
            signal.Request();
        }
    }

    /// <summary>Marks the peer as alive without changing its apps (a long-poll that is still waiting).</summary>
    public void Touch(string peer)
    {
        lock (_lock)
        {
            if (_peers.TryGetValue(peer, out var entry))
            {
                _peers = _peers.SetItem(peer, entry with { LastSeen = time.GetUtcNow() });
            }
        }
    }

    public bool Remove(string peer)
    {
        bool removed;
        lock (_lock)
        {
            var before = _peers;
            _peers = _peers.Remove(peer);
            removed = !ReferenceEquals(before, _peers);
        }

        if (removed)
        {
            signal.Request();
        }

        return removed;
    }

    /// <summary>Withdraws the apps of peers not seen for <paramref name="ttl"/>; returns their names.</summary>
    public IReadOnlyList<string> Expire(TimeSpan ttl)
    {
        var cutoff = time.GetUtcNow() - ttl;
        var expired = _peers.Values.Where(e => e.LastSeen < cutoff).Select(e => e.Apps.Peer).ToList();
        foreach (var peer in expired)
        {
            lock (_lock)
            {
                if (_peers.TryGetValue(peer, out var e) && e.LastSeen < cutoff)
                {
                    _peers = _peers.Remove(peer);
                }
            }
        }

        if (expired.Count > 0)
        {
            signal.Request();
        }

        return expired;
    }

    private sealed record Entry(PeerApps Apps, DateTimeOffset LastSeen);
}
