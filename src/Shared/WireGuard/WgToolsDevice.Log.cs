using Microsoft.Extensions.Logging;

namespace Wormhole.Tunnel.WireGuard;

/// <summary>The device's log lines.</summary>
public sealed partial class WgToolsDevice
{
    [LoggerMessage(EventId = 1100, Level = LogLevel.Debug, Message = "Running {Command}")]
    private partial void LogRunning(string command);

    [LoggerMessage(EventId = 1101, Level = LogLevel.Information, Message = "WireGuard interface {Interface} exists already ({Backend}); reusing it")]
    private partial void LogReusingInterface(string @interface, string backend);

    [LoggerMessage(EventId = 1102, Level = LogLevel.Information, Message = "Interface {Interface} has addresses {Old}, want {New}; flushing them")]
    private partial void LogFlushingAddresses(string @interface, string old, string @new);

    [LoggerMessage(EventId = 1103, Level = LogLevel.Information, Message = "No kernel WireGuard for {Interface} ({Reason}); starting wireguard-go")]
    private partial void LogKernelUnavailable(string @interface, string reason);

    [LoggerMessage(EventId = 1104, Level = LogLevel.Information, Message = "Created WireGuard interface {Interface} ({Backend})")]
    private partial void LogCreated(string @interface, string backend);

    [LoggerMessage(EventId = 1105, Level = LogLevel.Information, Message = "WireGuard interface {Interface} is up ({Backend}), address {Address}, listen port {ListenPort}, {RouteCount} extra routes")]
    private partial void LogInterfaceUp(string @interface, string backend, string address, int? listenPort, int routeCount);

    [LoggerMessage(EventId = 1106, Level = LogLevel.Information, Message = "Removed peer {PublicKey} from {Interface}")]
    private partial void LogPeerRemoved(string publicKey, string @interface);

    [LoggerMessage(EventId = 1107, Level = LogLevel.Debug, Message = "Set peer {PublicKey} on {Interface}: allowed IPs {AllowedIps}, endpoint {Endpoint}")]
    private partial void LogPeerSet(string publicKey, string @interface, string allowedIps, string endpoint);

    [LoggerMessage(EventId = 1108, Level = LogLevel.Information, Message = "Peers of {Interface}: {Count} set, {Removed} removed in one wg set; {Total} peer(s) now")]
    private partial void LogPeersReconciled(string @interface, int count, int removed, int total);

    [LoggerMessage(EventId = 1109, Level = LogLevel.Information, Message = "WireGuard interface {Interface} deleted (existed: {Existed})")]
    private partial void LogInterfaceDown(string @interface, bool existed);

    [LoggerMessage(EventId = 1110, Level = LogLevel.Warning, Message = "wireguard-go socket {Socket} of {Interface} is still there after the interface was deleted")]
    private partial void LogSocketLingers(string socket, string @interface);

    [LoggerMessage(EventId = 1111, Level = LogLevel.Warning, Message = "Could not delete WireGuard interface {Interface} on dispose")]
    private partial void LogDisposeDownFailed(Exception exception, string @interface);

    [LoggerMessage(EventId = 1112, Level = LogLevel.Warning, Message = "WireGuard interface {Interface} is gone (deleted outside this process?); creating it again")]
    private partial void LogInterfaceGone(string @interface);
}
