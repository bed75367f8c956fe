using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Wormhole.Tunnel.Proxy;

/// <summary>The splice engine's part of a connection: connect and pump on an event loop.</summary>
internal sealed partial class ProxyConnection
{
    /// <summary>
    /// The splice data plane: connects with a non-blocking connect(2) whose completion the connection's loop watches, and
    /// runs the loop's pump from there (one hand-off to the loop per connection; neither socket ever joins .NET's socket
    /// engine, whose epoll thread would otherwise wake for every readiness change the loop already handles). Every address
    /// of a host name is tried in turn.
    /// </summary>
    /// <returns><see cref="ProxyOutcome.None"/> once the pump has run, else why it never started.</returns>
    private async Task<ProxyOutcome> ConnectAndSpliceAsync(EpollLoop loop, CancellationToken stopping)
    {
        if (RefusesLocalAddress())
        {
            return ProxyOutcome.RefusedLocalAddress;
        }

        _client.NoDelay = true;
        _client.Blocking = false;
        using var timeout = new CancellationTokenSource(_options.ConnectTimeout, _timeProvider);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(stopping, timeout.Token);
        var error = SocketError.HostNotFound;
        _connectStarted = _timeProvider.GetTimestamp();
        try
        {
            var addresses = IPAddress.TryParse(_spec.TargetHost, out var literal)
                ? [literal]
                : await Dns.GetHostAddressesAsync(_spec.TargetHost, linked.Token);
            foreach (var address in addresses)
            {
                var upstream = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true, Blocking = false };
                Close(Interlocked.Exchange(ref _upstream, upstream), reset: false);
                var errno = LinuxNative.Connect((int)upstream.Handle, new IPEndPoint(address, _spec.TargetPort)) == 0 ? 0 : Marshal.GetLastPInvokeError();
                if (errno is 0 or LinuxNative.EINPROGRESS)
                {
                    if (errno == 0)
                    {
                        ObserveConnected();
                    }

                    _connectTimeout = timeout;
                    var pump = SplicePump.Start(loop, _client, upstream, this, connecting: errno != 0);
                    Interlocked.Exchange(ref _pump, pump);
                    if (Volatile.Read(ref _outcome) != 0)
                    {
                        pump.Abort(); // aborted while starting
                    }

                    PumpEnd end;
                    await using (timeout.Token.UnsafeRegister(static p => ((SplicePump)p!).CancelConnect(), pump))
                    {
                        end = await pump.Completion;
                    }

                    if (end.ConnectError == 0)
                    {
                        Settle(upstream: true, end.Up);
                        Settle(upstream: false, end.Down);
                        return ProxyOutcome.None;
                    }

                    errno = end.ConnectError;
                }

                if (Volatile.Read(ref _outcome) != 0 || stopping.IsCancellationRequested)
                {
                    return ProxyOutcome.ListenerClosed; // aborted while connecting: the abort's reason stands
                }

                linked.Token.ThrowIfCancellationRequested();
                error = errno switch { 111 => SocketError.ConnectionRefused, 110 => SocketError.TimedOut, 113 => SocketError.HostUnreachable, 101 => SocketError.NetworkUnreachable, _ => SocketError.SocketError };
            }
        }
        catch (OperationCanceledException) when (!stopping.IsCancellationRequested)
        {
            return UpstreamFailed(SocketError.TimedOut, ProxyOutcome.UpstreamTimeout);
        }
        catch (SocketException ex) when (!stopping.IsCancellationRequested)
        {
            error = ex.SocketErrorCode; // name resolution
        }
        catch (Exception ex) when (ex is OperationCanceledException or SocketException)
        {
            return ProxyOutcome.ListenerClosed;
        }

        return UpstreamFailed(error);
    }

    void IPumpOwner.OnConnected()
    {
        // On the loop's thread. The connect timeout has no more to do; the idle timeout starts counting.
        _connectTimeout?.CancelAfter(Timeout.InfiniteTimeSpan);
        ObserveConnected();
        StartIdleTimer();
    }

    void IPumpOwner.OnBytes(bool upstream, int count) => Count(upstream, count);
}
