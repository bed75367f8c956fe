using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Routing;
using Prometheus;

namespace Wormhole.Tunnel.Metrics;

public static class PrometheusEndpoint
{
    /// <summary>Serves <paramref name="metrics"/>' registry on GET <paramref name="pattern"/> (prometheus-net's exposition).</summary>
    public static IEndpointRouteBuilder MapPrometheus(this IEndpointRouteBuilder endpoints, WormholeMetrics metrics, string pattern = "/metrics")
    {
        ArgumentNullException.ThrowIfNull(metrics);
        endpoints.MapMetrics(pattern, metrics.Registry);
        return endpoints;
    }
}
