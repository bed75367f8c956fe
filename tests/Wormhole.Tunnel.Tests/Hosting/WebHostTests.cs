using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging.Abstractions;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.Runtime;

namespace Wormhole.Tunnel.Tests.Hosting;

/// <summary>One host, one Kestrel server, one listener per port: each port serves its own routes only.</summary>
public class WebHostTests
{
    [Fact]
    public async Task Each_port_serves_only_its_own_routes_whatever_the_host_header_says()
    {
        var (publicPort, adminPort) = (FreePort(), FreePort());
        Listener[] listeners =
        [
            new("public", new IPEndPoint(IPAddress.Loopback, publicPort), 1024, (routes, _) => routes.MapGet("/hello", () => "public")),
            new("admin", new IPEndPoint(IPAddress.Loopback, adminPort), 1024, (routes, _) => routes.MapGet("/api/peers", () => "admin")),
        ];
        await using var app = WebHost.CreateBuilder(listeners, NullLoggerFactory.Instance).Build();
        app.MapListeners(listeners);
        await app.StartAsync();
        using var http = new HttpClient();

        (await http.GetStringAsync($"http://127.0.0.1:{publicPort}/hello")).Should().Be("public");
        (await http.GetStringAsync($"http://127.0.0.1:{adminPort}/api/peers")).Should().Be("admin");
        using var sneaky = new HttpRequestMessage(HttpMethod.Get, $"http://127.0.0.1:{publicPort}/api/peers");
        sneaky.Headers.Host = $"127.0.0.1:{adminPort}";
        (await http.SendAsync(sneaky)).StatusCode.Should().Be(HttpStatusCode.NotFound, "the admin routes are not on the public port");
        (await http.GetAsync($"http://127.0.0.1:{adminPort}/hello")).StatusCode.Should().Be(HttpStatusCode.NotFound);
        await app.StopAsync();
    }

    [Fact]
    public async Task Each_listener_keeps_its_own_request_body_limit()
    {
        var (small, large) = (FreePort(), FreePort());
        Listener[] listeners =
        [
            new("small", new IPEndPoint(IPAddress.Loopback, small), 1024, (routes, _) => routes.MapPost("/in", Drain)),
            new("large", new IPEndPoint(IPAddress.Loopback, large), 64 * 1024, (routes, _) => routes.MapPost("/in", Drain)),
        ];
        await using var app = WebHost.CreateBuilder(listeners, NullLoggerFactory.Instance).Build();
        app.MapListeners(listeners);
        await app.StartAsync();
        using var http = new HttpClient();
        var body = new byte[8 * 1024];

        (await http.PostAsync($"http://127.0.0.1:{large}/in", new ByteArrayContent(body))).StatusCode.Should().Be(HttpStatusCode.OK);
        (await http.PostAsync($"http://127.0.0.1:{small}/in", new ByteArrayContent(body))).StatusCode.Should().Be(HttpStatusCode.RequestEntityTooLarge);
        await app.StopAsync();
    }

    [Fact]
    public async Task A_loop_that_dies_stops_the_host_and_sets_exit_code_1()
    {
        var builder = WebHost.CreateBuilder([], NullLoggerFactory.Instance);
        builder.Services.AddSingleton<ExitStatus>();
        builder.Services.AddSingleton(new BackgroundLoop("steady", ct => Task.Delay(Timeout.Infinite, ct)));
        builder.Services.AddSingleton(new BackgroundLoop("fragile", _ => throw new InvalidOperationException("broken")));
        builder.Services.AddHostedService<LoopsService>();
        await using var app = builder.Build();

        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var code = await Side.RunAsync(app, [], NullLogger.Instance, () => { }, deadline.Token);

        deadline.IsCancellationRequested.Should().BeFalse("the dying loop stopped the host");
        code.Should().Be(1);
        var exit = app.Services.GetRequiredService<ExitStatus>();
        exit.Failure.Should().Contain("fragile").And.Contain("broken");
    }

    private static async Task Drain(HttpContext context) => await context.Request.Body.CopyToAsync(Stream.Null);

    private static int FreePort()
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)socket.LocalEndPoint!).Port;
    }
}
