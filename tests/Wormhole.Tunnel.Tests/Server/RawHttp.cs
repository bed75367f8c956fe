using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Wormhole.Tunnel.Tests.Server;

/// <summary>HTTP/1.1 requests written by hand on a TCP socket: methods and framings HttpClient will not send as given.</summary>
internal static class RawHttp
{
    /// <summary>Sends <paramref name="head"/> (request line and headers, ending in an empty line) and <paramref name="body"/>; returns the status code.</summary>
    public static async Task<int> StatusAsync(Uri server, string head, byte[]? body = null, string from = "127.0.0.1")
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Parse(from), 0));
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        await socket.ConnectAsync(server.Host, server.Port, timeout.Token);
        await socket.SendAsync(Encoding.ASCII.GetBytes(head), timeout.Token);
        if (body is { Length: > 0 })
        {
            await socket.SendAsync(body, timeout.Token);
        }

        var received = new List<byte>();
        var buffer = new byte[1024];
        while (!Encoding.ASCII.GetString([.. received]).Contains("\r\n", StringComparison.Ordinal))
        {
            var n = await socket.ReceiveAsync(buffer, timeout.Token);
            if (n == 0)
            {
                break;
            }

            received.AddRange(buffer.AsSpan(0, n));
        }

        var statusLine = Encoding.ASCII.GetString([.. received]).Split("\r\n")[0];
        statusLine.Should().StartWith("HTTP/1.1 ", "the server answers with a status line");
        return int.Parse(statusLine.Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
    }
}
