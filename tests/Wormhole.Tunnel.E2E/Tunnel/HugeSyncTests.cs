using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text;
using Wormhole.Tunnel.E2E.Infrastructure;
using Xunit.Abstractions;

namespace Wormhole.Tunnel.E2E.Tunnel;

/// <summary>
/// A paired spoke syncs 100,000 apps (the hub exposes its quota of them, --max-apps-per-peer) and then withdraws them
/// with an empty sync: the hub's memory returns near its baseline, and another spoke's app stays exposed and
/// reachable throughout.
/// </summary>
public sealed class HugeSyncTests(ITestOutputHelper output)
{
    private const int HugeCount = 100_000;
    private const int Quota = 1000;
    private const long BoundKb = 30 * 1024;

    [RootFact]
    public async Task After_a_100000_app_sync_is_withdrawn_the_hubs_memory_returns_to_its_baseline_and_the_other_spokes_app_stays_exposed()
    {
        await using var lab = await TunnelLab.CreateAsync("spoke1", "big");
        var spoke = lab.Network["spoke1"];
        var big = lab.Network["big"];
        var backend = lab.StartBackend(spoke, "still here");
        var hub = await lab.StartHubAsync();
        lab.WriteApps(spoke, ("web", $"127.0.0.1:{backend}"));
        await lab.StartSpokeAsync(spoke);
        await lab.StartSpokeAsync(big);
        int? port = null;
        await TunnelLab.EventuallyAsync(
            async () => (port ??= await TunnelLab.ExposedPortAsync(lab.Hub, "web")) is { } p && await TunnelLab.FetchAsync(lab.Hub, p) == "still here",
            "the other spoke's app answers through the hub");
        var bigAddress = (string)(await TunnelLab.ApiAsync(lab.Hub, "/api/peers/v1")).AsArray().Single(p => (string)p!["name"]! == "big")!["ip"]!;
        using var bigClient = big.CreateHttpClient(TimeSpan.FromSeconds(30));
        var syncUrl = new Uri($"http://{lab.HubTunnelAddress}:8081/sync");

        // The baseline: the hub after one small sync of this peer's (the paths a sync takes are warm).
        await SyncAsync(bigClient, syncUrl, bigAddress, 10);
        await TunnelLab.EventuallyAsync(async () => await CountAsync(lab.Hub, "big") == 10, "the peer's 10 apps are exposed");
        await SyncAsync(bigClient, syncUrl, bigAddress, 0);
        await TunnelLab.EventuallyAsync(async () => await CountAsync(lab.Hub, "big") == 0, "the peer's apps are withdrawn");
        var baseline = await SettledRssKbAsync(hub.Id);

        var watch = Stopwatch.StartNew();
        await SyncAsync(bigClient, syncUrl, bigAddress, HugeCount);
        await TunnelLab.EventuallyAsync(async () => await CountAsync(lab.Hub, "big") == Quota, $"the hub exposes the peer's quota of {Quota} apps");
        var peak = RssKb(hub.Id);
        (await TunnelLab.FetchAsync(lab.Hub, port!.Value)).Should().Be("still here", "a peer at its quota does not push another peer's app out");

        await SyncAsync(bigClient, syncUrl, bigAddress, 0);
        await TunnelLab.EventuallyAsync(async () => await CountAsync(lab.Hub, "big") == 0, "the hub withdraws the peer's apps");
        var withdrawn = Stopwatch.StartNew();
        long after;
        while ((after = RssKb(hub.Id)) >= baseline + BoundKb && withdrawn.Elapsed < TimeSpan.FromSeconds(20))
        {
            await Task.Delay(100);
        }

        var report = $"hub RSS: baseline {baseline / 1024.0:F1} MB, after the {HugeCount}-app sync {peak / 1024.0:F1} MB, after withdrawal {after / 1024.0:F1} MB ({withdrawn.Elapsed.TotalSeconds:F1} s after the withdrawal, {watch.Elapsed.TotalSeconds:F1} s after the huge sync)";
        output.WriteLine(report);
        after.Should().BeLessThan(baseline + BoundKb, $"the hub's RSS returns within {BoundKb / 1024} MB of its baseline within 20 s of the withdrawal ({report})");

        // The collection runs 3 s after the withdrawing sync; RSS may fall below the bound before it (a GC of its own).
        await hub.WaitForOutputAsync("After a large sync: full compacting garbage collection", TunnelLab.Patience);
        output.WriteLine(string.Join('\n', hub.Output.Split('\n').Where(l => l.Contains("After a large sync", StringComparison.Ordinal))));
        (await TunnelLab.ExposedPortAsync(lab.Hub, "web")).Should().Be(port, "the other spoke's app keeps its port");
        (await TunnelLab.FetchAsync(lab.Hub, port.Value)).Should().Be("still here");
    }

    /// <summary>One sync of <paramref name="count"/> apps, as the spoke sends it, from its tunnel address.</summary>
    private static async Task SyncAsync(HttpClient client, Uri url, string source, int count)
    {
        var body = new StringBuilder(count * 48 + 64).Append("{\"Peer\":\"big\",\"Metadata\":null,\"Apps\":[");
        for (var i = 0; i < count; i++)
        {
            body.Append(i == 0 ? "" : ",").Append(CultureInfo.InvariantCulture, $"{{\"name\":\"a{i:D6}\",\"address\":\"{source}:{20000 + (i % 5000)}\"}}");
        }

        using var content = new ByteArrayContent(Encoding.UTF8.GetBytes(body.Append("]}").ToString()));
        using var response = await client.PostAsync(url, content);
        response.StatusCode.Should().Be(HttpStatusCode.OK, await response.Content.ReadAsStringAsync());
    }

    private static async Task<int> CountAsync(Site hub, string peer) =>
        (await TunnelLab.ApiAsync(hub, "/api/apps")).AsArray().Count(a => (string?)a!["peer"] == peer);

    /// <summary>The RSS once two readings a second apart differ by under 1 MB (bounded: 10 s).</summary>
    private static async Task<long> SettledRssKbAsync(int pid)
    {
        var previous = RssKb(pid);
        for (var i = 0; i < 10; i++)
        {
            await Task.Delay(1000);
            var now = RssKb(pid);
            if (Math.Abs(now - previous) < 1024)
            {
                return now;
            }

            previous = now;
        }

        return previous;
    }

    private static long RssKb(int pid) =>
        long.Parse(File.ReadAllLines($"/proc/{pid}/status").First(l => l.StartsWith("VmRSS:", StringComparison.Ordinal)).Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
}
