using System.Collections.Immutable;
using System.Net;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Sources;
using Wormhole.Tunnel.WireGuard;

namespace Wormhole.Tunnel.Planning;

/// <summary>An app this side offers: where to connect when a consumer comes in through the tunnel.</summary>
public sealed record LocalApp(string Name, string TargetHost, int TargetPort, int OriginalPort, string TargetLabels = "")
{
    /// <summary>Set when the app is marked HTTP: its consumers proxy it per request (its listener here stays TCP).</summary>
    public HttpMode? Http { get; init; }
}

/// <summary>
/// HTTP mode of an app or a listener: the consuming listener is an HTTP reverse proxy (per-request balancing, HTTP
/// health checks of <paramref name="HealthPath"/>, retries) instead of a TCP pipe. Null health path: sites are
/// probed with a TCP connect, as for TCP apps.
/// </summary>
public sealed record HttpMode(string? HealthPath)
{
    public static readonly HttpMode NoHealthPath = new((string?)null);
}

/// <summary>The apps one peer advertised in its latest sync, and the tunnel address they are reached at.</summary>
public sealed record PeerApps(string Peer, IPAddress TunnelAddress, IReadOnlyList<AppDescriptor> Apps)
{
    /// <summary>Apps of the sync not kept because the peer sent more than its quota (the store keeps the first by name).</summary>
    public int Dropped { get; init; }
}

/// <summary>What one peer may take on this side. Every peer gets the same quotas; ports are shared fairly on top.</summary>
/// <param name="MaxAppsPerPeer">Apps exposed per peer; beyond it the rest (by name order) are left out with one problem.</param>
/// <param name="MaxMetadataBytes">Largest sync metadata (compact JSON) accepted from one peer.</param>
/// <param name="MaxAppNameLength">Longest app name accepted from a peer.</param>
public sealed record PeerQuotas(int MaxAppsPerPeer, int MaxMetadataBytes, int MaxAppNameLength)
{
    public static readonly PeerQuotas Default = new(1000, 16 * 1024, 253);

    /// <summary>Problems reported per peer and pass; beyond it one line says how many more.</summary>
    public const int MaxProblemsPerPeer = 20;
}

public sealed record PortRange(int First, int Last)
{
    public static readonly PortRange Local = new(20000, 24999);
    public static readonly PortRange Remote = new(25001, 29999);

    public bool Contains(int port) => port >= First && port <= Last;
}

public sealed record PlanInput(
    string SelfName,
    IPAddress? TunnelAddress,
    IReadOnlyList<LocalApp> LocalApps,
    IReadOnlyList<PeerApps> RemoteApps,
    PortRange LocalPorts,
    PortRange RemotePorts,
    IReadOnlySet<int>? UnusablePorts = null)
{
    /// <summary>Whether this side consumes every app name its peers offer through one global listener too, and in what order of sites.</summary>
    public GlobalServicesOptions GlobalServices { get; init; } = GlobalServicesOptions.Off;

    /// <summary>The peers this side is paired with (the tunnel source): the planner makes them the WireGuard peer set.</summary>
    public IReadOnlyList<PeerLink> Peers { get; init; } = [];

    /// <summary>Where the tunnel's peers send from (see <see cref="TunnelState.PeerNetwork"/>).</summary>
    public IPNetwork? TunnelPeerNetwork { get; init; }

    /// <summary>What one peer may take (apps, name lengths); remote ports are shared fairly among peers on top.</summary>
    public PeerQuotas Quotas { get; init; } = PeerQuotas.Default;

    /// <summary>
    /// Listeners the proxy could not open in this pass, by app (local) or by (peer, app) (remote), with the reason: the
    /// planner leaves them out (not listened on, not advertised) with that reason as a problem. The next pass tries them
    /// again on other ports (their failed ports are in <see cref="UnusablePorts"/>).
    /// </summary>
    public IReadOnlyDictionary<ListenerKey, string>? Unavailable { get; init; }
}

/// <summary>Which listener: a local app (<paramref name="Peer"/> null), a peer's app, or the global listener of an app name.</summary>
public readonly record struct ListenerKey(string? Peer, string App, bool Global = false);

/// <summary>A listener on the tunnel address for one local app.</summary>
public sealed record LocalListener(string App, int Port, string TargetHost, int TargetPort);

/// <summary>A listener on every non-tunnel interface for one remote app, forwarding to the peer's tunnel listener.</summary>
public sealed record RemoteListener(string Peer, string App, int Port, IPAddress PeerAddress, int PeerPort, int OriginalPort, string TargetLabels)
{
    /// <summary>Set when the peer marked the app HTTP: the listener is an HTTP reverse proxy, not a TCP pipe.</summary>
    public HttpMode? Http { get; init; }
}

public sealed record PlanProblem(string Peer, string App, string Reason);

/// <summary>The whole desired state of one side, built by <see cref="Planner.Build"/>.</summary>
/// <param name="ReportedPeers">
/// The peers whose app lists are known (they have synced, with zero apps too; ordinal order): for these,
/// <see cref="RemoteListeners"/> is exactly what they offer, so whatever of theirs it lacks is withdrawn for certain.
/// </param>
public sealed record Plan(
    ImmutableArray<LocalListener> LocalListeners,
    ImmutableArray<RemoteListener> RemoteListeners,
    ImmutableArray<AppDescriptor> Advertised,
    ImmutableArray<PlanProblem> Problems,
    ImmutableArray<string> ReportedPeers)
{
    public static readonly Plan Empty = new([], [], [], [], []);

    /// <summary>
    /// The WireGuard peers the interface must have, exactly (ordered by key): one per paired peer, routing its tunnel
    /// address to it. Null while this side has no tunnel address (a spoke before pairing: no interface to apply it to).
    /// </summary>
    public WireGuardPlan? WireGuard { get; init; }

    /// <summary>
    /// With global services on: one listener per app name that one or more peers offer, balancing new connections
    /// over the sites that offer it (ordinal order of app names). Empty otherwise.
    /// </summary>
    public ImmutableArray<GlobalListener> GlobalListeners { get; init; } = [];

    /// <summary>This side's tunnel address: local listeners bind to it. Null until known (a spoke before pairing).</summary>
    public IPAddress? TunnelAddress { get; init; }

    /// <summary>Where the tunnel's peers send from: remote listeners refuse connections from it.</summary>
    public IPNetwork? TunnelPeerNetwork { get; init; }

    /// <summary>The names of the peers this side is paired with (ordinal order), whether or not they have synced.</summary>
    public ImmutableArray<string> PairedPeers { get; init; } = [];

    /// <summary>Remote apps as /api/apps/v1 shows them without Kubernetes: <c>localhost:&lt;listener port&gt;</c>.</summary>
    public IEnumerable<AppDescriptor> Exposed =>
        RemoteListeners.Select(l => new AppDescriptor(l.App, AppAddress.Format("localhost", l.Port), l.Peer, l.OriginalPort, l.TargetLabels));
}

/// <summary>The WireGuard part of a plan: the interface's whole peer set.</summary>
public sealed record WireGuardPlan(ImmutableArray<WgPeer> Peers)
{
    /// <summary>Whether both sets hold the same peers with the same settings (records compare lists by reference).</summary>
    public bool SameAs(WireGuardPlan? other) =>
        other is not null && Peers.Length == other.Peers.Length && Peers.Zip(other.Peers).All(p => p.First.SameAs(p.Second));
}

/// <summary>
/// Global services (<c>--global-services</c>): every app name one or more peers offer also gets one listener here that
/// sends each new connection to a healthy site. <paramref name="Priorities"/>, by app name, lists peers to prefer in
/// that order (<c>--global-priority web=site-a,site-b</c>); the sites not listed come after them, by name.
/// </summary>
public sealed record GlobalServicesOptions(bool Enabled, IReadOnlyDictionary<string, IReadOnlyList<string>> Priorities)
{
    public static readonly GlobalServicesOptions Off = new(false, new Dictionary<string, IReadOnlyList<string>>());

    /// <summary>Never prints more than the shape (the dictionary's own ToString is its type name).</summary>
    public override string ToString() =>
        Enabled ? $"on ({string.Join("; ", Priorities.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => $"{p.Key}={string.Join(',', p.Value)}"))})" : "off";
}

/// <summary>One site of a global app: a peer that offers the app, at its tunnel address and tunnel listener port.</summary>
/// <param name="Priority">0 for the most preferred site; sites of equal priority share the load.</param>
public sealed record GlobalSite(string Peer, IPAddress Address, int Port, int Priority);

/// <summary>The global listener of one app name: its port here, the port its Service shows, and its sites in order of preference.</summary>
public sealed record GlobalListener(string App, int Port, int OriginalPort, ImmutableArray<GlobalSite> Sites)
{
    /// <summary>Set when every site marks the app HTTP: the listener balances each request, not each connection.</summary>
    public HttpMode? Http { get; init; }

    /// <summary>Whether both have the same port, sites and mode (records compare arrays by reference).</summary>
    public bool SameAs(GlobalListener other) =>
        other is not null && App == other.App && Port == other.Port && OriginalPort == other.OriginalPort && Sites.SequenceEqual(other.Sites)
        && Equals(Http, other.Http);
}
