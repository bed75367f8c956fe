using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Metrics;

namespace Wormhole.Tunnel.Proxy;

/// <summary>
/// The in-process L4 proxy: one listening <see cref="Socket"/> per <see cref="ListenerSpec"/>, accepted from by the splice
/// engine's event loops (<see cref="LoopListener"/>) or by an accept loop of its own (<see cref="ProxyListener"/>, the
/// sockets engine).
/// The table is rebuilt off to the side by <see cref="ApplyAsync"/> and swapped in with <see cref="Interlocked.Exchange{T}(ref T, T)"/>;
/// readers never lock. Plain sockets rather than Kestrel's transport, so a half-close can be propagated in both directions.
/// </summary>
public sealed class ProxyTable : IProxyTable
{
    private readonly ProxyOptions _options;
    private readonly WormholeMetrics _metrics;
    private readonly ILogger<ProxyTable> _logger;
    private readonly TimeProvider _timeProvider;
    private readonly SpliceEngine? _engine;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private Dictionary<IPEndPoint, IProxyListener> _listeners = [];
    private bool _disposed;

    public ProxyTable(ProxyOptions options, WormholeMetrics metrics, ILogger<ProxyTable> logger, TimeProvider timeProvider)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(options.BufferSize);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(options.ConnectTimeout, TimeSpan.Zero);
        _options = options;
        _metrics = metrics;
        _logger = logger;
        _timeProvider = timeProvider;
        _engine = options.Engine switch
        {
            ProxyEngine.Sockets => null,
            ProxyEngine.Splice => SpliceEngine.Shared ?? throw new PlatformNotSupportedException("the splice proxy engine needs Linux (x64 or arm64) with epoll and splice allowed"),
            _ => SpliceEngine.Shared,
        };
        ProxyLog.EngineChosen(logger, _engine is null ? ProxyEngine.Sockets : ProxyEngine.Splice, _engine?.LoopCount ?? 0);
    }

    public IReadOnlyCollection<ListenerSpec> Active => Volatile.Read(ref _listeners).Values.Select(l => l.Spec).ToList();

    public async Task<IReadOnlyList<ListenerFailure>> ApplyAsync(IReadOnlyCollection<ListenerSpec> desired, CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken);
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var failures = new List<ListenerFailure>();
            var wanted = new Dictionary<IPEndPoint, ListenerSpec>(desired.Count);
            foreach (var spec in desired)
            {
                if (spec.Port is < 1 or > IPEndPoint.MaxPort || spec.TargetPort is < 1 or > IPEndPoint.MaxPort)
                {
                    failures.Add(new ListenerFailure(spec, "port and target port must be between 1 and 65535"));
                }
                else if (!wanted.TryAdd(new IPEndPoint(spec.BindAddress, spec.Port), spec))
                {
                    failures.Add(new ListenerFailure(spec, "another listener in the same apply has this address and port"));
                }
            }

            // Release removed listeners first, so a port can move to another bind address within one apply. All at once:
            // an event-loop listener stops on its loops' threads, and one wake-up of a loop takes every stop queued by
            // then, where stopping them one after another would wait for one round trip to the loops per listener.
            var current = _listeners;
            var removed = current.Where(e => !wanted.ContainsKey(e.Key)).ToList();
            await Task.WhenAll(removed.Select(e => e.Value.DisposeAsync().AsTask()));
            foreach (var (key, listener) in removed)
            {
                ProxyLog.ListenerStopped(_logger, listener.Spec.App, key);
            }

            var next = new Dictionary<IPEndPoint, IProxyListener>(wanted.Count);
            var started = new List<LoopListener>();
            foreach (var (key, spec) in wanted)
            {
                if (current.TryGetValue(key, out var existing))
                {
                    if (existing.Spec != spec)
                    {
                        existing.Spec = spec;
                        ProxyLog.ListenerRetargeted(_logger, spec.App, key, spec.TargetHost, spec.TargetPort);
                    }

                    next.Add(key, existing);
                    continue;
                }

                try
                {
                    if (_engine is null)
                    {
                        next.Add(key, ProxyListener.Start(spec, key, _options, _metrics, _logger, _timeProvider));
                    }
                    else
                    {
                        var listener = LoopListener.Start(spec, key, _options, _engine, _metrics, _logger, accept: false);
                        next.Add(key, listener);
                        started.Add(listener);
                    }

                    ProxyLog.ListenerStarted(_logger, spec.App, spec.Kind, key, spec.TargetHost, spec.TargetPort);
                }
                catch (SocketException ex)
                {
                    ProxyLog.ListenerBindFailed(_logger, spec.App, key, ex.SocketErrorCode);
                    failures.Add(new ListenerFailure(spec, $"cannot listen on {key}: {ex.SocketErrorCode} ({ex.Message})"));
                }
            }

            // The event loops take the new listeners all at once (queued connections wait in the backlog until then),
            // rather than being woken once for each listener while the others are bound.
            foreach (var listener in started)
            {
                listener.Accept();
            }

            Interlocked.Exchange(ref _listeners, next);
            return failures;
        }
        finally
        {
            _gate.Release();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _gate.WaitAsync();
        try
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            foreach (var listener in Interlocked.Exchange(ref _listeners, []).Values)
            {
                await listener.DisposeAsync();
            }
        }
        finally
        {
            _gate.Release();
        }
    }
}

/// <summary>The sockets engine's listener: one listening socket and its accept loop; tracks its connections so stopping can
/// close them and wait.</summary>
internal sealed class ProxyListener : IProxyListener
{
    private readonly Socket _socket;
    private readonly IPEndPoint _endPoint;
    private readonly ProxyOptions _options;
    private readonly WormholeMetrics _metrics;
    private readonly ILogger _logger;
    private readonly TimeProvider _timeProvider;
    private readonly CancellationTokenSource _stopping = new();
    private readonly TaskCompletionSource _drained = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private ListenerSpec _spec;
    private int _running = 1; // the accept loop plus one per open connection

    private ProxyListener(Socket socket, ListenerSpec spec, IPEndPoint endPoint, ProxyOptions options, WormholeMetrics metrics, ILogger logger, TimeProvider timeProvider)
    {
        _socket = socket;
        _spec = spec;
        _endPoint = endPoint;
        _options = options;
        _metrics = metrics;
        _logger = logger;
        _timeProvider = timeProvider;
    }

    /// <summary>Read by the accept loop for every new connection; a change only affects later connections.</summary>
    public ListenerSpec Spec
    {
        get => Volatile.Read(ref _spec);
        set => Volatile.Write(ref _spec, value);
    }

    /// <exception cref="SocketException">The address cannot be bound (in use, not local, ...).</exception>
    public static ProxyListener Start(ListenerSpec spec, IPEndPoint endPoint, ProxyOptions options, WormholeMetrics metrics, ILogger logger, TimeProvider timeProvider)
    {
        var listener = new ProxyListener(Bind(endPoint), spec, endPoint, options, metrics, logger, timeProvider);
        _ = listener.AcceptLoopAsync();
        return listener;
    }

    /// <summary>A socket bound to <paramref name="endPoint"/> with SO_REUSEADDR only, listening unless
    /// <paramref name="listen"/> is false (then it only claims the port: see <see cref="LoopListener"/>).</summary>
    /// <exception cref="SocketException">The address cannot be bound (in use, not local, ...).</exception>
    public static Socket Bind(IPEndPoint endPoint, bool listen = true)
    {
        var socket = new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            if (endPoint.Address.Equals(IPAddress.IPv6Any))
            {
                socket.DualMode = true;
            }

            AllowRebind(socket);
            socket.Bind(endPoint);
            if (listen)
            {
                socket.Listen();
            }

            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Releases the port at once, closes every open connection, and waits until they are gone.</summary>
    public async ValueTask DisposeAsync()
    {
        _stopping.Cancel(); // aborts the accept and, through their registrations, every connection's sockets
        _socket.Dispose();
        await _drained.Task;
        _stopping.Dispose();
    }

    private async Task AcceptLoopAsync()
    {
        var token = _stopping.Token;
        try
        {
            while (!token.IsCancellationRequested)
            {
                Socket client;
                try
                {
                    client = await _socket.AcceptAsync(token);
                }
                catch (Exception ex) when (token.IsCancellationRequested && ex is OperationCanceledException or ObjectDisposedException or SocketException)
                {
                    return;
                }
                catch (SocketException ex)
                {
                    // A client that reset while queued, or descriptors exhausted: back off briefly rather than spin.
                    ProxyLog.AcceptFailed(_logger, Spec.App, _endPoint, ex.SocketErrorCode);
                    await Task.Delay(TimeSpan.FromMilliseconds(50), _timeProvider, token);
                    continue;
                }

                Interlocked.Increment(ref _running);
                _ = RunConnectionAsync(client, Spec, token);
            }
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested)
        {
        }
        catch (Exception ex)
        {
            ProxyLog.AcceptLoopCrashed(_logger, ex, Spec.App, _endPoint);
        }
        finally
        {
            Exit();
        }
    }

    private async Task RunConnectionAsync(Socket client, ListenerSpec spec, CancellationToken stopping)
    {
        try
        {
            await new ProxyConnection(client, spec, _options, _metrics, _logger, _timeProvider).RunAsync(stopping);
        }
        catch (Exception ex)
        {
            ProxyLog.ConnectionCrashed(_logger, ex, spec.App, _endPoint);
        }
        finally
        {
            Exit();
        }
    }

    private void Exit()
    {
        if (Interlocked.Decrement(ref _running) == 0)
        {
            _drained.TrySetResult();
        }
    }

    /// <summary>
    /// SO_REUSEADDR only, so a released port can be re-bound while its old connections sit in TIME_WAIT.
    /// Not <see cref="SocketOptionName.ReuseAddress"/>: on Unix .NET maps it to SO_REUSEPORT as well, which would let a
    /// second process listen on the same port silently instead of failing with "address in use". Windows needs neither.
    /// </summary>
    private static void AllowRebind(Socket socket)
    {
        (int Level, int Name)? option =
            OperatingSystem.IsLinux() ? (1, 2) :
            OperatingSystem.IsMacOS() || OperatingSystem.IsFreeBSD() ? (0xffff, 0x4) :
            null;
        if (option is var (level, name))
        {
            socket.SetRawSocketOption(level, name, BitConverter.GetBytes(1));
        }
    }
}
