using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Wormhole.Tunnel.E2E.Infrastructure;

namespace Wormhole.Tunnel.E2E.Tunnel;

/// <summary>
/// Global services in HTTP mode: two spokes expose <c>web</c> with <c>protocol: http</c> in their apps file, each backend
/// answering with its own name; the hub (<c>--global-services</c>) balances every request over both sites, and a client
/// keeping one connection open loses no request when one spoke's process is killed with SIGKILL.
/// </summary>
public class HttpGlobalServicesTests
{
    private const int Streak = 20;

    [RootFact]
    public async Task One_keep_alive_client_gets_both_sites_and_loses_no_request_when_a_spoke_is_killed()
    {
        await using var lab = await TunnelLab.CreateAsync("site-a", "site-b");
        var a = lab.Network["site-a"];
        var b = lab.Network["site-b"];
        WriteHttpApp(lab, a, lab.StartBackend(a, "from site-a"));
        WriteHttpApp(lab, b, lab.StartBackend(b, "from site-b"));
        await lab.StartHubAsync(["--global-services"]);
        var spokeA = await lab.StartSpokeAsync(a);
        await lab.StartSpokeAsync(b);

        var port = 0;
        await TunnelLab.EventuallyAsync(
            async () => await GlobalWebAsync(lab) is { } web && web["sites"]!.AsArray().Count == 2 && (port = PortOf(web)) > 0,
            "the hub lists web with both sites");

        // One client, one connection: per-request balancing still reaches both sites.
        using var client = lab.Hub.CreateHttpClient();
        client.Timeout = TimeSpan.FromSeconds(10);
        var url = $"http://127.0.0.1:{port}/";
        var seen = new HashSet<string>();
        await TunnelLab.EventuallyAsync(async () => seen.Add(await client.GetStringAsync(url)) && seen.Count == 2, "requests reach both sites");
        seen.Should().BeEquivalentTo("from site-a", "from site-b");

        var clock = Stopwatch.StartNew();
        spokeA.Kill();
        var failed = 0;
        var streak = 0;
        TimeSpan? streakStart = null;
        while (streak < Streak)
        {
            clock.Elapsed.Should().BeLessThan(TunnelLab.Patience, "requests succeed again after the fault");
            string? body;
            try
            {
                using var response = await client.GetAsync(url);
                body = response.IsSuccessStatusCode ? await response.Content.ReadAsStringAsync() : null;
            }
            catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException)
            {
                body = null;
            }

            if (body is null)
            {
                failed++;
                streak = 0;
                continue;
            }

            if (body != "from site-b")
            {
                // Answered by site-a before its death reached it: a success, but not yet the survivor's streak.
                streak = 0;
                continue;
            }

            streakStart = streak++ == 0 ? clock.Elapsed : streakStart;
        }

        Timings.Record($"global services HTTP, spoke killed (SIGKILL): fault -> {Streak} requests in a row succeed ({failed} failed)", [streakStart!.Value]);
        failed.Should().Be(0, "a GET that failed before its response began is retried on the other site");
    }

    private static void WriteHttpApp(TunnelLab lab, Site site, int backendPort)
    {
        var path = lab.AppsFile(site);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path + ".tmp", $"apps:\n  - name: web\n    address: 127.0.0.1:{backendPort}\n    protocol: http\n");
        File.Move(path + ".tmp", path, overwrite: true);
    }

    private static async Task<JsonNode?> GlobalWebAsync(TunnelLab lab) =>
        (await TunnelLab.ApiAsync(lab.Hub, "/api/global-apps/v1")).AsArray().FirstOrDefault(x => (string?)x!["name"] == "web");

    private static int PortOf(JsonNode web) => int.Parse(((string)web["address"]!).Split(':')[1], CultureInfo.InvariantCulture);
}
