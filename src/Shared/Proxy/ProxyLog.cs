using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;

namespace Wormhole.Tunnel.Proxy;

/// <summary>Proxy log events, ids 1000-1099. Never payload bytes.</summary>
internal static partial class ProxyLog
{
    [LoggerMessage(EventId = 1000, Level = LogLevel.Information, Message = "Proxy listener for {App} ({Kind}) on {EndPoint} forwards to {TargetHost}:{TargetPort}")]
    public static partial void ListenerStarted(ILogger logger, string app, ListenerKind kind, IPEndPoint endPoint, string targetHost, int targetPort);

    [LoggerMessage(EventId = 1001, Level = LogLevel.Information, Message = "Proxy listener for {App} on {EndPoint} now forwards to {TargetHost}:{TargetPort}")]
    public static partial void ListenerRetargeted(ILogger logger, string app, IPEndPoint endPoint, string targetHost, int targetPort);

    [LoggerMessage(EventId = 1002, Level = LogLevel.Information, Message = "Proxy listener for {App} on {EndPoint} closed")]
    public static partial void ListenerStopped(ILogger logger, string app, IPEndPoint endPoint);

    [LoggerMessage(EventId = 1003, Level = LogLevel.Warning, Message = "Proxy listener for {App} cannot listen on {EndPoint}: {Error}")]
    public static partial void ListenerBindFailed(ILogger logger, string app, IPEndPoint endPoint, SocketError error);

    [LoggerMessage(EventId = 1004, Level = LogLevel.Warning, Message = "Proxy listener for {App} on {EndPoint} failed to accept: {Error}")]
    public static partial void AcceptFailed(ILogger logger, string app, IPEndPoint endPoint, SocketError error);

    [LoggerMessage(EventId = 1005, Level = LogLevel.Error, Message = "Proxy listener for {App} on {EndPoint} stopped accepting")]
    public static partial void AcceptLoopCrashed(ILogger logger, Exception exception, string app, IPEndPoint endPoint);

    [LoggerMessage(EventId = 1006, Level = LogLevel.Debug, Message = "Proxy for {App} cannot reach {TargetHost}:{TargetPort}: {Error}")]
    public static partial void UpstreamFailed(ILogger logger, string app, string targetHost, int targetPort, SocketError error);

    [LoggerMessage(EventId = 1007, Level = LogLevel.Debug,
        Message = "Proxy connection for {App} from {Peer} to {TargetHost}:{TargetPort} ended: {Outcome} after {DurationMs} ms, {BytesUp} bytes up, {BytesDown} bytes down")]
    public static partial void ConnectionClosed(ILogger logger, string app, EndPoint? peer, string targetHost, int targetPort, ProxyOutcome outcome, long durationMs, long bytesUp, long bytesDown);

    [LoggerMessage(EventId = 1008, Level = LogLevel.Error, Message = "Proxy connection for {App} on {EndPoint} failed unexpectedly")]
    public static partial void ConnectionCrashed(ILogger logger, Exception exception, string app, IPEndPoint endPoint);

    [LoggerMessage(EventId = 1009, Level = LogLevel.Debug, Message = "Proxy engine: {Engine} ({Loops} event-loop threads)")]
    public static partial void EngineChosen(ILogger logger, ProxyEngine engine, int loops);

    [LoggerMessage(EventId = 1010, Level = LogLevel.Warning,
        Message = "Proxy listener for {App} on {EndPoint}: the kernel refused the steering program (errno {Errno}); a socket that joins the port with SO_REUSEPORT would get a share of its connections")]
    public static partial void SteeringUnavailable(ILogger logger, string app, IPEndPoint endPoint, int errno);
}
