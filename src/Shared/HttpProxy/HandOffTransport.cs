using System.Net;
using System.Threading.Channels;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace Wormhole.Tunnel.HttpProxy;

/// <summary>
/// What Kestrel "binds" for the HTTP listeners: not a socket but a queue. Kestrel cannot add endpoints to a running
/// server, so the listening sockets are ours (<see cref="HttpPortListener"/>, opened and closed as plans change) and each
/// accepted connection is handed to one running Kestrel server through one of two queues: HTTP/1.x, or h2c (HTTP/2 with
/// prior knowledge, which Kestrel serves only on an endpoint that speaks HTTP/2 alone).
/// </summary>
internal sealed class HandOffTransport : IConnectionListenerFactory, IConnectionListenerFactorySelector
{
    public static readonly HandOffEndPoint Http1 = new(HttpProtocols.Http1);
    public static readonly HandOffEndPoint Http2 = new(HttpProtocols.Http2);

    private readonly Channel<ConnectionContext> _http1 = Channel.CreateUnbounded<ConnectionContext>(new UnboundedChannelOptions { SingleReader = false });
    private readonly Channel<ConnectionContext> _http2 = Channel.CreateUnbounded<ConnectionContext>(new UnboundedChannelOptions { SingleReader = false });

    /// <summary>Queues an accepted connection for Kestrel; false once the server has stopped (the caller closes it).</summary>
    public bool HandOff(ConnectionContext connection, bool http2) => (http2 ? _http2 : _http1).Writer.TryWrite(connection);

    public bool CanBind(EndPoint endpoint) => endpoint is HandOffEndPoint;

    public ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default) =>
        endpoint is HandOffEndPoint e
            ? ValueTask.FromResult<IConnectionListener>(new Listener(e, e.Protocols == HttpProtocols.Http2 ? _http2 : _http1))
            : throw new NotSupportedException($"{endpoint} is not an endpoint of the HTTP listeners");

    private sealed class Listener(EndPoint endPoint, Channel<ConnectionContext> queue) : IConnectionListener
    {
        public EndPoint EndPoint => endPoint;

        public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
        {
            try
            {
                while (await queue.Reader.WaitToReadAsync(cancellationToken))
                {
                    if (queue.Reader.TryRead(out var connection))
                    {
                        return connection;
                    }
                }
            }
            catch (OperationCanceledException)
            {
            }

            return null;
        }

        public ValueTask UnbindAsync(CancellationToken cancellationToken = default)
        {
            queue.Writer.TryComplete();
            return ValueTask.CompletedTask;
        }

        public async ValueTask DisposeAsync()
        {
            queue.Writer.TryComplete();
            while (queue.Reader.TryRead(out var left))
            {
                await left.DisposeAsync();
            }
        }
    }
}

/// <summary>The endpoint of one hand-off queue (see <see cref="HandOffTransport"/>).</summary>
internal sealed class HandOffEndPoint(HttpProtocols protocols) : EndPoint
{
    public HttpProtocols Protocols => protocols;

    public override string ToString() => protocols == HttpProtocols.Http2 ? "wormhole-http-listeners (h2c)" : "wormhole-http-listeners (HTTP/1.x)";
}
