using System.Net;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Logging;

namespace Wormhole.Tunnel.Hosting;

/// <summary>
/// Guards one listener meant for the outside (pairing, admin API, metrics) at the connection level, before any byte
/// is read: a connection from the tunnel's peers is closed at once (through the tunnel a peer can send to every address
/// of this side, not only the tunnel address), and at most <see cref="MaxConnections"/> connections in all and
/// <see cref="MaxPerSource"/> per source address are open at a time; one more is closed at once. Idle keep-alive
/// connections are closed by Kestrel's keep-alive timeout (<see cref="WebHost.KeepAliveTimeout"/>). Refusals are
/// logged once per interval per kind with a count.
/// </summary>
public sealed partial class ConnectionGuard
{
    private readonly Lock _lock = new();
    private readonly Dictionary<IPAddress, int> _bySource = [];
    private readonly Func<IPNetwork?> _tunnelPeers;
    private readonly LogRateLimiter _refusals;
    private readonly ILogger _logger;
    private int _open;

    /// <param name="tunnelPeers">Where the tunnel's peers send from, or null while unknown (read for every connection).</param>
    public ConnectionGuard(string listener, int maxConnections, int maxPerSource, Func<IPNetwork?> tunnelPeers, ILogger logger, TimeProvider? time = null)
    {
        Listener = listener;
        MaxConnections = maxConnections;
        MaxPerSource = maxPerSource;
        _tunnelPeers = tunnelPeers;
        _logger = logger;
        _refusals = new LogRateLimiter(time ?? TimeProvider.System, LogRateLimiter.DefaultInterval, (kind, count, interval) =>
            LogSuppressed(_logger, count, Listener, kind, interval.TotalSeconds));
    }

    public string Listener { get; }

    public int MaxConnections { get; }

    public int MaxPerSource { get; }

    /// <summary>Connections open now (for tests).</summary>
    public int Open => Volatile.Read(ref _open);

    /// <summary>Kestrel connection middleware: <c>listenOptions.Use(guard.Middleware)</c>.</summary>
    public ConnectionDelegate Middleware(ConnectionDelegate next) => async connection =>
    {
        var source = (connection.RemoteEndPoint as IPEndPoint)?.Address ?? IPAddress.None;
        if (source.IsIPv4MappedToIPv6)
        {
            source = source.MapToIPv4();
        }

        if (_tunnelPeers() is { } tunnel && tunnel.Contains(source))
        {
            Refused("from the tunnel", source);
            return;
        }

        if (!TryEnter(source))
        {
            return;
        }

        try
        {
            await next(connection);
        }
        finally
        {
            Exit(source);
        }
    };

    private bool TryEnter(IPAddress source)
    {
        lock (_lock)
        {
            if (_open >= MaxConnections)
            {
                Refused("over the connection limit", source);
                return false;
            }

            var count = _bySource.GetValueOrDefault(source);
            if (count >= MaxPerSource)
            {
                Refused("over the per-source connection limit", source);
                return false;
            }

            _bySource[source] = count + 1;
            _open++;
            return true;
        }
    }

    private void Exit(IPAddress source)
    {
        lock (_lock)
        {
            _open--;
            if (_bySource.TryGetValue(source, out var count))
            {
                if (count <= 1)
                {
                    _bySource.Remove(source);
                }
                else
                {
                    _bySource[source] = count - 1;
                }
            }
        }
    }

    private void Refused(string why, IPAddress source)
    {
        if (_refusals.ShouldLog(why))
        {
            LogRefused(_logger, Listener, source.ToString(), why, MaxConnections, MaxPerSource);
        }
    }

    [LoggerMessage(EventId = 1420, Level = LogLevel.Warning, Message = "Closed a connection to the {Listener} from {Source}: {Why} (at most {Max} connections, {PerSource} per source)")]
    private static partial void LogRefused(ILogger logger, string listener, string source, string why, int max, int perSource);

    [LoggerMessage(EventId = 1421, Level = LogLevel.Warning, Message = "…and {Count} more connection(s) to the {Listener} closed as {Why} in the last {Seconds} s")]
    private static partial void LogSuppressed(ILogger logger, int count, string listener, string why, double seconds);
}
