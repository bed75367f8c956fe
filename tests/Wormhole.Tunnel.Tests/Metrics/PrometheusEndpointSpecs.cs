using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Metrics;

namespace Wormhole.Tunnel.Tests.Metrics;

public sealed class PrometheusEndpointSpecs
{
    [Theory]
    [InlineData(null, "/metrics")]
    [InlineData("/internal/prom", "/internal/prom")]
    public async Task The_endpoint_serves_the_exposition_as_text_format_0_0_4(string? pattern, string path)
    {
        var metrics = new WormholeMetrics();
        for (var i = 0; i < 4; i++)
        {
            metrics.Pairing("paired");
        }

        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        await using var app = builder.Build();
        app.Urls.Add("http://127.0.0.1:0");
        if (pattern is null)
        {
            app.MapPrometheus(metrics);
        }
        else
        {
            app.MapPrometheus(metrics, pattern);
        }
        await app.StartAsync();
        try
        {
            var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
            using var http = new HttpClient { BaseAddress = new Uri(address) };

            using var response = await http.GetAsync(new Uri(path, UriKind.Relative));

            response.StatusCode.Should().Be(HttpStatusCode.OK);
            response.Content.Headers.ContentType!.ToString().Should().Be("text/plain; version=0.0.4; charset=utf-8");
            (await response.Content.ReadAsStringAsync()).Should().Contain("wormhole_pairing_attempts_total{outcome=\"paired\"} 4\n");
        }
        finally
        {
            await app.StopAsync();
        }
    }
}
