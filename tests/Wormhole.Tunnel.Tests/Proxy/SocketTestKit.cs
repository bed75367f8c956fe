using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Wormhole.Tunnel.Tests.Proxy;

internal static class SocketTestKit
{
    /// <summary>How long any single expected event may take before the test fails.</summary>
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(5);

    /// <summary>A port that was free a moment ago (the OS picked it for a temporary socket).</summary>
    public static int FreePort()
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)probe.LocalEndPoint!).Port;
    }

    public static async Task<Socket> ConnectAsync(int port, IPAddress? address = null)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(new IPEndPoint(address ?? IPAddress.Loopback, port)).WaitAsync(Patience);
        return socket;
    }

    public static Task SendAsync(this Socket socket, string text) => socket.SendAllAsync(Encoding.UTF8.GetBytes(text));

    public static async Task SendAllAsync(this Socket socket, ReadOnlyMemory<byte> data)
    {
        for (var sent = 0; sent < data.Length;)
        {
            sent += await socket.SendAsync(data[sent..], SocketFlags.None);
        }
    }

    /// <summary>Reads until the peer's FIN; a reset throws.</summary>
    public static async Task<byte[]> ReadToEndAsync(this Socket socket)
    {
        var all = new MemoryStream();
        var buffer = new byte[64 * 1024];
        int read;
        while ((read = await socket.ReceiveAsync(buffer, SocketFlags.None)) > 0)
        {
            all.Write(buffer, 0, read);
        }

        return all.ToArray();
    }

    public static async Task<string> ReadTextToEndAsync(this Socket socket) =>
        Encoding.UTF8.GetString(await socket.ReadToEndAsync().WaitAsync(Patience));

    public static async Task<string> ReadTextAsync(this Socket socket, int length) =>
        Encoding.UTF8.GetString(await socket.ReadExactlyAsync(length));

    /// <summary>Reads exactly <paramref name="length"/> bytes; an early FIN throws.</summary>
    public static async Task<byte[]> ReadExactlyAsync(this Socket socket, int length)
    {
        var buffer = new byte[length];
        for (var read = 0; read < length;)
        {
            var n = await socket.ReceiveAsync(buffer.AsMemory(read), SocketFlags.None).AsTask().WaitAsync(Patience);
            if (n == 0)
            {
                throw new EndOfStreamException($"closed after {read} of {length} bytes");
            }

            read += n;
        }

        return buffer;
    }

    /// <summary>
    /// Connects and completes when the proxy has closed the connection; returns the bytes that came before.
    /// A proxy that resets at once may do so before the connect is even reported, so a reset there counts as closed too.
    /// </summary>
    public static async Task<int> ConnectAndAwaitCloseAsync(int port, IPAddress? address = null)
    {
        Socket socket;
        try
        {
            socket = await ConnectAsync(port, address);
        }
        catch (SocketException ex) when (ex.SocketErrorCode == SocketError.ConnectionReset)
        {
            return 0;
        }

        using (socket)
        {
            return await socket.ClosedAsync();
        }
    }

    /// <summary>Completes when the peer has closed the connection (FIN or RST); returns the bytes that came before.</summary>
    public static async Task<int> ClosedAsync(this Socket socket)
    {
        var buffer = new byte[4096];
        var total = 0;
        try
        {
            int read;
            while ((read = await socket.ReceiveAsync(buffer, SocketFlags.None)) > 0)
            {
                total += read;
            }
        }
        catch (SocketException)
        {
        }

        return total;
    }
}

/// <summary>A stand-in for an app or a peer: listens on 127.0.0.1, runs a handler per connection, counts connections.</summary>
internal sealed class TargetServer : IAsyncDisposable
{
    private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
    private readonly Func<Socket, Task> _handler;
    private readonly Task _acceptLoop;
    private int _accepted;

    public TargetServer(Func<Socket, Task> handler)
    {
        _handler = handler;
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen();
        _acceptLoop = AcceptLoopAsync();
    }

    public int Port => ((IPEndPoint)_listener.LocalEndPoint!).Port;

    public int Accepted => Volatile.Read(ref _accepted);

    /// <summary>Echoes until the client's FIN, then half-closes too.</summary>
    public static TargetServer Echo() => new(async socket =>
    {
        var buffer = new byte[64 * 1024];
        int read;
        while ((read = await socket.ReceiveAsync(buffer, SocketFlags.None)) > 0)
        {
            await socket.SendAllAsync(buffer.AsMemory(0, read));
        }

        socket.Shutdown(SocketShutdown.Send);
    });

    /// <summary>Sends <paramref name="text"/> and FIN at once, then waits for the client to finish.</summary>
    public static TargetServer Saying(string text) => new(async socket =>
    {
        await socket.SendAsync(text);
        socket.Shutdown(SocketShutdown.Send);
        await socket.ReadToEndAsync();
    });

    public async ValueTask DisposeAsync()
    {
        _listener.Dispose();
        await _acceptLoop;
    }

    private async Task AcceptLoopAsync()
    {
        while (true)
        {
            Socket socket;
            try
            {
                socket = await _listener.AcceptAsync();
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
                return;
            }

            Interlocked.Increment(ref _accepted);
            _ = HandleAsync(socket);
        }
    }

    private async Task HandleAsync(Socket socket)
    {
        try
        {
            await _handler(socket);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
        }
        finally
        {
            socket.Dispose();
        }
    }
}
