using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Wormhole.Tunnel.Hosting;

/// <summary>
/// One small Kestrel server per listener (peering, sync, admin, metrics): each serves only its own routes,
/// whatever Host header a client sends. Built from the empty builder with Kestrel's and routing's core services only:
/// no configuration files or watchers, no console logging provider, no HTTPS, HTTP/3 (QUIC), host filtering or
/// forwarded-headers middleware, which the other builders add and which this process does not use (idle memory).
/// </summary>
public static class WebHost
{
    public static WebApplication Create(IPEndPoint endpoint, ILoggerFactory loggerFactory, long maxRequestBodyBytes, Action<WebApplication> map)
    {
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions { Args = [] });
        builder.Services.AddSingleton(loggerFactory);
        builder.Services.AddRoutingCore();
        builder.WebHost.UseKestrelCore().ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Limits.MaxRequestBodySize = maxRequestBodyBytes;
            k.Limits.RequestHeadersTimeout = TimeSpan.FromSeconds(10);
            if (endpoint.Address.Equals(IPAddress.Any))
            {
                // Dual-stack where the machine has IPv6, plain IPv4 otherwise.
                if (System.Net.Sockets.Socket.OSSupportsIPv6)
                {
                    k.ListenAnyIP(endpoint.Port);
                }
                else
                {
                    k.Listen(endpoint);
                }
            }
            else
            {
                k.Listen(endpoint);
            }
        });
        var app = builder.Build();
        map(app);
        return app;
    }
}
