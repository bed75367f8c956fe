using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Serilog;
using Serilog.AspNetCore;
using Serilog.Events;
using Serilog.Extensions.Hosting;

namespace Wormhole.Tunnel.Hosting;

/// <summary>
/// One HTTP listener of a side (pairing, sync, admin, metrics): its address, its request-body limit and its routes,
/// mapped with the services of the host.
/// </summary>
public sealed record Listener(string Name, IPEndPoint Endpoint, long MaxRequestBodyBytes, Action<IEndpointRouteBuilder, IServiceProvider> Map)
{
    /// <summary>Connection caps and the tunnel refusal of a listener meant for the outside (null: none).</summary>
    public ConnectionGuard? Guard { get; init; }

    /// <summary>Middleware before this listener's routes (the pairing API's rate limiter).</summary>
    public Action<IApplicationBuilder>? Use { get; init; }
}

/// <summary>
/// The host of one executable: a Generic Host with one Kestrel server listening on every <see cref="Listener"/>'s
/// address. Each listener serves only its own routes, whatever Host header a client sends: a request is routed by the
/// local address and port it arrived on. Built from the empty builder with Kestrel's and routing's core services only:
/// no configuration files or watchers, no console logging provider, no HTTPS, HTTP/3 (QUIC), host filtering or
/// forwarded-headers middleware, which the other builders add and which this process does not use (idle memory).
/// With the process's logger (<see cref="Logging.Create(bool, bool)"/>) every request is logged at Debug (seen with
/// <c>--debug</c>): method, path (escaped: it comes from the network), listener, status and time — never the query
/// string or a header, which can carry credentials.
/// </summary>
public static class WebHost
{
    /// <summary>The category of the request log lines.</summary>
    internal const string RequestLogCategory = "Wormhole.Tunnel.Http";

    /// <summary>An idle keep-alive connection is closed after this (Kestrel's default is 130 s).</summary>
    public static readonly TimeSpan KeepAliveTimeout = TimeSpan.FromSeconds(30);

    private const string RequestLogTemplate = "HTTP {RequestMethod} {RequestPath} on {Listener} responded {StatusCode} in {Elapsed:0.0} ms";

    /// <summary>A builder whose Kestrel listens on every listener's endpoint; register services, then <see cref="MapListeners"/>.</summary>
    public static WebApplicationBuilder CreateBuilder(IReadOnlyList<Listener> listeners, ILoggerFactory loggerFactory)
    {
        ArgumentNullException.ThrowIfNull(listeners);
        if (listeners.Count > 1 && listeners.Any(l => l.Endpoint.Port == 0))
        {
            throw new ArgumentException("With several listeners each needs its own port (requests are routed by the port they arrive on).", nameof(listeners));
        }

        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions { Args = [] });
        builder.Services.AddSingleton(loggerFactory);
        if (loggerFactory is Logging.SerilogFactory serilog)
        {
            builder.Services.AddSingleton(new DiagnosticContext(serilog.Logger));
        }

        builder.Services.AddRoutingCore();
        if (listeners.Any(l => l.Use is not null))
        {
            builder.Services.AddRateLimiter(_ => { }); // the services a listener's rate limiter needs
        }

        builder.Services.Configure<ConsoleLifetimeOptions>(o => o.SuppressStatusMessages = true);
        builder.WebHost.UseKestrelCore().ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Limits.MaxRequestBodySize = listeners.Count == 0 ? 0 : listeners.Max(l => l.MaxRequestBodyBytes);
            k.Limits.RequestHeadersTimeout = TimeSpan.FromSeconds(10);
            k.Limits.KeepAliveTimeout = KeepAliveTimeout;
            foreach (var listener in listeners)
            {
                var endpoint = listener.Endpoint;
                void Configure(Microsoft.AspNetCore.Server.Kestrel.Core.ListenOptions options)
                {
                    if (listener.Guard is { } guard)
                    {
                        options.Use(guard.Middleware);
                    }
                }

                if (endpoint.Address.Equals(IPAddress.Any) && System.Net.Sockets.Socket.OSSupportsIPv6)
                {
                    k.ListenAnyIP(endpoint.Port, Configure); // dual-stack where the machine has IPv6, plain IPv4 otherwise
                }
                else
                {
                    k.Listen(endpoint, Configure);
                }
            }
        });
        return builder;
    }

    /// <summary>Routes each request to the routes of the listener whose address it arrived on, under that listener's body limit.</summary>
    public static void MapListeners(this WebApplication app, IReadOnlyList<Listener> listeners)
    {
        ArgumentNullException.ThrowIfNull(app);
        if (app.Services.GetService<ILoggerFactory>() is Logging.SerilogFactory serilog)
        {
            app.UseSerilogRequestLogging(o => LogRequests(o, serilog.Logger, listeners));
        }

        if (listeners.Count == 1)
        {
            listeners[0].Use?.Invoke(app);
            Map(app, listeners[0], app.Services);
            return;
        }

        foreach (var listener in listeners)
        {
            var endpoint = listener.Endpoint;
            var limit = listener.MaxRequestBodyBytes;
            app.MapWhen(context => Arrived(context, endpoint), branch =>
            {
                branch.Use((context, next) =>
                {
                    if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } body)
                    {
                        body.MaxRequestBodySize = limit;
                    }

                    return next(context);
                });
                listener.Use?.Invoke(branch);
                branch.UseRouting();
                branch.UseEndpoints(routes => Map(routes, listener, app.Services));
            });
        }
    }

    /// <summary>A host with one listener (tests and tools): built, mapped, not started.</summary>
    public static WebApplication Create(IPEndPoint endpoint, ILoggerFactory loggerFactory, long maxRequestBodyBytes, Action<IEndpointRouteBuilder> map, Action<IApplicationBuilder>? use = null, ConnectionGuard? guard = null)
    {
        Listener[] listeners = [new("http", endpoint, maxRequestBodyBytes, (routes, _) => map(routes)) { Use = use, Guard = guard }];
        var app = CreateBuilder(listeners, loggerFactory).Build();
        app.MapListeners(listeners);
        return app;
    }

    private static void Map(IEndpointRouteBuilder routes, Listener listener, IServiceProvider services) => listener.Map(routes, services);

    private static void LogRequests(RequestLoggingOptions o, Serilog.ILogger logger, IReadOnlyList<Listener> listeners)
    {
        o.Logger = logger;
        o.IncludeQueryInRequestPath = false;
        o.MessageTemplate = RequestLogTemplate;
        o.GetLevel = static (_, _, _) => LogEventLevel.Debug;
        o.GetMessageTemplateProperties = (context, path, elapsed, status) =>
        [
            // The middleware names itself as the category; the event's own property wins.
            new LogEventProperty("SourceContext", new ScalarValue(RequestLogCategory)),
            new LogEventProperty("RequestMethod", new ScalarValue(LogText.Of(context.Request.Method))),
            new LogEventProperty("RequestPath", new ScalarValue(LogText.Of(path, LogText.MaxReasonLength))),
            new LogEventProperty("Listener", new ScalarValue(listeners.Count == 1 ? listeners[0].Name : listeners.FirstOrDefault(l => Arrived(context, l.Endpoint))?.Name)),
            new LogEventProperty("StatusCode", new ScalarValue(status)),
            new LogEventProperty("Elapsed", new ScalarValue(elapsed)),
        ];
    }

    private static bool Arrived(HttpContext context, IPEndPoint endpoint)
    {
        var connection = context.Connection;
        if (connection.LocalPort != endpoint.Port)
        {
            return false;
        }

        if (endpoint.Address.Equals(IPAddress.Any) || endpoint.Address.Equals(IPAddress.IPv6Any) || connection.LocalIpAddress is not { } local)
        {
            return true;
        }

        return (local.IsIPv4MappedToIPv6 ? local.MapToIPv4() : local).Equals(endpoint.Address);
    }
}
