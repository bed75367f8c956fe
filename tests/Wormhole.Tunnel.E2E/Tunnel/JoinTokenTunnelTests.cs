using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using Wormhole.Tunnel.E2E.Infrastructure;

namespace Wormhole.Tunnel.E2E.Tunnel;

/// <summary>Join tokens, per-peer preshared keys, key rotation and the tunnel refusal over real WireGuard (wireguard-go).</summary>
public sealed class JoinTokenTunnelTests
{
    [RootFact]
    public async Task A_spoke_joins_with_a_token_gets_a_preshared_key_rotates_its_key_and_keeps_its_address_apps_and_traffic()
    {
        await using var lab = await TunnelLab.CreateAsync("spoke1");
        var spoke = lab.Network["spoke1"];
        var backend = lab.StartBackend(spoke, "hello through a token");
        await lab.StartHubAsync(["--basic-auth-username", "admin", "--basic-auth-password", "e2e-admin-password"]);

        // The person's step: `wormhole-server token create` against the hub's admin API, then paste it on the spoke.
        var create = await TokenCliAsync(lab, "create", "--uses", "1", "--name", "spoke1");
        create.ExitCode.Should().Be(0, create.StandardError);
        var token = create.StandardOutput.Trim();
        token.Should().StartWith("whj1.");

        lab.WriteApps(spoke, ("web", $"127.0.0.1:{backend}"));
        var process = await lab.StartSpokeAsync(spoke, token: "unused-invite-token", extra: ["--join-token", token, "--key-rotation-interval", "3s"]);
        int? port = null;
        await TunnelLab.EventuallyAsync(
            async () => (port ??= await TunnelLab.ExposedPortAsync(lab.Hub, "web")) is { } p && await TunnelLab.FetchAsync(lab.Hub, p) == "hello through a token",
            "the spoke's app answers through the hub");

        var peer = (await TunnelLab.ApiAsync(lab.Hub, "/api/peers/v1")).AsArray().Single()!;
        var firstKey = (string)peer["public_key"]!;
        var address = (string)peer["ip"]!;
        (await PresharedKeysAsync(lab.Hub)).Should().ContainSingle().Which.Should().NotBe("(none)", "the token spoke has its own preshared key on the hub");
        (await PresharedKeysAsync(spoke)).Should().ContainSingle().Which.Should().Be((await PresharedKeysAsync(lab.Hub)).Single(), "both ends hold the same key");

        // The token is used up: a second spoke with it is refused.
        (await TokenCliAsync(lab, "list")).StandardOutput.Should().Contain("1/1");

        // Rotation through the tunnel: a new key on the hub, same address, the app still answers.
        await process.WaitForOutputAsync("Rotated the WireGuard key", TunnelLab.Patience);
        await TunnelLab.EventuallyAsync(
            async () => (string?)(await TunnelLab.ApiAsync(lab.Hub, "/api/peers/v1")).AsArray().Single()!["public_key"] != firstKey,
            "the hub has the spoke's new key");
        var rotated = (await TunnelLab.ApiAsync(lab.Hub, "/api/peers/v1")).AsArray().Single()!;
        ((string)rotated["ip"]!).Should().Be(address);
        await TunnelLab.EventuallyAsync(
            async () => await TunnelLab.ExposedPortAsync(lab.Hub, "web") == port && await TunnelLab.FetchAsync(lab.Hub, port!.Value) == "hello through a token",
            "the app still answers at the same port after the rotation");
        process.Output.Should().NotContain(token.Split('.')[2], "the token's secret is never logged");
    }

    [RootFact]
    public async Task A_spoke_routing_to_another_hub_address_through_the_tunnel_reaches_neither_the_admin_api_nor_the_pairing_api()
    {
        await using var lab = await TunnelLab.CreateAsync("spoke1");
        var spoke = lab.Network["spoke1"];
        await lab.StartHubAsync();
        await lab.StartSpokeAsync(spoke);
        (await FetchStatusAsync(spoke, lab.Hub.LanAddress, 8082)).Should().NotBeNull("outside the tunnel the admin API answers");

        // The spoke sends to the hub's LAN address through the tunnel (its own WireGuard routes it there).
        var hubKey = (await spoke.RunCheckedAsync("wg", "show", spoke.WgInterfaceName, "peers")).StandardOutput.Trim();
        await spoke.RunCheckedAsync("wg", "set", spoke.WgInterfaceName, "peer", hubKey, "allowed-ips", $"{lab.HubTunnelAddress}/32,{lab.Hub.LanAddress}/32");
        await spoke.RunCheckedAsync("ip", "route", "replace", $"{lab.Hub.LanAddress}/32", "dev", spoke.WgInterfaceName);

        (await FetchStatusAsync(spoke, lab.Hub.LanAddress, 8082)).Should().BeNull("the admin API closes connections from the tunnel");
        (await FetchStatusAsync(spoke, lab.Hub.LanAddress, 8080)).Should().BeNull("so does the pairing API");
        (await FetchStatusAsync(spoke, lab.HubTunnelAddress, 8082)).Should().BeNull("and at the tunnel address");
    }

    /// <summary><c>wormhole-server token …</c> in the hub's namespace, credentials from the environment as a person would set them.</summary>
    private static Task<Hosting.ProcessResult> TokenCliAsync(TunnelLab lab, params string[] args) =>
        lab.Hub.RunAsync("env", ["BASIC_AUTH_USERNAME=admin", "BASIC_AUTH_PASSWORD=e2e-admin-password", Executables.Server, "token", .. args], null);

    private static async Task<List<string>> PresharedKeysAsync(Site site)
    {
        var output = (await site.RunCheckedAsync("wg", "show", site.WgInterfaceName, "preshared-keys")).StandardOutput;
        return output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split('\t')[1].Trim()).ToList();
    }

    /// <summary>The status line of GET /health from inside the site, or null when the connection is closed without an answer.</summary>
    private static async Task<string?> FetchStatusAsync(Site site, IPAddress address, int port)
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(8));
        try
        {
            using var socket = await site.ConnectTcpAsync(address, port, cts.Token);
            await socket.SendAsync("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"u8.ToArray(), cts.Token);
            var buffer = new byte[512];
            var n = await socket.ReceiveAsync(buffer, cts.Token);
            return n == 0 ? null : Encoding.ASCII.GetString(buffer, 0, n).Split("\r\n")[0];
        }
        catch (Exception ex) when (ex is SocketException or OperationCanceledException or IOException)
        {
            return null;
        }
    }
}
