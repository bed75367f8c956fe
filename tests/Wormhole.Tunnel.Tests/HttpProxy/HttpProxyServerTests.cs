using System.Collections.Immutable;
using System.Net;
using System.Net.Http;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Wormhole.Tunnel.Global;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.HttpProxy;
using Wormhole.Tunnel.Metrics;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Sinks;
using Wormhole.Tunnel.Tests.Server;
using static Wormhole.Tunnel.Tests.Proxy.SocketTestKit;

namespace Wormhole.Tunnel.Tests.HttpProxy;

/// <summary>
/// The HTTP listeners with real sockets: backends on loopback answering their own name, a global HTTP listener in
/// front of them, and a client as a user's would be.
/// </summary>
public sealed class HttpProxyServerTests : IAsyncLifetime
{
    private readonly List<WebApplication> _backends = [];
    private readonly GlobalSites _sites = new(TimeProvider.System, NullLogger<GlobalSites>.Instance);
    private readonly HttpProxyServer _proxy;

    public HttpProxyServerTests() =>
        _proxy = new HttpProxyServer(new WormholeMetrics(), _sites, NullLoggerFactory.Instance, TimeProvider.System);

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        await _proxy.DisposeAsync();
        foreach (var backend in _backends)
        {
            await backend.DisposeAsync();
        }
    }

    [Fact]
    public async Task One_keep_alive_connection_to_a_global_listener_gets_answers_from_both_sites()
    {
        var port = await GlobalWebAsync(("a", await BackendAsync("a")), ("b", await BackendAsync("b")));
        using var client = OneConnectionClient();

        var answers = new List<string>();
        for (var i = 0; i < 40; i++)
        {
            answers.Add(await client.GetStringAsync($"http://127.0.0.1:{port}/").WaitAsync(Patience));
        }

        answers.Should().Contain("a").And.Contain("b", "each request is balanced, not each connection");
        answers.Should().OnlyContain(a => a == "a" || a == "b");
        _proxy.OpenConnections.Should().Be(1, "the client kept one connection open for all of its requests");
    }

    [Fact]
    public async Task A_site_that_refuses_costs_no_failed_GET_the_request_is_retried_on_another_site()
    {
        // The refusing site is the preferred one, so the very first request goes there and must be retried.
        var port = await GlobalWebAsync(("dead", FreePort()), ("alive", await BackendAsync("alive")), priority: true);
        using var client = OneConnectionClient();

        for (var i = 0; i < 20; i++)
        {
            using var response = await client.GetAsync($"http://127.0.0.1:{port}/").WaitAsync(Patience);
            response.StatusCode.Should().Be(HttpStatusCode.OK, $"request {i} is retried on the site that answers");
            (await response.Content.ReadAsStringAsync()).Should().Be("alive");
        }

        _sites.Find("web")!.Sites.Single(s => s.Site.Peer == "dead").Healthy.Should().BeFalse("the refused connect marked it down");
    }

    [Fact]
    public async Task A_POST_that_a_refusing_site_failed_is_not_sent_again()
    {
        var port = await GlobalWebAsync(("dead", FreePort()), ("alive", await BackendAsync("alive")), priority: true);
        using var client = OneConnectionClient();

        using var response = await client.PostAsync($"http://127.0.0.1:{port}/", new StringContent("once")).WaitAsync(Patience);

        response.StatusCode.Should().Be(HttpStatusCode.BadGateway, "a request that is not idempotent is never replayed");
        _sites.Find("web")!.Sites.Single(s => s.Site.Peer == "dead").Healthy.Should().BeFalse();
    }

    [Fact]
    public async Task An_h2c_client_is_served_and_balanced_per_request()
    {
        var port = await GlobalWebAsync(("a", await BackendAsync("a", http2: true)), ("b", await BackendAsync("b", http2: true)));
        using var client = OneConnectionClient();

        var answers = new List<string>();
        for (var i = 0; i < 40; i++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, $"http://127.0.0.1:{port}/")
            {
                Version = HttpVersion.Version20,
                VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            };
            using var response = await client.SendAsync(request).WaitAsync(Patience);
            response.Version.Should().Be(HttpVersion.Version20);
            answers.Add(await response.Content.ReadAsStringAsync());
        }

        answers.Should().Contain("a").And.Contain("b");
        _proxy.OpenConnections.Should().Be(1);
    }

    [Fact]
    public async Task The_proxy_sink_opens_listeners_marked_HTTP_on_the_HTTP_proxy_and_the_others_at_L4()
    {
        var tcp = new RecordingProxyTable();
        var http = new RecordingHttpListeners();
        var sink = new ProxySink(tcp, _ => null, http);
        var plan = Plan.Empty with
        {
            RemoteListeners =
            [
                new RemoteListener("p", "web", 25001, IPAddress.Parse("10.188.0.2"), 20000, 80, "") { Http = HttpMode.NoHealthPath },
                new RemoteListener("p", "db", 25002, IPAddress.Parse("10.188.0.2"), 20001, 5432, ""),
            ],
        };

        (await sink.ApplyAsync(plan, CancellationToken.None)).Unavailable.Should().BeEmpty();

        tcp.Active.Select(s => s.App).Should().Equal("db");
        http.Applied.Select(s => s.App).Should().Equal("web");
        http.Applied.Single().Site.Should().Be(new HttpSite("p", IPAddress.Parse("10.188.0.2"), 20000));

        http.Refuse = true;
        var result = await sink.ApplyAsync(plan with { RemoteListeners = [plan.RemoteListeners[0] with { Port = 25003 }, plan.RemoteListeners[1]] }, CancellationToken.None);
        result.Unavailable.Should().Equal(new UnavailableListener(new ListenerKey("p", "web"), 25003, "address already in use"));
    }

    /// <summary>A global HTTP app "web" over the given sites on loopback; returns its listener's port.</summary>
    private async Task<int> GlobalWebAsync((string Peer, int Port) first, (string Peer, int Port) second, bool priority = false)
    {
        var port = FreePort();
        var listener = new GlobalListener("web", port, 80,
            [new GlobalSite(first.Peer, IPAddress.Loopback, first.Port, 0), new GlobalSite(second.Peer, IPAddress.Loopback, second.Port, priority ? 1 : 0)])
        {
            Http = HttpMode.NoHealthPath,
        };
        await _sites.ApplyAsync(Plan.Empty with { GlobalListeners = [listener] }, CancellationToken.None);
        var failures = await _proxy.ApplyAsync([new HttpListenerSpec(new ListenerKey(null, "web", Global: true), IPAddress.Loopback, port, null, HttpMode.NoHealthPath)], CancellationToken.None);
        failures.Should().BeEmpty();
        return port;
    }

    /// <summary>A backend on loopback that answers every request with its name; returns its port.</summary>
    private async Task<int> BackendAsync(string name, bool http2 = false)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, l => l.Protocols = http2
            ? Microsoft.AspNetCore.Server.Kestrel.Core.HttpProtocols.Http2
            : Microsoft.AspNetCore.Server.Kestrel.Core.HttpProtocols.Http1));
        var app = builder.Build();
        app.MapFallback(() => Results.Text(name));
        var url = await LoopbackHost.StartAsync(app, _backends);
        return url.Port;
    }

    private static HttpClient OneConnectionClient() => new(new SocketsHttpHandler { MaxConnectionsPerServer = 1, UseProxy = false });

    private sealed class RecordingHttpListeners : IHttpListeners
    {
        public bool Refuse { get; set; }

        public IReadOnlyList<HttpListenerSpec> Applied { get; private set; } = [];

        public Task<IReadOnlyList<(HttpListenerSpec Spec, string Reason)>> ApplyAsync(IReadOnlyCollection<HttpListenerSpec> desired, CancellationToken cancellationToken)
        {
            Applied = [.. desired];
            IReadOnlyList<(HttpListenerSpec, string)> failures = Refuse ? [.. desired.Select(d => (d, "address already in use"))] : [];
            return Task.FromResult(failures);
        }
    }
}
