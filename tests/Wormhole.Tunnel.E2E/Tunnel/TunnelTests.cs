using System.Net;
using System.Security.Cryptography;
using Wormhole.Tunnel.E2E.Infrastructure;

namespace Wormhole.Tunnel.E2E.Tunnel;

/// <summary>
/// Hub and spoke as separate processes in their own network namespaces, over real WireGuard (wireguard-go),
/// driven only through their apps files, HTTP APIs and signals — as a user would.
/// </summary>
public class TunnelTests
{
    [RootFact]
    public async Task Spoke_app_is_reachable_through_the_hub_then_gone_when_unexposed_and_back_when_reexposed()
    {
        await using var lab = await TunnelLab.CreateAsync("spoke1");
        var spoke = lab.Network["spoke1"];
        var backend = lab.StartBackend(spoke, "hello from spoke1");
        await lab.StartHubAsync();
        await lab.StartSpokeAsync(spoke);

        var exposeTimes = new List<TimeSpan>();
        var unexposeTimes = new List<TimeSpan>();
        for (var round = 0; round < 20; round++)
        {
            int? port = null;
            lab.WriteApps(spoke, ("web", $"127.0.0.1:{backend}"));
            exposeTimes.Add(await TunnelLab.EventuallyAsync(
                async () => (port ??= await TunnelLab.ExposedPortAsync(lab.Hub, "web")) is { } p && await TunnelLab.FetchAsync(lab.Hub, p) == "hello from spoke1",
                "the spoke's app answers through the hub"));

            var peers = (await TunnelLab.ApiAsync(lab.Hub, "/api/apps")).AsArray();
            peers.Should().ContainSingle().Which!["peer"]!.GetValue<string>().Should().Be("spoke1");

            lab.WriteApps(spoke);
            unexposeTimes.Add(await TunnelLab.EventuallyAsync(
                async () => await TunnelLab.ExposedPortAsync(lab.Hub, "web") is null && await TunnelLab.FetchAsync(lab.Hub, port!.Value) is null,
                "the app is gone from the hub"));
        }

        Timings.Record("apps file: expose -> reachable through the hub", exposeTimes);
        Timings.Record("apps file: unexpose -> gone from the hub", unexposeTimes);
    }

    [RootFact]
    public async Task Hub_app_reaches_the_spoke_through_the_long_poll()
    {
        await using var lab = await TunnelLab.CreateAsync("spoke1");
        var spoke = lab.Network["spoke1"];
        var backend = lab.StartBackend(lab.Hub, "hello from the hub");
        await lab.StartHubAsync();
        var spokeProcess = await lab.StartSpokeAsync(spoke);
        await spokeProcess.WaitForOutputAsync("long-poll", TunnelLab.Patience);

        var times = new List<TimeSpan>();
        for (var round = 0; round < 20; round++)
        {
            int? port = null;
            lab.WriteApps(lab.Hub, ("dashboard", $"localhost:{backend}"));
            times.Add(await TunnelLab.EventuallyAsync(
                async () => (port ??= await TunnelLab.ExposedPortAsync(spoke, "dashboard")) is { } p && await TunnelLab.FetchAsync(spoke, p) == "hello from the hub",
                "the hub's app answers on the spoke"));
            lab.WriteApps(lab.Hub);
            await TunnelLab.EventuallyAsync(async () => await TunnelLab.ExposedPortAsync(spoke, "dashboard") is null, "the hub's app is gone from the spoke");
        }

        Timings.Record("apps file on the hub: expose -> reachable on the spoke", times);
        var apps = (await TunnelLab.ApiAsync(spoke, "/api/apps")).AsArray();
        apps.Should().BeEmpty();
    }

    [RootFact]
    public async Task A_spoke_with_the_wrong_token_is_refused_and_the_hub_keeps_no_peer()
    {
        await using var lab = await TunnelLab.CreateAsync("intruder");
        var intruder = lab.Network["intruder"];
        var hub = await lab.StartHubAsync();
        var process = await lab.StartSpokeAsync(intruder, token: "not-the-right-token", waitForPairing: false);
        await process.WaitForOutputAsync("the hub refused pairing with status 400", TunnelLab.Patience);
        await hub.WaitForOutputAsync("Refused pairing request", TunnelLab.Patience);
        (await TunnelLab.ApiAsync(lab.Hub, "/api/peers")).AsArray().Should().BeEmpty();
        process.Output.Should().NotContain("assigned IP");
    }

    [RootFact]
    public async Task A_random_5_KB_pairing_body_gets_a_client_error_and_the_hub_keeps_serving()
    {
        await using var lab = await TunnelLab.CreateAsync("spoke1");
        var spoke = lab.Network["spoke1"];
        var hub = await lab.StartHubAsync();
        using (var client = spoke.CreateHttpClient())
        {
            using var content = new ByteArrayContent(RandomNumberGenerator.GetBytes(5 * 1024));
            using var response = await client.PostAsync(new Uri($"http://{lab.Hub.LanAddress}:8080/pairing"), content);
            ((int)response.StatusCode).Should().BeInRange(400, 499);
        }

        hub.HasExited.Should().BeFalse();
        (await lab.Hub.HttpGetAsync("http://127.0.0.1:8082/health")).StatusCode.Should().Be(HttpStatusCode.OK);
        await lab.StartSpokeAsync(spoke);
        (await TunnelLab.ApiAsync(lab.Hub, "/api/peers")).AsArray().Should().ContainSingle();
    }

    [RootFact]
    public async Task Hub_killed_with_sigkill_restarts_with_the_same_peer_address_and_traffic_flows_again()
    {
        await using var lab = await TunnelLab.CreateAsync("spoke1");
        var spoke = lab.Network["spoke1"];
        var backend = lab.StartBackend(spoke, "still here");
        lab.WriteApps(spoke, ("web", $"127.0.0.1:{backend}"));
        var hub = await lab.StartHubAsync();
        await lab.StartSpokeAsync(spoke);
        await TunnelLab.EventuallyAsync(async () => await TunnelLab.ExposedPortAsync(lab.Hub, "web") is not null, "the app reaches the hub");
        var before = (await TunnelLab.ApiAsync(lab.Hub, "/api/peers")).AsArray().Single()!["ip"]!.GetValue<string>();

        hub.Kill();
        await hub.WaitForExitAsync(TimeSpan.FromSeconds(10));
        await lab.StartHubAsync();

        var after = (await TunnelLab.ApiAsync(lab.Hub, "/api/peers")).AsArray().Single()!["ip"]!.GetValue<string>();
        after.Should().Be(before);
        var elapsed = await TunnelLab.EventuallyAsync(
            async () => await TunnelLab.ExposedPortAsync(lab.Hub, "web") is { } p && await TunnelLab.FetchAsync(lab.Hub, p) == "still here",
            "traffic flows through the restarted hub",
            TimeSpan.FromSeconds(60));
        Timings.Record("hub kill -9 + restart -> spoke app reachable again", [elapsed]);
    }

    [RootFact]
    public async Task Spoke_restart_reuses_its_cached_address_without_pairing_again()
    {
        await using var lab = await TunnelLab.CreateAsync("spoke1");
        var spoke = lab.Network["spoke1"];
        await lab.StartHubAsync();
        var first = await lab.StartSpokeAsync(spoke);
        first.Output.Should().Contain("Paired with server, assigned IP");
        await first.StopAsync();

        var second = await lab.StartSpokeAsync(spoke, waitForPairing: false);
        await second.WaitForOutputAsync("using IP from the cache", TunnelLab.Patience);
        second.Output.Should().NotContain("Paired with server");
        (await TunnelLab.ApiAsync(lab.Hub, "/api/peers")).AsArray().Should().ContainSingle();
    }

    [RootFact]
    public async Task Deleting_a_peer_needs_credentials_and_withdraws_its_apps()
    {
        await using var lab = await TunnelLab.CreateAsync("spoke1");
        var spoke = lab.Network["spoke1"];
        var backend = lab.StartBackend(spoke, "bye");
        lab.WriteApps(spoke, ("web", $"127.0.0.1:{backend}"));
        var hub = await lab.StartHubAsync(["--basic-auth-username", "admin", "--basic-auth-password", "s3cret-pass"]);
        await lab.StartSpokeAsync(spoke);
        var port = 0;
        await TunnelLab.EventuallyAsync(async () => (port = await TunnelLab.ExposedPortAsync(lab.Hub, "web") ?? 0) != 0, "the app reaches the hub");

        using var client = lab.Hub.CreateHttpClient();
        var url = new Uri("http://127.0.0.1:8082/api/peers/v1/spoke1");
        using (var anonymous = await client.DeleteAsync(url))
        {
            anonymous.StatusCode.Should().Be(HttpStatusCode.Unauthorized);
        }

        (await TunnelLab.ApiAsync(lab.Hub, "/api/peers")).AsArray().Should().ContainSingle();
        using (var authorized = await TunnelLab.DeletePeerAsync(lab.Hub, "spoke1", "admin:s3cret-pass"))
        {
            authorized.StatusCode.Should().Be(HttpStatusCode.NoContent);
        }

        (await TunnelLab.ApiAsync(lab.Hub, "/api/apps")).AsArray().Should().BeEmpty();
        (await TunnelLab.FetchAsync(lab.Hub, port)).Should().BeNull("the listener of a deleted peer's app is closed");
        var wgPeers = await lab.Hub.RunCheckedAsync("wg", "show", lab.Hub.WgInterfaceName, "peers");
        wgPeers.StandardOutput.Trim().Should().BeEmpty("the deleted peer is removed from WireGuard");
        hub.Output.Should().Contain($"from {lab.Hub.WgInterfaceName}").And.NotContain("{Interface}", "the log names the interface the peer left");
    }

    [RootFact]
    public async Task Sigterm_to_the_hub_while_a_spoke_long_polls_ends_it_cleanly_within_5_seconds()
    {
        await using var lab = await TunnelLab.CreateAsync("spoke1");
        var spoke = lab.Network["spoke1"];
        var hub = await lab.StartHubAsync();
        var spokeProcess = await lab.StartSpokeAsync(spoke);
        await spokeProcess.WaitForOutputAsync("long-poll", TunnelLab.Patience);

        var watch = System.Diagnostics.Stopwatch.StartNew();
        await hub.StopAsync(TimeSpan.FromSeconds(15)); // the chart's termination grace; SIGKILL after it
        watch.Stop();

        hub.ExitCode.Should().Be(0, hub.Output);
        watch.Elapsed.Should().BeLessThan(TimeSpan.FromSeconds(5), "the held long-poll must not hold the shutdown");
        (await lab.Hub.RunAsync("ip", ["link", "show", lab.Hub.WgInterfaceName])).Succeeded.Should().BeFalse("the interface is taken down last, but taken down");
        hub.Output.Should().Contain("Hub stopped");
        spokeProcess.HasExited.Should().BeFalse("the spoke waits for its hub to come back");
    }

    [RootFact]
    public async Task A_spoke_whose_sync_loop_dies_exits_non_zero_saying_why()
    {
        await using var lab = await TunnelLab.CreateAsync("spoke1");
        var spoke = lab.Network["spoke1"];
        await lab.StartHubAsync(["--basic-auth-username", "admin", "--basic-auth-password", "s3cret-pass"]);
        var process = await lab.StartSpokeAsync(spoke);
        await process.WaitForOutputAsync("long-poll", TunnelLab.Patience);

        // The hub forgets the spoke, so its sync loop pairs again; storing that pairing fails (a directory now stands
        // where the cache file goes) and the loop dies. The spoke must not stay up, healthy-looking and unsynced.
        var cache = Path.Combine(lab.StateDir(spoke), "pairing.json");
        File.Delete(cache);
        Directory.CreateDirectory(cache);
        using (var response = await TunnelLab.DeletePeerAsync(lab.Hub, "spoke1", "admin:s3cret-pass"))
        {
            response.StatusCode.Should().Be(HttpStatusCode.NoContent);
        }

        (await process.WaitForExitAsync(TunnelLab.Patience)).Should().BeTrue("a dead loop ends the process; output:\n" + process.Output);
        process.ExitCode.Should().Be(1);
        process.Output.Should().Contain("The sync loop died").And.Contain("Spoke cannot run: the sync loop failed");
        (await spoke.RunAsync("ip", ["link", "show", spoke.WgInterfaceName])).Succeeded.Should().BeFalse("WireGuard is taken down on the way out");
    }

    [RootFact]
    public async Task A_hub_over_a_peers_file_with_a_bad_entry_starts_serves_the_good_peer_and_shows_the_bad_one()
    {
        await using var lab = await TunnelLab.CreateAsync();
        var good = Convert.ToBase64String(RandomNumberGenerator.GetBytes(32));
        var canonical = Convert.ToBase64String(RandomNumberGenerator.GetBytes(32));
        var nonCanonical = canonical[..42] + (char)(canonical[42] + 1) + "="; // same bytes, unused bits set: `wg` refuses it
        var subnet = lab.HubTunnelAddress.ToString()[..^1];
        Directory.CreateDirectory(lab.StateDir(lab.Hub));
        File.WriteAllText(
            Path.Combine(lab.StateDir(lab.Hub), "peers.json"),
            $"{{\"peers\": [{{\"name\": \"evil\", \"ip\": \"{subnet}2\", \"public_key\": \"{nonCanonical}\"}}, {{\"name\": \"good\", \"ip\": \"{subnet}3\", \"public_key\": \"{good}\"}}]}}");

        var hub = await lab.StartHubAsync(["--basic-auth-username", "admin", "--basic-auth-password", "s3cret-pass"]);

        hub.Output.Should().Contain("Skipped entry #1").And.Contain("evil");
        var peers = (await TunnelLab.ApiAsync(lab.Hub, "/api/peers")).AsArray();
        peers.Should().ContainSingle().Which!["name"]!.GetValue<string>().Should().Be("good");
        var invalid = (await TunnelLab.ApiAsync(lab.Hub, "/api/peers/v1/invalid")).AsArray();
        invalid.Should().ContainSingle().Which!["name"]!.GetValue<string>().Should().Be("evil");
        // The plan's WireGuard sink applies peers after the first plan, which may follow "Hub started": await it.
        var wgPeers = "";
        await TunnelLab.EventuallyAsync(
            async () => (wgPeers = (await lab.Hub.RunCheckedAsync("wg", "show", lab.Hub.WgInterfaceName, "peers")).StandardOutput.Trim()) != "",
            "the hub's WireGuard interface has a peer");
        wgPeers.Should().Be(good);

        using (var deleted = await TunnelLab.DeletePeerAsync(lab.Hub, "evil", "admin:s3cret-pass"))
        {
            deleted.StatusCode.Should().Be(HttpStatusCode.NoContent);
        }

        (await TunnelLab.ApiAsync(lab.Hub, "/api/peers/v1/invalid")).AsArray().Should().BeEmpty();
        var stored = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(lab.StateDir(lab.Hub), "peers.json")))!["peers"]!.AsArray();
        stored.Select(p => (string)p!["name"]!).Should().Equal("good");
        ((string)stored[0]!["public_key"]!).Should().Be(good);
        hub.HasExited.Should().BeFalse();
    }

    [RootFact]
    public async Task A_hub_interface_deleted_by_hand_comes_back_and_the_spoke_reaches_the_hubs_app_again()
    {
        await using var lab = await TunnelLab.CreateAsync("spoke1");
        var spoke = lab.Network["spoke1"];
        var backend = lab.StartBackend(lab.Hub, "hello from the hub");
        lab.WriteApps(lab.Hub, ("dashboard", $"localhost:{backend}"));
        var hub = await lab.StartHubAsync();
        await lab.StartSpokeAsync(spoke);
        int? port = null;
        await TunnelLab.EventuallyAsync(
            async () => (port ??= await TunnelLab.ExposedPortAsync(spoke, "dashboard")) is { } p && await TunnelLab.FetchAsync(spoke, p) == "hello from the hub",
            "the hub's app answers on the spoke");

        await lab.Hub.RunCheckedAsync("ip", "link", "delete", "dev", lab.Hub.WgInterfaceName);
        (await TunnelLab.FetchAsync(spoke, port!.Value)).Should().BeNull("the hub's tunnel address is gone with its interface");

        // The WireGuard sink reads the interface back at its drift check (every 30 s) and creates it again.
        var back = await TunnelLab.EventuallyAsync(
            async () => await TunnelLab.FetchAsync(spoke, port.Value) == "hello from the hub",
            "the hub's app answers on the spoke again", TimeSpan.FromSeconds(60));
        hub.Output.Should().Contain("is gone");
        Timings.Record("hub interface deleted -> the hub's app answers on the spoke again", [back]);
        hub.HasExited.Should().BeFalse();
    }

    [RootFact]
    public async Task Sigterm_removes_the_wireguard_interface()
    {
        await using var lab = await TunnelLab.CreateAsync("spoke1");
        var spoke = lab.Network["spoke1"];
        var hub = await lab.StartHubAsync();
        var spokeProcess = await lab.StartSpokeAsync(spoke);
        (await lab.Hub.RunAsync("ip", ["link", "show", lab.Hub.WgInterfaceName])).Succeeded.Should().BeTrue();

        await spokeProcess.StopAsync();
        await hub.StopAsync();
        hub.ExitCode.Should().Be(0);
        spokeProcess.ExitCode.Should().Be(0);
        (await lab.Hub.RunAsync("ip", ["link", "show", lab.Hub.WgInterfaceName])).Succeeded.Should().BeFalse();
        (await spoke.RunAsync("ip", ["link", "show", spoke.WgInterfaceName])).Succeeded.Should().BeFalse();
    }
}
