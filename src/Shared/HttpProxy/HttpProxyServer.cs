using System.Collections.Frozen;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Wormhole.Tunnel.Global;
using Wormhole.Tunnel.Metrics;
using Yarp.ReverseProxy.Forwarder;

namespace Wormhole.Tunnel.HttpProxy;

/// <summary>The HTTP listeners as the proxy sink sees them (<see cref="HttpProxyServer"/>, or a recording fake in tests).</summary>
public interface IHttpListeners
{
    /// <summary>
    /// Makes the HTTP listeners exactly <paramref name="desired"/> (keyed by port); returns those that could not be
    /// opened with why. Never throws for one bad spec; calls are serialised.
    /// </summary>
    Task<IReadOnlyList<(HttpListenerSpec Spec, string Reason)>> ApplyAsync(IReadOnlyCollection<HttpListenerSpec> desired, CancellationToken cancellationToken);
}

/// <summary>
/// The HTTP listeners of one side: HTTP reverse proxies on YARP's direct forwarding (<see cref="IHttpForwarder"/>) for
/// the apps marked HTTP. One Kestrel server, started with the first HTTP listener, serves all of them: the listening
/// sockets are ours and come and go with the plan (<see cref="HttpPortListener"/>), their connections are handed to
/// Kestrel (<see cref="HandOffTransport"/>), and a request is routed by the port it arrived on. A listener costs a
/// socket and its accept loop, not a server. HTTP/1.1 and h2c on every listener, and towards sites in the version the
/// client used.
/// </summary>
public sealed class HttpProxyServer : IHttpListeners, IAsyncDisposable
{
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly HandOffTransport _transport = new();
    private readonly SocketConnectionContextFactory _connections;
    private readonly HttpForwarding _forwarding;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly Dictionary<int, HttpPortListener> _listeners = [];
    private ServiceProvider? _services;
    private KestrelServer? _server;
    private bool _disposed;

    public HttpProxyServer(WormholeMetrics metrics, GlobalSites? globalSites, ILoggerFactory loggerFactory, TimeProvider time)
    {
        _loggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger<HttpProxyServer>();
        _time = time;
        _connections = new SocketConnectionContextFactory(new SocketConnectionFactoryOptions(), loggerFactory.CreateLogger("Wormhole.Tunnel.HttpProxy.Connections"));
        _forwarding = new HttpForwarding(metrics.Http, globalSites, _logger, time);
    }

    /// <summary>The listeners open now (after the last <see cref="ApplyAsync"/>).</summary>
    public IReadOnlyCollection<HttpListenerSpec> Active
    {
        get
        {
            _gate.Wait();
            try
            {
                return [.. _listeners.Values.Select(l => l.Spec)];
            }
            finally
            {
                _gate.Release();
            }
        }
    }

    /// <summary>Connections open now on every listener.</summary>
    public int OpenConnections => _listeners.Values.Sum(l => l.OpenConnections);

    /// <summary>
    /// Makes the listeners exactly <paramref name="desired"/> (keyed by port): new ones are bound, missing ones closed
    /// (port released at once, open connections aborted), changed ones keep their socket and route later requests the
    /// new way. Returns the specs that could not be bound; never throws for one bad spec. Calls are serialised.
    /// </summary>
    public async Task<IReadOnlyList<(HttpListenerSpec Spec, string Reason)>> ApplyAsync(IReadOnlyCollection<HttpListenerSpec> desired, CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken);
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var wanted = new Dictionary<int, HttpListenerSpec>();
            var failures = new List<(HttpListenerSpec, string)>();
            foreach (var spec in desired)
            {
                if (!wanted.TryAdd(spec.Port, spec))
                {
                    failures.Add((spec, $"port {spec.Port} is given to another HTTP listener"));
                }
            }

            foreach (var port in _listeners.Keys.Where(p => !wanted.ContainsKey(p)).ToList())
            {
                var gone = _listeners[port];
                _listeners.Remove(port);
                _forwarding.Remove(port);
                await gone.DisposeAsync();
                HttpProxyLog.ListenerClosed(_logger, gone.Spec.App, port);
            }

            if (wanted.Count > 0)
            {
                await EnsureStartedAsync(cancellationToken);
            }

            foreach (var (port, spec) in wanted)
            {
                // The route first: a request on a new listener finds it from its first connection on.
                _forwarding.Set(spec);
                if (_listeners.TryGetValue(port, out var open))
                {
                    open.Spec = spec;
                    continue;
                }

                try
                {
                    _listeners[port] = HttpPortListener.Start(spec, _transport, _connections, _logger, _time);
                    HttpProxyLog.ListenerOpened(_logger, spec.App, spec.Kind, port, spec.Site?.Peer ?? "(global)");
                }
                catch (SocketException ex)
                {
                    _forwarding.Remove(port);
                    HttpProxyLog.BindFailed(_logger, spec.App, port, ex.SocketErrorCode);
                    failures.Add((spec, ex.SocketErrorCode == SocketError.AddressAlreadyInUse ? "address already in use" : ex.Message));
                }
            }

            _forwarding.RetainMetrics([.. _listeners.Values.Select(l => l.Spec)]);
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
            foreach (var listener in _listeners.Values)
            {
                await listener.DisposeAsync();
            }

            _listeners.Clear();
            if (_server is not null)
            {
                using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(2));
                try
                {
                    await _server.StopAsync(stop.Token);
                }
                catch (OperationCanceledException)
                {
                }

                _server.Dispose();
            }

            _connections.Dispose();
            _forwarding.Dispose();
            if (_services is not null)
            {
                await _services.DisposeAsync();
            }
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>Starts the Kestrel server and YARP's forwarder on first use (a side without HTTP apps pays nothing).</summary>
    private async Task EnsureStartedAsync(CancellationToken cancellationToken)
    {
        if (_server is not null)
        {
            return;
        }

        var services = new ServiceCollection();
        services.AddSingleton(_loggerFactory);
        services.AddSingleton(typeof(ILogger<>), typeof(Logger<>));
        services.AddSingleton(_time);
        services.AddHttpForwarder();
        _services = services.BuildServiceProvider();
        _forwarding.Forwarder = _services.GetRequiredService<IHttpForwarder>();

        var options = new KestrelServerOptions { AddServerHeader = false, ApplicationServices = _services };
        // A proxy passes bodies of any size at any pace, as the TCP listeners do; the site applies its own limits.
        options.Limits.MaxRequestBodySize = null;
        options.Limits.MinRequestBodyDataRate = null;
        options.Limits.MinResponseDataRate = null;
        options.Listen(HandOffTransport.Http1, l => l.Protocols = HttpProtocols.Http1);
        options.Listen(HandOffTransport.Http2, l => l.Protocols = HttpProtocols.Http2);
        var server = new KestrelServer(Options.Create(options), _transport, _loggerFactory);
        await server.StartAsync(new Application(_forwarding), cancellationToken);
        _server = server;
    }

    /// <summary>Kestrel's application: every request goes to <see cref="HttpForwarding.HandleAsync"/>.</summary>
    private sealed class Application(HttpForwarding forwarding) : IHttpApplication<HttpContext>
    {
        public HttpContext CreateContext(IFeatureCollection contextFeatures) => new DefaultHttpContext(contextFeatures);

        public Task ProcessRequestAsync(HttpContext context) => forwarding.HandleAsync(context);

        public void DisposeContext(HttpContext context, Exception? exception)
        {
        }
    }
}
