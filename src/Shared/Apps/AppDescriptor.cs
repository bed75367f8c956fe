namespace Wormhole.Tunnel.Apps;

/// <summary>
/// An app as the sync protocol carries it (reference §3.2): one TCP port of one service.
/// For a local app, <see cref="Address"/> is where this side connects when a consumer comes in;
/// in a sync message it is the sender's tunnel address and local listener port.
/// </summary>
public sealed record AppDescriptor(string Name, string Address, string Peer, int OriginalPort, string TargetLabels = "")
{
    /// <summary>
    /// Not in the reference: <c>http</c> when the offering side marked the app HTTP (its consumers proxy it per request);
    /// null for a plain TCP app. Carried as the optional <c>protocol</c> field of a sync message's app, left out when null,
    /// so a message without HTTP apps is byte for byte the reference's. A value this side does not know is kept as sent
    /// (the planner serves such an app over TCP and says why).
    /// </summary>
    public string? Protocol { get; init; }

    /// <summary>Not in the reference: the path the consumers of an HTTP app probe (<c>healthPath</c>), or null.</summary>
    public string? HealthPath { get; init; }
}

/// <summary>HTTP mode of an app (<c>wormhole.glothriel.github.com/protocol=http</c>, <c>protocol: http</c> in an apps file).</summary>
public static class AppProtocol
{
    /// <summary>The one protocol value this side knows: the app speaks HTTP/1.1 or h2c.</summary>
    public const string Http = "http";

    /// <summary>The longest health path accepted.</summary>
    public const int MaxHealthPathLength = 256;

    /// <summary>Whether <paramref name="protocol"/> marks an app HTTP (<c>http</c>, any case).</summary>
    public static bool IsHttp(string? protocol) => string.Equals(protocol, Http, StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// A health path: an absolute path (optionally with a query) of at most <see cref="MaxHealthPathLength"/> visible
    /// ASCII characters — what can go into a request line as it is.
    /// </summary>
    public static bool IsValidHealthPath(string? path) =>
        path is { Length: > 0 and <= MaxHealthPathLength } && path[0] == '/' && !path.StartsWith("//", StringComparison.Ordinal)
        && path.All(c => c is > ' ' and < (char)127 && c != '#');
}
