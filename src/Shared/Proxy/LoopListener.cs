using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Metrics;

namespace Wormhole.Tunnel.Proxy;

/// <summary>A bound listener of the proxy table, whichever engine serves it.</summary>
internal interface IProxyListener : IAsyncDisposable
{
    /// <summary>Read for every new connection; a change only affects later connections.</summary>
    ListenerSpec Spec { get; set; }
}

/// <summary>What a new connection of a listener needs from its spec, worked out once per spec rather than per connection.</summary>
internal sealed class ListenerTarget
{
    public ListenerTarget(ListenerSpec spec)
    {
        Spec = spec;
        if (IPAddress.TryParse(spec.TargetHost, out var address))
        {
            Literal = new IPEndPoint(address, spec.TargetPort).Serialize();
            Family = address.AddressFamily == AddressFamily.InterNetworkV6 ? LinuxNative.AF_INET6 : LinuxNative.AF_INET;
        }
    }

    public ListenerSpec Spec { get; }

    /// <summary>The target's socket address when <see cref="ListenerSpec.TargetHost"/> is an IP literal; else null (a
    /// host name, resolved for every connection).</summary>
    public SocketAddress? Literal { get; }

    public ushort Family { get; }
}

/// <summary>
/// A listener of the splice engine: one listening socket per event loop, bound to the same address with SO_REUSEPORT and
/// each in its own loop's epoll set. The kernel spreads new connections over them by a hash of the client's address and
/// port; a loop accepts with accept4 until EAGAIN and runs each new connection itself from then on
/// (<see cref="LoopConnection"/>) — a connection never leaves that loop's thread, from accept to close, and long-lived
/// connections opened at once (a connection pool) are shared evenly by the loops.
/// <para>
/// SO_REUSEPORT lets sockets of the same user share a port, so the port is first claimed the way the sockets engine claims
/// it: a socket with SO_REUSEADDR only is bound there (kept, not listening, until the loops' sockets listen), which fails
/// with "address in use" if anything else holds the port, with or without SO_REUSEPORT — another process, or another
/// listener of ours. A socket of the same user that sets SO_REUSEPORT and binds the port after us does succeed (the kernel
/// cannot be told to refuse it), but it never gets a connection while our listener is open: the group's steering program
/// (<see cref="LinuxNative.SteerToFirst"/>) picks only among our sockets, the first to listen. Once ours are closed, the
/// port is its.
/// </para>
/// </summary>
internal sealed class LoopListener : IProxyListener
{
    private readonly Socket[] _sockets;
    private readonly Acceptor[] _acceptors;
    private SpliceEngine? _engine;
    private ListenerTarget _target;

    private LoopListener(Socket[] sockets, ListenerSpec spec, IPEndPoint endPoint, ProxyOptions options, WormholeMetrics metrics, ILogger logger)
    {
        _sockets = sockets;
        _target = new ListenerTarget(spec);
        EndPoint = endPoint;
        Metrics = metrics;
        Logger = logger;
        ConnectTimeoutMs = (long)Math.Ceiling(options.ConnectTimeout.TotalMilliseconds);
        IdleTimeoutMs = options.IdleTimeout > TimeSpan.Zero && options.IdleTimeout != Timeout.InfiniteTimeSpan
            ? (long)Math.Ceiling(options.IdleTimeout.TotalMilliseconds)
            : -1;
        _acceptors = [.. sockets.Select(s => new Acceptor(this, (int)s.Handle))];
    }

    public ListenerSpec Spec
    {
        get => Target.Spec;
        set => Volatile.Write(ref _target, new ListenerTarget(value));
    }

    public ListenerTarget Target => Volatile.Read(ref _target);

    public IPEndPoint EndPoint { get; }

    public WormholeMetrics Metrics { get; }

    public ILogger Logger { get; }

    public long ConnectTimeoutMs { get; }

    /// <summary>-1: no idle timeout.</summary>
    public long IdleTimeoutMs { get; }

    /// <summary>Binds the listener's sockets; with <paramref name="accept"/> false they listen but the loops accept from them
    /// only after <see cref="Accept"/> (an apply of many listeners wakes the loops once for all of them).</summary>
    /// <exception cref="SocketException">The address cannot be bound (in use, not local, ...).</exception>
    public static LoopListener Start(ListenerSpec spec, IPEndPoint endPoint, ProxyOptions options, SpliceEngine engine, WormholeMetrics metrics, ILogger logger, bool accept = true)
    {
        var sockets = new List<Socket>(engine.LoopCount);
        using (var claim = ProxyListener.Bind(endPoint, listen: false)) // fails while anything else holds the port
        {
            try
            {
                for (var i = 0; i < engine.LoopCount; i++)
                {
                    var socket = new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
                    sockets.Add(socket);
                    if (endPoint.Address.Equals(IPAddress.IPv6Any))
                    {
                        socket.DualMode = true;
                    }

                    socket.SetRawSocketOption(1, 2, BitConverter.GetBytes(1)); // SOL_SOCKET, SO_REUSEADDR
                    socket.SetRawSocketOption(1, 15, BitConverter.GetBytes(1)); // SOL_SOCKET, SO_REUSEPORT

                    socket.NoDelay = true; // accepted sockets inherit it: one setsockopt less per connection
                    socket.Bind(endPoint);
                    socket.Listen();
                    socket.Blocking = false;
                }
            }
            catch
            {
                sockets.ForEach(s => s.Dispose());
                throw;
            }
        }

        if (LinuxNative.SteerToFirst((int)sockets[0].Handle, sockets.Count) != 0)
        {
            // Without it the kernel's own hash spreads connections as well, but over any socket that joins later too.
            ProxyLog.SteeringUnavailable(logger, spec.App, endPoint, Marshal.GetLastPInvokeError());
        }

        var listener = new LoopListener([.. sockets], spec, endPoint, options, metrics, logger) { _engine = engine };
        if (accept)
        {
            listener.Accept();
        }

        return listener;
    }

    /// <summary>Hands each listening socket to its loop (once, after <see cref="Start"/> with accept false).</summary>
    public void Accept()
    {
        for (var i = 0; i < _acceptors.Length; i++)
        {
            _engine!.Loops[i].Post(_acceptors[i], LoopWork.StartCommand);
        }
    }

    /// <summary>Stops accepting on every loop, closes every open connection (FIN), then releases the port.</summary>
    public async ValueTask DisposeAsync()
    {
        foreach (var acceptor in _acceptors)
        {
            acceptor.Stop();
        }

        // Each loop lets go of its listening descriptor and closes this listener's connections on its own thread; only then
        // are the descriptors closed, so no loop can accept on a number that was reused meanwhile.
        await Task.WhenAll(_acceptors.Select(a => a.Stopped));
        foreach (var socket in _sockets)
        {
            socket.Dispose();
        }
    }

    /// <summary>One loop's listening socket.</summary>
    private sealed class Acceptor(LoopListener listener, int fd) : LoopWork
    {
        private const int Budget = 64; // connections accepted per event before the loop serves others (the socket stays ready)
        private const int PauseMs = 50;

        // Level-triggered: what is left queued after Budget is reported again.
        private const uint Interest = LinuxNative.EPOLLIN;
        private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private long _resumeAt = long.MaxValue; // paused after running out of descriptors or memory

        public Task Stopped => _stopped.Task;

        public void Stop() => Loop.Post(this, StopCommand);

        internal override void OnCommand(int command)
        {
            if (command == StartCommand)
            {
                Watch();
            }
            else if (command == StopCommand)
            {
                if (Active)
                {
                    if (_resumeAt == long.MaxValue)
                    {
                        LinuxNative.EpollControl(Loop.Epoll, LinuxNative.EPOLL_CTL_DEL, fd, 0, 0);
                    }

                    Loop.Release(this);
                    Loop.ForEach(
                        static (w, l) => w is LoopConnection c && c.Listener == l,
                        static (w, _) => ((LoopConnection)w).Abort(ProxyOutcome.ListenerClosed),
                        listener);
                }

                _stopped.TrySetResult();
            }
        }

        internal override void OnEvent(int side, uint events)
        {
            var wantPeer = listener.Logger.IsEnabled(LogLevel.Debug);
            Span<byte> peer = stackalloc byte[LinuxNative.SockAddrSize];
            for (var i = 0; i < Budget; i++)
            {
                var client = LinuxNative.Accept(fd, wantPeer ? peer : default);
                if (client >= 0)
                {
                    LoopConnection.Run(listener, Loop, client, wantPeer ? peer : default);
                    continue;
                }

                var errno = Marshal.GetLastPInvokeError();
                if (errno == LinuxNative.EAGAIN)
                {
                    return; // another loop may have taken it, or the queue is empty
                }

                if (errno is LinuxNative.EMFILE or LinuxNative.ENFILE or LinuxNative.ENOBUFS or LinuxNative.ENOMEM)
                {
                    // Out of descriptors or memory: the socket stays readable, so back off briefly rather than spin.
                    ProxyLog.AcceptFailed(listener.Logger, listener.Spec.App, listener.EndPoint, ToSocketError(errno));
                    LinuxNative.EpollControl(Loop.Epoll, LinuxNative.EPOLL_CTL_DEL, fd, 0, 0);
                    _resumeAt = Loop.Now + PauseMs;
                    Loop.WakeAt(_resumeAt);
                    return;
                }

                // ECONNABORTED, EPROTO, EPERM, ...: that one connection is gone before it was accepted; go on.
            }
        }

        internal override long OnSweep(long now)
        {
            if (now < _resumeAt)
            {
                return _resumeAt;
            }

            if (_resumeAt != long.MaxValue)
            {
                _resumeAt = long.MaxValue;
                Watch();
            }

            return long.MaxValue;
        }

        internal override void OnCrash(Exception exception) =>
            ProxyLog.AcceptLoopCrashed(listener.Logger, exception, listener.Spec.App, listener.EndPoint);

        private void Watch()
        {
            if (LinuxNative.EpollControl(Loop.Epoll, LinuxNative.EPOLL_CTL_ADD, fd, Interest, EventData(0)) != 0)
            {
                throw new InvalidOperationException($"epoll_ctl failed: errno {Marshal.GetLastPInvokeError()}");
            }
        }

        private static SocketError ToSocketError(int errno) => errno switch
        {
            LinuxNative.EMFILE or LinuxNative.ENFILE => SocketError.TooManyOpenSockets,
            LinuxNative.ENOBUFS or LinuxNative.ENOMEM => SocketError.NoBufferSpaceAvailable,
            _ => SocketError.SocketError,
        };
    }
}
