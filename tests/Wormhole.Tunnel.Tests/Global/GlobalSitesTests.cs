using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Global;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Proxy;
using Wormhole.Tunnel.Sources;

namespace Wormhole.Tunnel.Tests.Global;

public sealed class GlobalSitesTests
{
    private readonly List<(string App, string Peer, bool Healthy)> _changes = [];
    private readonly GlobalSites _sites;

    public GlobalSitesTests()
    {
        _sites = new GlobalSites(TimeProvider.System, NullLogger<GlobalSites>.Instance)
        {
            OnHealthChanged = (app, site, healthy, _) => { lock (_changes) { _changes.Add((app.Name, site.Peer, healthy)); } },
        };
    }

    [Fact]
    public async Task New_connections_go_to_the_healthy_site_with_the_fewest_connections_and_skip_a_site_that_failed()
    {
        await ApplyAsync(Plan(("web", ["a", "b", "c"], null)));
        var web = _sites.Find("web")!;

        var first = web.Pick(0)!;
        web.Connected(first);
        var second = web.Pick(0)!;
        web.Connected(second);
        var third = web.Pick(0)!;
        new[] { first.Name, second.Name, third.Name }.Should().OnlyHaveUniqueItems("each pick goes to a site with fewer connections");

        web.Failed(third, "connection refused");
        _changes.Should().Equal(("web", third.Name, false));
        for (var i = 0; i < 20; i++)
        {
            web.Pick(0)!.Name.Should().NotBe(third.Name, "a site that refused is down until it connects again");
        }

        web.Pick(1UL << first.Index | 1UL << second.Index)!.Name.Should().Be(third.Name, "with the healthy sites tried, a down site is still worth a try");
        web.Pick(0b111).Should().BeNull("every site was tried");
    }

    [Fact]
    public async Task Priority_sites_take_every_connection_while_healthy_and_the_next_ones_only_when_they_are_down()
    {
        await ApplyAsync(Plan(("web", ["c", "a", "b"], ["c", "a"])));
        var web = _sites.Find("web")!;
        for (var i = 0; i < 5; i++)
        {
            var pick = web.Pick(0)!;
            pick.Name.Should().Be("c");
            web.Connected(pick);
        }

        web.Failed(web.Sites[0].Upstream, "timed out");
        web.Pick(0)!.Name.Should().Be("a");
        web.Failed(web.Sites[1].Upstream, "timed out");
        web.Pick(0)!.Name.Should().Be("b");
    }

    [Fact]
    public async Task A_down_site_is_healthy_again_after_two_connects_in_a_row_and_a_site_that_leaves_the_plan_is_gone_at_once()
    {
        await ApplyAsync(Plan(("web", ["a", "b"], null)));
        var web = _sites.Find("web")!;
        var a = web.Sites.Single(s => s.Site.Peer == "a");
        web.Failed(a.Upstream, "refused");
        web.Connected(a.Upstream);
        a.Healthy.Should().BeFalse("one success is not enough");
        web.Connected(a.Upstream);
        a.Healthy.Should().BeTrue();
        _changes.Should().Equal(("web", "a", false), ("web", "a", true));

        await ApplyAsync(Plan(("web", ["b", "a"], ["b"])));
        _sites.Find("web")!.Sites.Single(s => s.Site.Peer == "a").ActiveConnections.Should().Be(2, "a site that stays keeps its connections");
        await ApplyAsync(Plan(("web", ["b"], null)));
        for (var i = 0; i < 10; i++)
        {
            web.Pick(0)!.Name.Should().Be("b");
        }

        await ApplyAsync(Plan());
        _sites.Find("web").Should().BeNull();
    }

    [Fact]
    public async Task The_probe_marks_a_refusing_site_down_and_brings_it_back_after_two_good_probes()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var port = ((IPEndPoint)listener.LocalEndPoint!).Port;
        listener.Listen();
        await ApplyAsync(new GlobalListener("web", 25001, 80, [new GlobalSite("a", IPAddress.Loopback, port, 0)]));
        var probe = new GlobalHealthProbe(_sites, TimeProvider.System);
        var site = _sites.Find("web")!.Sites[0];

        await probe.ProbeAllAsync(CancellationToken.None);
        site.Healthy.Should().BeTrue();

        listener.Close();
        await probe.ProbeAllAsync(CancellationToken.None);
        site.Healthy.Should().BeFalse("nothing listens there any more");

        using var again = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        again.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        again.Bind(new IPEndPoint(IPAddress.Loopback, port));
        again.Listen();
        await probe.ProbeAllAsync(CancellationToken.None);
        site.Healthy.Should().BeFalse();
        await probe.ProbeAllAsync(CancellationToken.None);
        site.Healthy.Should().BeTrue();
    }

    [Fact]
    public async Task The_api_view_names_each_app_where_it_is_reached_and_its_sites_health()
    {
        await ApplyAsync(Plan(("web", ["a", "b"], null)));
        _sites.Find("web")!.Failed(_sites.Find("web")!.Sites[1].Upstream, "refused");

        var plain = GlobalAppsApi.View(_sites, null).Should().ContainSingle().Subject;
        plain.Address.Should().Be("localhost:25010");
        plain.Sites.Should().Equal(new GlobalSiteView("a", true, 0), new GlobalSiteView("b", false, 0));
        GlobalAppsApi.View(_sites, "wormhole").Single().Address.Should().Be("global-web.wormhole:80");
    }

    private Task ApplyAsync(params GlobalListener[] listeners) =>
        _sites.ApplyAsync(Tunnel.Planning.Plan.Empty with { GlobalListeners = [.. listeners] }, CancellationToken.None);

    /// <summary>Plans each app's sites through the real planner (peers at 10.188.0.2, .3, … in the order given).</summary>
    private static GlobalListener[] Plan(params (string App, string[] Peers, string[]? Priority)[] apps)
    {
        var peers = apps.SelectMany(a => a.Peers).Distinct().Order(StringComparer.Ordinal).ToList();
        var remote = peers.Select((p, i) => new PeerApps(p, IPAddress.Parse($"10.188.0.{i + 2}"),
            apps.Where(a => a.Peers.Contains(p)).Select(a => new AppDescriptor(a.App, $"10.188.0.{i + 2}:20000", p, 80)).ToList())).ToList();
        var priorities = apps.Where(a => a.Priority is not null).ToDictionary(a => a.App, a => (IReadOnlyList<string>)a.Priority!);
        var input = new PlanInput("hub", IPAddress.Parse("10.188.0.1"), [], remote, PortRange.Local, new PortRange(25000, 25100))
        {
            GlobalServices = new GlobalServicesOptions(true, priorities),
        };
        return [.. Planner.Build(input).GlobalListeners.Select(g => g with { Port = 25010 })];
    }
}
