using System.Collections.Immutable;
using System.Net;
using Wormhole.Tunnel.Runtime;

namespace Wormhole.Tunnel.Sources;

/// <summary>A peer this side is paired with: its name, WireGuard key, tunnel address and, for a hub, where to dial it.</summary>
/// <param name="Endpoint">Where to send WireGuard packets (<c>host:port</c>), or null when the peer dials us (a spoke, seen from the hub).</param>
/// <param name="KeepaliveSeconds">WireGuard persistent keepalive towards this peer, or null for none.</param>
/// <param name="PresharedKey">This peer's own WireGuard preshared key (base64), or null for none.</param>
public sealed record PeerLink(string Name, string PublicKey, IPAddress Address, string? Endpoint = null, int? KeepaliveSeconds = null, string? PresharedKey = null)
{
    /// <summary>Never prints the preshared key.</summary>
    public override string ToString() =>
        $"PeerLink {{ Name = {Name}, PublicKey = {PublicKey}, Address = {Address}, Endpoint = {Endpoint}, KeepaliveSeconds = {KeepaliveSeconds}, PresharedKey = {(PresharedKey is null ? "none" : "(hidden)")} }}";
}

/// <summary>What a side knows of its tunnel: its own address (null until known) and the peers it is paired with.</summary>
public sealed record TunnelState(IPAddress? Address, ImmutableArray<PeerLink> Peers)
{
    public static readonly TunnelState Empty = new(null, []);

    /// <summary>
    /// Where the tunnel's peers send from (the hub: its whole pool; a spoke: the hub's address). Listeners meant for
    /// the outside refuse connections from it, whatever address of this side they were sent to through the tunnel.
    /// </summary>
    public IPNetwork? PeerNetwork { get; init; }
}

/// <summary>
/// The tunnel as a source of the plan. The hub sets its address at start and its peers from the pairing store after
/// every change; a spoke sets both from its pairing. Every change requests a recompute: the planner turns it into
/// the WireGuard peer set and the loop applies that.
/// </summary>
public sealed class TunnelSource(ReconcileSignal signal)
{
    private TunnelState _current = TunnelState.Empty;

    public TunnelState Current => Volatile.Read(ref _current);

    public void SetAddress(IPAddress address) => Set(Current with { Address = address });

    /// <summary>Sets this side's address and where its peers send from through the tunnel.</summary>
    public void SetAddress(IPAddress address, IPNetwork peerNetwork) => Set(Current with { Address = address, PeerNetwork = peerNetwork });

    public void SetPeers(IEnumerable<PeerLink> peers) => Set(Current with { Peers = [.. peers] });

    public void Set(TunnelState state)
    {
        Volatile.Write(ref _current, state);
        signal.Request();
    }
}
