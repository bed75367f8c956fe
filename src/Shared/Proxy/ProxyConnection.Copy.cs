using System.Buffers;
using System.Net.Sockets;

namespace Wormhole.Tunnel.Proxy;

/// <summary>The copy engine's part of a connection: two copy loops over .NET's async sockets.</summary>
internal sealed partial class ProxyConnection
{
    private async Task PumpAsync(Socket upstream)
    {
        StartIdleTimer();
        var up = CopyAsync(_client, upstream, upstream: true);
        var down = CopyAsync(upstream, _client, upstream: false);
        var first = await Task.WhenAny(up, down);
        Settle(first == up, first.Result); // an error aborts both, which also ends the other loop
        var second = first == up ? down : up;
        Settle(second == up, await second);
    }

    /// <summary>Copies until EOF (then half-closes the destination) or an error. No allocation per read.</summary>
    private async Task<CopyResult> CopyAsync(Socket from, Socket to, bool upstream)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(_options.BufferSize);
        try
        {
            while (true)
            {
                int read;
                try
                {
                    read = await from.ReceiveAsync(buffer.AsMemory(), SocketFlags.None);
                }
                catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
                {
                    return CopyResult.ReadFailed;
                }

                try
                {
                    if (read == 0)
                    {
                        to.Shutdown(SocketShutdown.Send);
                        return CopyResult.Eof;
                    }

                    Touch();
                    for (var sent = 0; sent < read;)
                    {
                        sent += await to.SendAsync(buffer.AsMemory(sent, read - sent), SocketFlags.None);
                    }
                }
                catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
                {
                    return CopyResult.WriteFailed;
                }

                Count(upstream, read);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private void Settle(bool upstream, CopyResult result)
    {
        if (result != CopyResult.Eof)
        {
            // Client→target: a failed read is the client's fault, a failed write the target's; target→client the reverse.
            Abort(upstream == (result == CopyResult.ReadFailed) ? ProxyOutcome.ClientReset : ProxyOutcome.UpstreamReset);
        }
    }
}
