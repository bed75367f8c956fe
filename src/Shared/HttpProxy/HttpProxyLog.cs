using System.Net.Sockets;
using Microsoft.Extensions.Logging;

namespace Wormhole.Tunnel.HttpProxy;

/// <summary>Log lines of the HTTP listeners (event ids 2600-2699).</summary>
internal static partial class HttpProxyLog
{
    [LoggerMessage(EventId = 2600, Level = LogLevel.Information, Message = "HTTP listener for {App} ({Kind}, site {Site}) on port {Port}")]
    public static partial void ListenerOpened(ILogger logger, string app, string kind, int port, string site);

    [LoggerMessage(EventId = 2601, Level = LogLevel.Information, Message = "Closed the HTTP listener of {App} on port {Port}")]
    public static partial void ListenerClosed(ILogger logger, string app, int port);

    [LoggerMessage(EventId = 2602, Level = LogLevel.Warning, Message = "Cannot listen for HTTP app {App} on port {Port}: {Error}")]
    public static partial void BindFailed(ILogger logger, string app, int port, SocketError error);

    [LoggerMessage(EventId = 2603, Level = LogLevel.Warning, Message = "Accepting on the HTTP listener of {App} (port {Port}) failed: {Error}")]
    public static partial void AcceptFailed(ILogger logger, string app, int port, SocketError error);

    [LoggerMessage(EventId = 2604, Level = LogLevel.Error, Message = "The accept loop of the HTTP listener of {App} (port {Port}) crashed")]
    public static partial void AcceptLoopCrashed(ILogger logger, Exception exception, string app, int port);

    [LoggerMessage(EventId = 2605, Level = LogLevel.Warning, Message = "HTTP app {App}: a request to site {Peer} failed before its response: {Reason}")]
    public static partial void RequestFailed(ILogger logger, string app, string peer, string reason);

    [LoggerMessage(EventId = 2606, Level = LogLevel.Warning, Message = "…and {Count} more failed request(s) of {Kind} in the last {Seconds:0} s")]
    public static partial void FailuresSummarized(ILogger logger, string kind, int count, double seconds);
}
