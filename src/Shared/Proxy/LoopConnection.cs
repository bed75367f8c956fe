using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Metrics;

namespace Wormhole.Tunnel.Proxy;

/// <summary>
/// One connection of the splice engine, from accept to close on the event loop that accepted it: the upstream socket is
/// created and connected (non-blocking) right there, both sockets join the loop's epoll set, and the pump moves bytes once
/// the connect completes. Only a target given as a host name leaves the loop, for the name lookup (a pool thread), and
/// comes back with the addresses, which are tried in turn. The connect timeout and the idle timeout are deadlines the
/// loop's sweep checks; activity is a timestamp written as bytes move. Closes with RST or FIN as
/// <see cref="ProxyConnection.EndsWithReset"/> says, as the sockets engine does.
/// <para>
/// A listener with a <see cref="ListenerSpec.Picker"/> (a global app) asks it for a site per attempt: a refused connect,
/// or one still pending after the picker's attempt timeout, is reported and the next site picked is tried, until the
/// connect timeout; what the client sent meanwhile waits in its socket, so the client sees no error.
/// </para>
/// </summary>
internal sealed class LoopConnection : SplicePump
{
    private const int ResolvedCommand = 2;

    private readonly ListenerTarget _target;
    private readonly WormholeMetrics.AppSeries _series;
    private readonly IUpstreamPicker? _picker; // a global listener's: it gives the site of each attempt
    private readonly IPEndPoint? _peer; // only when the closing line is logged
    private readonly long _acceptedAt;
    private long _connectStarted; // Stopwatch timestamp: name lookup and connect time, for the histogram
    private long _deadline; // connect deadline, then (when pumping) unused
    private long _lastActivity;
    private IPAddress[]? _addresses;
    private int _nextAddress;
    private SocketError _resolveError;
    private SocketError _lastError = SocketError.HostNotFound;
    private long _bytesUp;
    private long _bytesDown;
    private Upstream? _site; // the picker's site of the current attempt
    private ulong _tried; // bit i: the picker's site i was tried
    private long _connectDeadline; // with a picker: the end of every attempt (_deadline is the current attempt's)
    private bool _siteConnected; // the picker was told Connected; it is told Closed at the end

    private LoopConnection(LoopListener listener, int client, IPEndPoint? peer, long now)
    {
        Listener = listener;
        _target = listener.Target;
        var spec = _target.Spec;
        _series = listener.Metrics.ForApp(spec.App, spec.KindLabel);
        _picker = spec.Picker;
        Fds[Client] = client;
        _peer = peer;
        _acceptedAt = now;
    }

    public LoopListener Listener { get; }

    protected override bool ClosesAtEnd => true;

    /// <summary>Takes over a socket <paramref name="loop"/>'s listener just accepted (on that loop's thread).</summary>
    /// <param name="peer">The client's address as accept4 wrote it, when the closing line is to be logged; else empty.</param>
    public static void Run(LoopListener listener, EpollLoop loop, int client, ReadOnlySpan<byte> peer)
    {
        var connection = new LoopConnection(listener, client, peer.IsEmpty ? null : LinuxNative.ToEndPoint(peer), loop.Now);
        loop.Adopt(connection);
        try
        {
            connection.Begin();
        }
        catch (Exception ex)
        {
            connection.OnCrash(ex);
        }
    }

    private void Begin()
    {
        _series.ConnectionsTotal.Inc();
        _series.ConnectionsActive.Inc();
        if (_target.Spec.RefusedLocalAddress is { } refused && ArrivedOn(refused))
        {
            Stop(ProxyOutcome.RefusedLocalAddress);
            return;
        }

        Watch(Client, LinuxNative.EPOLL_CTL_ADD, Interest); // what the client sends meanwhile waits for the connect
        _deadline = Loop.Now + Listener.ConnectTimeoutMs;
        Loop.WakeAt(_deadline);
        _connectStarted = Stopwatch.GetTimestamp();
        if (_picker is not null)
        {
            _connectDeadline = _deadline;
            PickNext();
        }
        else if (_target.Literal is { } literal)
        {
            Connect(literal, _target.Family);
        }
        else
        {
            _ = ResolveAsync(_target.Spec.TargetHost);
        }
    }

    /// <summary>A remote listener does not proxy connections that arrived on its refused local address.</summary>
    private bool ArrivedOn(IPAddress refused)
    {
        Span<byte> local = stackalloc byte[LinuxNative.SockAddrSize];
        return LinuxNative.LocalAddress(Fds[Client], local) > 0 && LinuxNative.SockAddrIs(local, refused);
    }

    private async Task ResolveAsync(string host)
    {
        try
        {
            _addresses = await Dns.GetHostAddressesAsync(host).ConfigureAwait(false);
        }
        catch (SocketException ex)
        {
            _resolveError = ex.SocketErrorCode;
        }
        catch (Exception ex) when (ex is ArgumentException or OperationCanceledException)
        {
            _resolveError = SocketError.HostNotFound;
        }

        Loop.Post(this, ResolvedCommand); // the queue orders these writes before the loop's reads
    }

    /// <summary>Starts a non-blocking connect to one address; a failure at once moves on to the next.</summary>
    private void Connect(SocketAddress address, ushort family)
    {
        var fd = LinuxNative.TcpSocket(family);
        if (fd < 0)
        {
            AttemptFailed(Marshal.GetLastPInvokeError());
            return;
        }

        Fds[Upstream] = fd;
        LinuxNative.NoDelay(fd);
        if (LinuxNative.Connect(fd, address) == 0)
        {
            Watch(Upstream, LinuxNative.EPOLL_CTL_ADD, Interest); // connected at once: the registration reports it writable
            return;
        }

        var errno = Marshal.GetLastPInvokeError();
        if (errno == LinuxNative.EINPROGRESS)
        {
            Watch(Upstream, LinuxNative.EPOLL_CTL_ADD, Interest);
            return;
        }

        AttemptFailed(errno);
    }

    private void ConnectNext()
    {
        if (_addresses is { } addresses && _nextAddress < addresses.Length)
        {
            var address = addresses[_nextAddress++];
            Connect(
                new IPEndPoint(address, _target.Spec.TargetPort).Serialize(),
                address.AddressFamily == AddressFamily.InterNetworkV6 ? LinuxNative.AF_INET6 : LinuxNative.AF_INET);
            return;
        }

        ProxyLog.UpstreamFailed(Listener.Logger, _target.Spec.App, _target.Spec.TargetHost, _target.Spec.TargetPort, _lastError);
        Stop(_lastError == SocketError.ConnectionRefused ? ProxyOutcome.UpstreamRefused : ProxyOutcome.UpstreamUnreachable);
    }

    /// <summary>Connects to the next site the picker gives, or ends the connection when none is left or time is up.</summary>
    private void PickNext()
    {
        var site = Loop.Now < _connectDeadline ? _picker!.Pick(_tried) : null;
        if (site is null)
        {
            ProxyLog.UpstreamFailed(Listener.Logger, _target.Spec.App, _site?.Host ?? _target.Spec.TargetHost, _site?.Port ?? _target.Spec.TargetPort, _lastError);
            Stop(_lastError switch
            {
                SocketError.ConnectionRefused => ProxyOutcome.UpstreamRefused,
                SocketError.TimedOut => ProxyOutcome.UpstreamTimeout,
                _ => ProxyOutcome.UpstreamUnreachable,
            });
            return;
        }

        _tried |= 1UL << site.Index;
        _site = site;
        _deadline = Math.Min(_connectDeadline, Loop.Now + (long)Math.Ceiling(_picker!.AttemptTimeout.TotalMilliseconds));
        Loop.WakeAt(_deadline);
        if (!IPAddress.TryParse(site.Host, out var address))
        {
            _lastError = SocketError.HostNotFound;
            _picker.Failed(site, "not an IP address");
            PickNext();
            return;
        }

        Connect(
            new IPEndPoint(address, site.Port).Serialize(),
            address.AddressFamily == AddressFamily.InterNetworkV6 ? LinuxNative.AF_INET6 : LinuxNative.AF_INET);
    }

    /// <summary>One address could not be connected to: closes its socket and tries the next.</summary>
    private void AttemptFailed(int errno)
    {
        if (Fds[Upstream] >= 0)
        {
            LinuxNative.Close(Fds[Upstream]); // leaves the epoll set with it; it never got an event of this batch
            Fds[Upstream] = -1;
        }

        _lastError = errno switch
        {
            111 => SocketError.ConnectionRefused,
            110 => SocketError.TimedOut,
            113 => SocketError.HostUnreachable,
            101 => SocketError.NetworkUnreachable,
            LinuxNative.EMFILE or LinuxNative.ENFILE => SocketError.TooManyOpenSockets,
            _ => SocketError.SocketError,
        };
        if (_picker is not null && _lastError != SocketError.TooManyOpenSockets) // out of descriptors here: no fault of the site's
        {
            _picker.Failed(_site!, _lastError == SocketError.ConnectionRefused ? "connection refused" : $"connect failed: {_lastError}");
            PickNext();
            return;
        }

        if (_picker is not null)
        {
            _connectDeadline = 0; // ends the connection: another site would need a descriptor too
            PickNext();
            return;
        }

        ConnectNext();
    }

    internal override void OnEvent(int side, uint events)
    {
        if (!Pumping && side == Upstream)
        {
            if ((events & (LinuxNative.EPOLLERR | LinuxNative.EPOLLHUP)) != 0)
            {
                var error = LinuxNative.SocketError(Fds[Upstream]);
                AttemptFailed(error != 0 ? error : 111);
                return;
            }

            if ((events & LinuxNative.EPOLLOUT) == 0)
            {
                return;
            }

            _series.UpstreamConnect.Observe(Stopwatch.GetElapsedTime(_connectStarted).TotalSeconds);
            if (_site is not null)
            {
                _picker!.Connected(_site);
                _siteConnected = true;
            }

            Pumping = true;
            _lastActivity = Loop.Now;
            if (Listener.IdleTimeoutMs > 0)
            {
                Loop.WakeAt(_lastActivity + Listener.IdleTimeoutMs);
            }
        }

        base.OnEvent(side, events);
    }

    internal override void OnCommand(int command)
    {
        if (command != ResolvedCommand || Finished)
        {
            return; // ended (timed out, aborted) while the name was looked up
        }

        if (_addresses is null)
        {
            _lastError = _resolveError;
        }

        ConnectNext();
    }

    internal override long OnSweep(long now)
    {
        if (!Pumping)
        {
            if (now < _deadline)
            {
                return _deadline;
            }

            if (_picker is not null)
            {
                // This site's attempt is over: drop its socket and try the next site (or end, past the connect timeout).
                if (Fds[Upstream] >= 0)
                {
                    LinuxNative.Close(Fds[Upstream]);
                    Fds[Upstream] = -1;
                }

                _lastError = SocketError.TimedOut;
                _picker.Failed(_site!, "connect timed out");
                PickNext();
                return Finished || Pumping ? long.MaxValue : _deadline;
            }

            ProxyLog.UpstreamFailed(Listener.Logger, _target.Spec.App, _target.Spec.TargetHost, _target.Spec.TargetPort, SocketError.TimedOut);
            Stop(ProxyOutcome.UpstreamTimeout);
            return long.MaxValue;
        }

        if (Listener.IdleTimeoutMs <= 0)
        {
            return long.MaxValue;
        }

        var idleAt = _lastActivity + Listener.IdleTimeoutMs;
        if (now < idleAt)
        {
            return idleAt;
        }

        Stop(ProxyOutcome.IdleTimeout);
        return long.MaxValue;
    }

    /// <summary>Ends the connection (on the loop's thread); a no-op once it has ended.</summary>
    public void Abort(ProxyOutcome reason) => Stop(reason);

    internal override void OnCrash(Exception exception)
    {
        if (!Finished)
        {
            ProxyLog.ConnectionCrashed(Listener.Logger, exception, _target.Spec.App, Listener.EndPoint);
            Stop(ProxyOutcome.Crashed);
        }
    }

    protected override void Moved(bool upstream, int count)
    {
        _lastActivity = Loop.Now;
        if (upstream)
        {
            _series.BytesUpstream.Inc(count);
            _bytesUp += count;
        }
        else
        {
            _series.BytesDownstream.Inc(count);
            _bytesDown += count;
        }
    }

    protected override void Ended(PumpEnd end)
    {
        // Client→target: a failed read is the client's fault, a failed write the target's; target→client the reverse.
        var outcome = end.Up switch
        {
            CopyResult.ReadFailed => ProxyOutcome.ClientReset,
            CopyResult.WriteFailed => ProxyOutcome.UpstreamReset,
            _ => end.Down switch
            {
                CopyResult.ReadFailed => ProxyOutcome.UpstreamReset,
                CopyResult.WriteFailed => ProxyOutcome.ClientReset,
                _ => ProxyOutcome.Completed,
            },
        };
        Close(outcome);
    }

    private void Stop(ProxyOutcome outcome)
    {
        if (Release())
        {
            Close(outcome);
        }
    }

    private void Close(ProxyOutcome outcome)
    {
        var reset = ProxyConnection.EndsWithReset(outcome);
        foreach (var side in (ReadOnlySpan<int>)[Client, Upstream])
        {
            var fd = Fds[side];
            if (fd >= 0)
            {
                if (reset)
                {
                    LinuxNative.ResetOnClose(fd);
                }

                LinuxNative.Close(fd);
                Fds[side] = -1;
            }
        }

        _series.ConnectionsActive.Dec();
        if (_siteConnected)
        {
            _picker!.Closed(_site!);
        }

        if (outcome is ProxyOutcome.UpstreamRefused or ProxyOutcome.UpstreamUnreachable or ProxyOutcome.UpstreamTimeout)
        {
            _series.UpstreamFailures.Inc();
        }

        if (Listener.Logger.IsEnabled(LogLevel.Debug))
        {
            ProxyLog.ConnectionClosed(Listener.Logger, _target.Spec.App, _peer, _target.Spec.TargetHost, _target.Spec.TargetPort, outcome,
                Loop.Now - _acceptedAt, _bytesUp, _bytesDown);
        }
    }
}
