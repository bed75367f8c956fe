using System.Net;
using Wormhole.Tunnel.Planning;

namespace Wormhole.Tunnel.HttpProxy;

/// <summary>
/// One HTTP listener: a remote app of one peer (<see cref="Site"/> set) or the global listener of an app name (requests
/// go to the sites <see cref="Global.GlobalSites"/> holds for it). Keyed by <see cref="Port"/>; connections from
/// <see cref="RefusedSourceNetwork"/> (the tunnel's peers) or arriving at <see cref="RefusedLocalAddress"/> (this side's
/// tunnel address) are closed at once, as the L4 listeners of remote apps do.
/// </summary>
public sealed record HttpListenerSpec(
    ListenerKey Key,
    IPAddress BindAddress,
    int Port,
    HttpSite? Site,
    HttpMode Mode,
    IPAddress? RefusedLocalAddress = null,
    IPNetwork? RefusedSourceNetwork = null)
{
    public string App => Key.App;

    /// <summary>The <c>kind</c> label of its metrics: <c>remote</c> or <c>global</c>.</summary>
    public string Kind => Key.Global ? "global" : "remote";

    /// <summary>Whether a connection from <paramref name="remote"/> that arrived at <paramref name="local"/> is refused.</summary>
    public bool Refuses(IPAddress local, IPAddress remote)
    {
        static IPAddress Plain(IPAddress a) => a.IsIPv4MappedToIPv6 ? a.MapToIPv4() : a;
        return (RefusedLocalAddress is { } refused && Plain(local).Equals(refused))
            || (RefusedSourceNetwork is { } network && network.Contains(Plain(remote)));
    }
}

/// <summary>The one site of a per-peer HTTP listener: the peer's tunnel listener of the app.</summary>
public sealed record HttpSite(string Peer, IPAddress Address, int Port)
{
    /// <summary>The URL prefix requests are forwarded to (<c>http://10.188.0.2:20000</c>).</summary>
    public string Prefix { get; } = $"http://{Apps.AppAddress.Format(Address.ToString(), Port)}";
}
