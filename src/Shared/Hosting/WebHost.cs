using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Wormhole.Tunnel.Hosting;

/// <summary>
/// One small Kestrel server per listener (peering, sync, admin, metrics): each serves only its own routes,
/// whatever Host header a client sends.
/// </summary>
public static class WebHost
{
    public static WebApplication Create(IPEndPoint endpoint, ILoggerFactory loggerFactory, long maxRequestBodyBytes, Action<WebApplication> map)
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(loggerFactory);
        builder.WebHost.UseKestrel(k =>
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
