namespace Wormhole.Tunnel.Proxy;

/// <summary>
/// Where each new connection of a listener with several upstreams goes (a global app's sites), and what became of
/// each attempt. The proxy asks for a site, connects, and reports: a site that refused or timed out is asked for
/// again with that site excluded, so the client sees no error while another site can take it.
/// </summary>
public interface IUpstreamPicker
{
    /// <summary>How long one connect attempt may take before the next site is tried.</summary>
    TimeSpan AttemptTimeout { get; }

    /// <summary>The site for the next attempt, or null when every site has been tried (bit i of <paramref name="tried"/>: site i).</summary>
    Upstream? Pick(ulong tried);

    /// <summary>The connect to <paramref name="site"/> worked; the connection is now open (until <see cref="Closed"/>).</summary>
    void Connected(Upstream site);

    /// <summary>A connection that <see cref="Connected"/> reported has ended.</summary>
    void Closed(Upstream site);

    /// <summary>The connect to <paramref name="site"/> was refused or timed out (<paramref name="reason"/> says which).</summary>
    void Failed(Upstream site, string reason);
}

/// <summary>
/// One upstream of a picker: where to connect, its index among the picker's sites (at most 64) when it was picked, its
/// name for logs, and the picker's own state of it (<paramref name="Tag"/>, opaque to the proxy).
/// </summary>
public sealed record Upstream(int Index, string Host, int Port, string Name, object? Tag = null);
