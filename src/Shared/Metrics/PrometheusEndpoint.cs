using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace Wormhole.Tunnel.Metrics;

public static class PrometheusEndpoint
{
    /// <summary>Serves <paramref name="exporter"/>'s exposition (text format 0.0.4) on GET <paramref name="pattern"/>.</summary>
    public static IEndpointRouteBuilder MapPrometheus(
        this IEndpointRouteBuilder endpoints, PrometheusExporter exporter, string pattern = "/metrics")
    {
        ArgumentNullException.ThrowIfNull(exporter);
        endpoints.MapGet(pattern, (RequestDelegate)(context =>
        {
            var text = exporter.Scrape();
            context.Response.ContentType = PrometheusExporter.ContentType;
            context.Response.Headers.CacheControl = "no-store";
            return context.Response.WriteAsync(text, context.RequestAborted);
        }));
        return endpoints;
    }
}
