using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.Logging;

namespace Wormhole.Tunnel.HttpProxy;

/// <summary>
/// The listening socket of one HTTP listener and the connections it accepted. Each accepted connection is checked
/// against the spec's refusals, its first bytes are peeked (not read) to tell h2c from HTTP/1.x, and it is handed to
/// Kestrel. Disposing releases the port at once and aborts the connections still open.
/// </summary>
internal sealed class HttpPortListener : IAsyncDisposable
{
    /// <summary>The HTTP/2 connection preface a client with prior knowledge starts with (RFC 9113 §3.4).</summary>
    private static readonly byte[] Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8.ToArray();

    private readonly Socket _socket;
    private readonly HandOffTransport _transport;
    private readonly SocketConnectionContextFactory _connections;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly CancellationTokenSource _stopping = new();
    private readonly ConcurrentDictionary<ConnectionContext, byte> _open = new();
    private readonly TaskCompletionSource _acceptEnded = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private HttpListenerSpec _spec;

    private HttpPortListener(Socket socket, HttpListenerSpec spec, HandOffTransport transport, SocketConnectionContextFactory connections, ILogger logger, TimeProvider time)
    {
        _socket = socket;
        _spec = spec;
        _transport = transport;
        _connections = connections;
        _logger = logger;
        _time = time;
    }

    /// <summary>How long a new connection may stay silent before its protocol is known; then it is closed.</summary>
    public static readonly TimeSpan SniffTimeout = TimeSpan.FromSeconds(30);

    /// <summary>Read by the accept loop for every new connection; a change only affects later connections.</summary>
    public HttpListenerSpec Spec
    {
        get => Volatile.Read(ref _spec);
        set => Volatile.Write(ref _spec, value);
    }

    /// <summary>Connections open now.</summary>
    public int OpenConnections => _open.Count;

    /// <exception cref="SocketException">The port cannot be bound (in use, address not local, ...).</exception>
    public static HttpPortListener Start(HttpListenerSpec spec, HandOffTransport transport, SocketConnectionContextFactory connections, ILogger logger, TimeProvider time)
    {
        var endPoint = new IPEndPoint(spec.BindAddress, spec.Port);
        var socket = new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            if (endPoint.Address.Equals(IPAddress.IPv6Any))
            {
                socket.DualMode = true;
            }

            AllowRebind(socket);
            socket.Bind(endPoint);
            socket.Listen();
        }
        catch
        {
            socket.Dispose();
            throw;
        }

        var listener = new HttpPortListener(socket, spec, transport, connections, logger, time);
        _ = listener.AcceptLoopAsync();
        return listener;
    }

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync();
        _socket.Dispose();
        await _acceptEnded.Task;
        foreach (var connection in _open.Keys)
        {
            connection.Abort(new ConnectionAbortedException("the listener was removed"));
        }

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
                    HttpProxyLog.AcceptFailed(_logger, Spec.App, Spec.Port, ex.SocketErrorCode);
                    await Task.Delay(TimeSpan.FromMilliseconds(50), _time, token);
                    continue;
                }

                var spec = Spec;
                if (spec.Refuses(((IPEndPoint)client.LocalEndPoint!).Address, ((IPEndPoint)client.RemoteEndPoint!).Address))
                {
                    client.Dispose();
                    continue;
                }

                _ = HandOffAsync(client, token);
            }
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested)
        {
        }
        catch (Exception ex)
        {
            HttpProxyLog.AcceptLoopCrashed(_logger, ex, Spec.App, Spec.Port);
        }
        finally
        {
            _acceptEnded.TrySetResult();
        }
    }

    private async Task HandOffAsync(Socket client, CancellationToken stopping)
    {
        bool http2;
        try
        {
            client.NoDelay = true;
            http2 = await IsHttp2Async(client, stopping);
        }
        catch (Exception ex) when (ex is SocketException or OperationCanceledException or ObjectDisposedException or TimeoutException)
        {
            client.Dispose();
            return;
        }

        ConnectionContext connection;
        try
        {
            connection = _connections.Create(client);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            client.Dispose();
            return;
        }

        _open.TryAdd(connection, 0);
        connection.ConnectionClosed.Register(static state =>
        {
            var (open, c) = ((ConcurrentDictionary<ConnectionContext, byte>, ConnectionContext))state!;
            open.TryRemove(c, out _);
        }, (_open, connection));
        if (stopping.IsCancellationRequested || !_transport.HandOff(connection, http2))
        {
            _open.TryRemove(connection, out _);
            await connection.DisposeAsync();
        }
    }

    /// <summary>
    /// Peeks at the first bytes without taking them: the HTTP/2 preface means h2c with prior knowledge, anything else
    /// HTTP/1.x. Bytes that match the preface so far but are fewer than its length are peeked again shortly.
    /// </summary>
    private async Task<bool> IsHttp2Async(Socket client, CancellationToken stopping)
    {
        var buffer = new byte[Preface.Length];
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        timeout.CancelAfter(SniffTimeout);
        while (true)
        {
            var n = await client.ReceiveAsync(buffer, SocketFlags.Peek, timeout.Token);
            if (n == 0)
            {
                // The client closed before sending anything.
                throw new SocketException((int)SocketError.ConnectionReset);
            }

            if (!buffer.AsSpan(0, n).SequenceEqual(Preface.AsSpan(0, n)))
            {
                return false;
            }

            if (n == Preface.Length)
            {
                return true;
            }

            await Task.Delay(TimeSpan.FromMilliseconds(5), _time, timeout.Token);
        }
    }

    /// <summary>
    /// SO_REUSEADDR only, so a released port can be re-bound while its old connections sit in TIME_WAIT (as the L4
    /// listeners do). Not <see cref="SocketOptionName.ReuseAddress"/>: on Unix .NET maps it to SO_REUSEPORT as well.
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
