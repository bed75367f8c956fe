using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Wormhole.Tunnel.E2E.Infrastructure;

namespace Wormhole.Tunnel.E2E.Tunnel;

/// <summary>
/// Global services (<c>--global-services</c> on the hub; off by default, so these tests say so): two spokes expose
/// <c>web</c>, each backend answering with its own name, and a client loops over the hub's one global listener while a
/// site fails — its process killed with SIGKILL, or its network gone (its veth down: packets vanish, connects time out).
/// </summary>
public class GlobalServicesTests
{
    private const int Streak = 20;

    [RootFact]
    public async Task The_global_listener_spreads_connections_and_moves_them_off_a_dead_site_then_takes_it_back()
    {
        await using var lab = await TunnelLab.CreateAsync("site-a", "site-b");
        var a = lab.Network["site-a"];
        var b = lab.Network["site-b"];
        lab.WriteApps(a, ("web", $"127.0.0.1:{lab.StartBackend(a, "from site-a")}"));
        lab.WriteApps(b, ("web", $"127.0.0.1:{lab.StartBackend(b, "from site-b")}"));
        await lab.StartHubAsync(["--global-services"]);
        var spokeA = await lab.StartSpokeAsync(a);
        await lab.StartSpokeAsync(b);

        var port = 0;
        await TunnelLab.EventuallyAsync(
            async () => await GlobalWebAsync(lab) is { } web && web["sites"]!.AsArray().Count == 2 && (port = PortOf(web)) > 0,
            "the hub lists web with both sites");
        var seen = new HashSet<string>();
        await TunnelLab.EventuallyAsync(async () => (await TunnelLab.FetchAsync(lab.Hub, port)) is { } body && seen.Add(body) && seen.Count == 2,
            "connections reach both sites");
        seen.Should().BeEquivalentTo("from site-a", "from site-b");
        (await TunnelLab.ApiAsync(lab.Hub, "/api/apps")).AsArray().Where(x => (string)x!["name"]! == "web").Select(x => (string)x!["peer"]!)
            .Should().BeEquivalentTo(["site-a", "site-b"], "the per-peer listeners stay next to the global one");

        // (a) The spoke's process is killed: its tunnel goes with it, so connects to its site time out.
        var killed = await FailAsync(lab, port, "site-a", spokeA.Kill, "from site-b");
        Report("L4, spoke killed (SIGKILL)", killed);
        var restarted = Stopwatch.StartNew();
        await lab.StartSpokeAsync(a, waitForPairing: false); // it reaches the hub with its cached address, no new pairing
        await BackInRotationAsync(lab, port, "from site-a");
        Timings.Record("global services: spoke restarted -> its site answers through the global listener again", [restarted.Elapsed]);

        // (b) The spoke's network is gone: its veth is down, packets vanish.
        var unplugged = await FailAsync(lab, port, "site-b", () => Ip(b, "down"), "from site-a");
        Report("L4, spoke's veth down", unplugged);
        var plugged = Stopwatch.StartNew();
        Ip(b, "up");
        await BackInRotationAsync(lab, port, "from site-b");
        Timings.Record("global services: veth up -> its site answers through the global listener again", [plugged.Elapsed]);

        using (var metrics = await lab.Hub.HttpGetAsync("http://127.0.0.1:8090/metrics"))
        {
            var text = await metrics.Content.ReadAsStringAsync();
            text.Should().Contain("wormhole_global_site_healthy{app=\"web\",site=\"site-a\"} 1")
                .And.Contain("wormhole_global_site_healthy{app=\"web\",site=\"site-b\"} 1")
                .And.Contain("wormhole_proxy_connections_total{app=\"web\",kind=\"global\"}");
        }

        foreach (var (what, r) in new[] { ("kill", killed), ("veth down", unplugged) })
        {
            r.Failed.Should().BeLessThanOrEqualTo(1, "after the {0}, only a request in flight at the fault may fail", what);
            r.SiteDown.Should().NotBeNull("after the {0}, the API showed the site down", what);
        }
    }

    private sealed record Failover(TimeSpan Recovered, int Failed, TimeSpan? SiteDown);

    /// <summary>
    /// Loops requests through the global listener, injects the fault, and loops on until <see cref="Streak"/> requests in
    /// a row succeed, all from <paramref name="survivor"/>. Recovered: from the fault to the end of the streak's first request.
    /// </summary>
    private static async Task<Failover> FailAsync(TunnelLab lab, int port, string site, Action fault, string survivor)
    {
        for (var i = 0; i < 5; i++)
        {
            (await TunnelLab.FetchAsync(lab.Hub, port)).Should().NotBeNull("before the fault, requests succeed");
        }

        var clock = Stopwatch.StartNew();
        fault();
        var failed = 0;
        var streak = 0;
        TimeSpan? streakStart = null;
        TimeSpan? siteDown = null;
        var probe = Task.Run(async () =>
        {
            while (clock.Elapsed < TunnelLab.Patience)
            {
                if (await GlobalWebAsync(lab) is { } web && web["sites"]!.AsArray().Any(s => (string)s!["peer"]! == site && !(bool)s["healthy"]!))
                {
                    siteDown = clock.Elapsed;
                    return;
                }

                await Task.Delay(20);
            }
        });
        while (streak < Streak)
        {
            clock.Elapsed.Should().BeLessThan(TunnelLab.Patience, "requests succeed again after the fault");
            var body = await TunnelLab.FetchAsync(lab.Hub, port, TimeSpan.FromSeconds(10));
            if (body is null)
            {
                failed++;
                streak = 0;
                continue;
            }

            body.Should().Be(survivor, "a site that is down gets no new connection once it has failed one");
            streakStart = streak++ == 0 ? clock.Elapsed : streakStart;
        }

        await probe;
        return new Failover(streakStart!.Value, failed, siteDown);
    }

    /// <summary>How long until a request through the global listener reaches <paramref name="site"/>'s backend again.</summary>
    private static async Task<TimeSpan> BackInRotationAsync(TunnelLab lab, int port, string site) =>
        await TunnelLab.EventuallyAsync(async () => await TunnelLab.FetchAsync(lab.Hub, port) == site, $"{site} answers again");

    private static void Report(string what, Failover r)
    {
        Timings.Record($"global services {what}: fault -> {Streak} requests in a row succeed ({r.Failed} failed)", [r.Recovered]);
        Timings.Record($"global services {what}: fault -> the API shows the site down", [r.SiteDown ?? TimeSpan.Zero]);
    }

    private static void Ip(Site site, string state) =>
        site.RunCheckedAsync(TestTools.Ip, "link", "set", "eth0", state).GetAwaiter().GetResult();

    private static async Task<JsonNode?> GlobalWebAsync(TunnelLab lab) =>
        (await TunnelLab.ApiAsync(lab.Hub, "/api/global-apps/v1")).AsArray().FirstOrDefault(x => (string?)x!["name"] == "web");

    private static int PortOf(JsonNode web) => int.Parse(((string)web["address"]!).Split(':')[1], CultureInfo.InvariantCulture);
}
