using System.Net;

namespace Wormhole.Tunnel.Proxy;

/// <summary>Local: tunnel side, forwards to an app target. Remote: forwards to a peer's tunnel address. Global: forwards
/// to one of several peers' tunnel addresses, as its <see cref="ListenerSpec.Picker"/> says.</summary>
public enum ListenerKind { Local, Remote, Global }

/// <summary>One TCP listener of the in-process L4 proxy, keyed by <see cref="BindAddress"/> + <see cref="Port"/>.</summary>
/// <param name="BindAddress">For Local, the tunnel IP; for Remote, <see cref="IPAddress.Any"/>.</param>
/// <param name="TargetHost">A host name or an IP literal; resolved again for every connection.</param>
/// <param name="RefusedLocalAddress">When set, a connection whose local (destination) address equals it is closed at once
/// (Remote listeners refuse connections that arrive over the tunnel address).</param>
/// <param name="RefusedSourceNetwork">When set, a connection from an address in it is closed at once: remote listeners
/// refuse the tunnel's peers, which could otherwise reach them through the tunnel at any other address of this side.</param>
/// <param name="Picker">When set, each connection's target comes from it instead of <see cref="TargetHost"/> and
/// <see cref="TargetPort"/> (which then only name the listener in logs): an attempt that is refused or passes the
/// picker's attempt timeout is reported and the next site it picks is tried, within <see cref="ProxyOptions.ConnectTimeout"/>.</param>
public sealed record ListenerSpec(
    ListenerKind Kind,
    string App,
    IPAddress BindAddress,
    int Port,
    string TargetHost,
    int TargetPort,
    IPAddress? RefusedLocalAddress = null,
    IPNetwork? RefusedSourceNetwork = null,
    IUpstreamPicker? Picker = null)
{
    /// <summary>The metrics' <c>kind</c> label of its connections.</summary>
    public string KindLabel => Kind switch { ListenerKind.Local => "local", ListenerKind.Remote => "remote", _ => "global" };

    /// <summary>Whether a connection from <paramref name="remote"/> that arrived at <paramref name="local"/> is refused.</summary>
    public bool Refuses(IPAddress local, IPAddress remote)
    {
        static IPAddress Plain(IPAddress a) => a.IsIPv4MappedToIPv6 ? a.MapToIPv4() : a;
        return (RefusedLocalAddress is { } refused && Plain(local).Equals(refused))
            || (RefusedSourceNetwork is { } network && network.Contains(Plain(remote)));
    }
}

public sealed record ListenerFailure(ListenerSpec Spec, string Reason);

/// <summary>How proxied bytes are moved.</summary>
public enum ProxyEngine
{
    /// <summary>Splice where the platform allows it (Linux on x64/arm64), else sockets.</summary>
    Auto,

    /// <summary>A few epoll event-loop threads: small messages by recv/send through each loop's scratch buffer, bulk by
    /// splice(2) between the sockets (no copies through user space); no buffer per idle connection. Linux only.</summary>
    Splice,

    /// <summary>Two copy loops per connection over .NET's async sockets, with <see cref="ProxyOptions.BufferSize"/> buffers.</summary>
    Sockets,
}

public sealed class ProxyOptions
{
    public ProxyEngine Engine { get; set; } = ProxyEngine.Auto;

    /// <summary>No bytes in either direction for this long closes the connection (nginx's proxy_timeout).
    /// <see cref="Timeout.InfiniteTimeSpan"/> disables it.</summary>
    public TimeSpan IdleTimeout { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>Name resolution plus TCP connect to the target; past it the client is closed.</summary>
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Copy buffer per direction (rented from the shared ArrayPool) of the <see cref="ProxyEngine.Sockets"/> engine.</summary>
    public int BufferSize { get; set; } = 64 * 1024;
}

public interface IProxyTable : IAsyncDisposable
{
    /// <summary>
    /// Makes the set of listeners exactly <paramref name="desired"/> (keyed by BindAddress+Port). New ones are bound,
    /// missing ones are closed (their listening socket released at once and their open connections closed), ones whose
    /// target changed keep their socket and use the new target for new connections. Returns the specs that could not be
    /// bound (e.g. address in use); never throws for one bad spec. Calls are serialised.
    /// </summary>
    Task<IReadOnlyList<ListenerFailure>> ApplyAsync(IReadOnlyCollection<ListenerSpec> desired, CancellationToken cancellationToken);

    /// <summary>The listeners bound by the last completed <see cref="ApplyAsync"/>.</summary>
    IReadOnlyCollection<ListenerSpec> Active { get; }
}
