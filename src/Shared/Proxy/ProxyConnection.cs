using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Metrics;

namespace Wormhole.Tunnel.Proxy;

/// <summary>How a proxied connection ended: logged, never thrown.</summary>
internal enum ProxyOutcome
{
    None = 0,
    /// <summary>Both sides sent FIN.</summary>
    Completed,
    RefusedLocalAddress,
    UpstreamRefused,
    UpstreamUnreachable,
    UpstreamTimeout,
    ClientReset,
    UpstreamReset,
    IdleTimeout,
    ListenerClosed,
    /// <summary>A bug: the connection's handler threw.</summary>
    Crashed,
}

/// <summary>
/// One accepted connection of the sockets engine (off Linux, or when configured; the splice engine's is
/// <see cref="LoopConnection"/>): connect to the target, then two copy loops over .NET's async sockets.
/// When one side sends FIN, the other socket's send side is shut down and the other direction keeps flowing until it
/// ends too. A reset on either side, the idle timeout or the listener closing aborts both directions; how the sockets are
/// closed is <see cref="EndsWithReset"/>'s.
/// </summary>
internal sealed partial class ProxyConnection
{
    private readonly Socket _client;
    private readonly ListenerSpec _spec;
    private readonly ProxyOptions _options;
    private readonly WormholeMetrics.AppSeries _series;
    private readonly ILogger _logger;
    private readonly TimeProvider _timeProvider;
    private Socket? _upstream;
    private ITimer? _idleTimer;
    private long _lastActivity;
    private long _connectStarted;
    private long _bytesUp;
    private long _bytesDown;
    private int _outcome; // ProxyOutcome; the first abort wins
    private Upstream? _site; // with a picker: the site connected to, told Closed at the end

    public ProxyConnection(Socket client, ListenerSpec spec, ProxyOptions options, WormholeMetrics metrics, ILogger logger, TimeProvider timeProvider)
    {
        _client = client;
        _spec = spec;
        _options = options;
        // Resolved once: the byte counters are then a plain add per splice or copy.
        _series = metrics.ForApp(spec.App, spec.KindLabel);
        _logger = logger;
        _timeProvider = timeProvider;
    }

    public async Task RunAsync(CancellationToken stopping)
    {
        var started = _timeProvider.GetTimestamp();
        var peer = _client.RemoteEndPoint;
        _series.ConnectionsTotal.Inc();
        _series.ConnectionsActive.Inc();
        using var registration = stopping.UnsafeRegister(static s => ((ProxyConnection)s!).Abort(ProxyOutcome.ListenerClosed), this);
        try
        {
            var failure = await ConnectAsync(stopping);
            if (failure is not ProxyOutcome.None)
            {
                Abort(failure);
            }
            else
            {
                await PumpAsync(_upstream!);
            }
        }
        catch (Exception ex) when (ex is ObjectDisposedException or SocketException && _outcome != 0)
        {
            // A socket was closed under us by an abort; _outcome says why.
        }
        finally
        {
            _idleTimer?.Dispose();
            var ended = (ProxyOutcome)_outcome;
            var reset = EndsWithReset(ended);
            Close(_client, reset);
            Close(_upstream, reset);
            _series.ConnectionsActive.Dec();
            if (_site is not null)
            {
                _spec.Picker!.Closed(_site);
            }
        }

        var outcome = _outcome == 0 ? ProxyOutcome.Completed : (ProxyOutcome)_outcome;
        if (outcome is ProxyOutcome.UpstreamRefused or ProxyOutcome.UpstreamUnreachable or ProxyOutcome.UpstreamTimeout)
        {
            _series.UpstreamFailures.Inc();
        }

        ProxyLog.ConnectionClosed(_logger, _spec.App, peer, _spec.TargetHost, _spec.TargetPort, outcome,
            (long)_timeProvider.GetElapsedTime(started).TotalMilliseconds, _bytesUp, _bytesDown);
    }

    /// <returns><see cref="ProxyOutcome.None"/> when connected, else why not.</returns>
    private async Task<ProxyOutcome> ConnectAsync(CancellationToken stopping)
    {
        if (RefusesLocalAddress())
        {
            return ProxyOutcome.RefusedLocalAddress;
        }

        _client.NoDelay = true;
        if (_spec.Picker is { } picker)
        {
            return await ConnectPickedAsync(picker, stopping);
        }

        // Dual-mode when the OS has IPv6, so a name may resolve to either family; every address is tried in turn.
        var upstream = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        Volatile.Write(ref _upstream, upstream);
        using var timeout = new CancellationTokenSource(_options.ConnectTimeout, _timeProvider);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(stopping, timeout.Token);
        try
        {
            _connectStarted = _timeProvider.GetTimestamp();
            await (IPAddress.TryParse(_spec.TargetHost, out var address)
                ? upstream.ConnectAsync(new IPEndPoint(address, _spec.TargetPort), linked.Token)
                : upstream.ConnectAsync(_spec.TargetHost, _spec.TargetPort, linked.Token));
            ObserveConnected();
            return ProxyOutcome.None;
        }
        catch (OperationCanceledException) when (!stopping.IsCancellationRequested)
        {
            return UpstreamFailed(SocketError.TimedOut, ProxyOutcome.UpstreamTimeout);
        }
        catch (SocketException ex) when (!stopping.IsCancellationRequested)
        {
            return UpstreamFailed(ex.SocketErrorCode);
        }
        catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
        {
            return ProxyOutcome.ListenerClosed;
        }
    }

    /// <summary>
    /// A global listener's connect: the picker's sites in turn, each for at most its attempt timeout, until one connects
    /// or the connect timeout is over. Each failed attempt is reported to the picker.
    /// </summary>
    private async Task<ProxyOutcome> ConnectPickedAsync(IUpstreamPicker picker, CancellationToken stopping)
    {
        using var overall = new CancellationTokenSource(_options.ConnectTimeout, _timeProvider);
        var tried = 0UL;
        var last = SocketError.HostNotFound;
        Upstream? site = null;
        _connectStarted = _timeProvider.GetTimestamp();
        while (!overall.IsCancellationRequested && picker.Pick(tried) is { } next)
        {
            site = next;
            tried |= 1UL << site.Index;
            if (!IPAddress.TryParse(site.Host, out var address))
            {
                last = SocketError.HostNotFound;
                picker.Failed(site, "not an IP address");
                continue;
            }

            var upstream = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            Volatile.Write(ref _upstream, upstream);
            using var attempt = new CancellationTokenSource(picker.AttemptTimeout, _timeProvider);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(stopping, overall.Token, attempt.Token);
            try
            {
                await upstream.ConnectAsync(new IPEndPoint(address, site.Port), linked.Token);
                ObserveConnected();
                picker.Connected(site);
                _site = site;
                return ProxyOutcome.None;
            }
            catch (OperationCanceledException) when (!stopping.IsCancellationRequested)
            {
                last = SocketError.TimedOut;
                picker.Failed(site, "connect timed out");
            }
            catch (SocketException ex) when (!stopping.IsCancellationRequested)
            {
                last = ex.SocketErrorCode;
                picker.Failed(site, last == SocketError.ConnectionRefused ? "connection refused" : $"connect failed: {last}");
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return ProxyOutcome.ListenerClosed;
            }

            upstream.Dispose();
        }

        ProxyLog.UpstreamFailed(_logger, _spec.App, site?.Host ?? _spec.TargetHost, site?.Port ?? _spec.TargetPort, last);
        return last switch
        {
            SocketError.ConnectionRefused => ProxyOutcome.UpstreamRefused,
            SocketError.TimedOut => ProxyOutcome.UpstreamTimeout,
            _ => ProxyOutcome.UpstreamUnreachable,
        };
    }

    /// <summary>A remote listener does not proxy connections the spec refuses (from the tunnel, at any local address).</summary>
    private bool RefusesLocalAddress() =>
        _spec.Refuses(((IPEndPoint)_client.LocalEndPoint!).Address, ((IPEndPoint)_client.RemoteEndPoint!).Address);

    /// <summary>Logs why the target could not be reached; refused, or else unreachable unless <paramref name="outcome"/> says.</summary>
    private ProxyOutcome UpstreamFailed(SocketError error, ProxyOutcome? outcome = null)
    {
        ProxyLog.UpstreamFailed(_logger, _spec.App, _spec.TargetHost, _spec.TargetPort, error);
        return outcome ?? (error == SocketError.ConnectionRefused ? ProxyOutcome.UpstreamRefused : ProxyOutcome.UpstreamUnreachable);
    }


    /// <summary>Connect time, from the first try (name resolution included) to connected.</summary>
    private void ObserveConnected() => _series.UpstreamConnect.Observe(_timeProvider.GetElapsedTime(_connectStarted).TotalSeconds);

    /// <summary>Bytes passed on in one direction: activity for the idle timeout, the metric and the closing log line.</summary>
    private void Count(bool upstream, int count)
    {
        Touch();
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

    private void StartIdleTimer()
    {
        Touch();
        var idle = _options.IdleTimeout;
        if (idle > TimeSpan.Zero && idle != Timeout.InfiniteTimeSpan)
        {
            _idleTimer = _timeProvider.CreateTimer(static s => ((ProxyConnection)s!).OnIdleTimer(), this, idle, Timeout.InfiniteTimeSpan);
        }
    }

    private void Touch() => Volatile.Write(ref _lastActivity, _timeProvider.GetTimestamp());

    private void OnIdleTimer()
    {
        var quiet = _timeProvider.GetElapsedTime(Volatile.Read(ref _lastActivity));
        if (quiet >= _options.IdleTimeout)
        {
            Abort(ProxyOutcome.IdleTimeout);
            return;
        }

        try
        {
            _idleTimer?.Change(_options.IdleTimeout - quiet, Timeout.InfiniteTimeSpan);
        }
        catch (ObjectDisposedException)
        {
        }
    }

    /// <summary>
    /// Whether a connection that ended so closes its sockets with RST: a reset or error on one side (so a reset propagates as
    /// a reset), a connection refused for its local address, a crash. Everything else closes with FIN: a completed exchange,
    /// the idle timeout, the listener closing, and a target that could not be reached (refused, unreachable, timed out:
    /// the client's connection is closed as nginx closes it, and a client that has only just connected sees its connect
    /// succeed and then the end of the stream, not a reset racing its connect).
    /// </summary>
    internal static bool EndsWithReset(ProxyOutcome outcome) =>
        outcome is ProxyOutcome.ClientReset or ProxyOutcome.UpstreamReset or ProxyOutcome.RefusedLocalAddress or ProxyOutcome.Crashed;

    /// <summary>Ends the connection, with RST or FIN as <see cref="EndsWithReset"/> says.</summary>
    private void Abort(ProxyOutcome reason)
    {
        if (Interlocked.CompareExchange(ref _outcome, (int)reason, 0) != 0)
        {
            return;
        }

        var reset = EndsWithReset(reason);
        Close(_client, reset);
        Close(Volatile.Read(ref _upstream), reset);
    }

    private static void Close(Socket? socket, bool reset)
    {
        if (socket is null)
        {
            return;
        }

        if (reset)
        {
            try
            {
                socket.LingerState = new LingerOption(true, 0);
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
            }
        }

        socket.Dispose();
    }

    private static IPAddress Normalize(IPAddress address) => address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address;
}
