using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Wormhole.Tunnel.E2E.Infrastructure;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.Resilience;
using Wormhole.Tunnel.WireGuard;

namespace Wormhole.Tunnel.E2E.WireGuard;

/// <summary>WgToolsDevice against real wireguard-go interfaces in network namespaces (root only).</summary>
public sealed class WireGuardDeviceTests
{
    private static readonly TimeSpan TestTimeout = TimeSpan.FromSeconds(90);

    [RootFact]
    public async Task Two_sites_talk_TCP_over_wireguard_go()
    {
        using var cts = new CancellationTokenSource(TestTimeout);
        var ct = cts.Token;
        await using var net = await TestNetwork.CreateAsync("hub", "spoke");
        var (hub, spoke) = (net["hub"], net["spoke"]);
        var tunnel = TunnelPrefix();
        var hubIp = IPAddress.Parse($"{tunnel}.1");
        var spokeIp = IPAddress.Parse($"{tunnel}.2");
        var hubKeys = await WgKeys.GenerateAsync(hub.Runner, ct);
        var spokeKeys = await WgKeys.GenerateAsync(spoke.Runner, ct);

        await using var hubWg = new WgToolsDevice(hub.Runner, NullLogger<WgToolsDevice>.Instance);
        await using var spokeWg = new WgToolsDevice(spoke.Runner, NullLogger<WgToolsDevice>.Instance);
        await hubWg.UpAsync(new WgInterfaceConfig(hub.WgInterfaceName, hubKeys.PrivateKey, $"{hubIp}/24", 51820, []), ct);
        await spokeWg.UpAsync(new WgInterfaceConfig(spoke.WgInterfaceName, spokeKeys.PrivateKey, $"{spokeIp}/32", null, [$"{hubIp}/32"]), ct);
        await hubWg.SetPeersAsync([new WgPeer(spokeKeys.PublicKey, [$"{spokeIp}/32"])], ct);
        await spokeWg.SetPeersAsync([new WgPeer(hubKeys.PublicKey, [$"{hubIp}/32"], $"{hub.LanAddress}:51820", 10)], ct);

        hubWg.Backend.Should().Be("wireguard-go", "this machine has no WireGuard kernel module");
        spokeWg.Backend.Should().Be("wireguard-go");

        using var listener = hub.ListenTcp(hubIp, 7000);
        var accept = listener.AcceptAsync(ct).AsTask();
        using var client = await spoke.ConnectTcpAsync(hubIp, 7000, ct);
        using var server = await accept;

        ((IPEndPoint)server.RemoteEndPoint!).Address.Should().Be(spokeIp, "the connection came through the tunnel");

        // Larger than a few MTUs each way, so fragmentation/MTU problems would show.
        var up = RandomNumberGenerator.GetBytes(256 * 1024);
        var down = RandomNumberGenerator.GetBytes(256 * 1024);
        var sendUp = SendAllAsync(client, up, ct);
        (await ReceiveExactlyAsync(server, up.Length, ct)).Should().Equal(up);
        await sendUp;
        var sendDown = SendAllAsync(server, down, ct);
        (await ReceiveExactlyAsync(client, down.Length, ct)).Should().Equal(down);
        await sendDown;

        var handshakes = await hub.RunCheckedAsync("wg", "show", hub.WgInterfaceName, "latest-handshakes");
        handshakes.StandardOutput.Should().Contain(spokeKeys.PublicKey);
    }

    [RootFact]
    public async Task Up_is_idempotent_and_reuses_an_existing_link()
    {
        using var cts = new CancellationTokenSource(TestTimeout);
        var ct = cts.Token;
        await using var net = await TestNetwork.CreateAsync("hub");
        var hub = net["hub"];
        var keys = await WgKeys.GenerateAsync(hub.Runner, ct);
        var tunnel = TunnelPrefix();
        var config = new WgInterfaceConfig(hub.WgInterfaceName, keys.PrivateKey, $"{tunnel}.1/24", 51820, [$"{tunnel}.128/25"]);

        await using var first = new WgToolsDevice(hub.Runner, NullLogger<WgToolsDevice>.Instance) { DeleteOnDispose = false };
        await first.UpAsync(config, ct);
        var index = await LinkIndexAsync(hub, ct);
        await first.UpAsync(config, ct); // same instance, again
        (await LinkIndexAsync(hub, ct)).Should().Be(index);

        // A new process after a kill -9 of the old one: the link (and its wireguard-go) is still there.
        await using var second = new WgToolsDevice(hub.Runner, NullLogger<WgToolsDevice>.Instance);
        await second.UpAsync(config with { Address = $"{tunnel}.9/24" }, ct);

        second.Backend.Should().Be("wireguard-go");
        (await LinkIndexAsync(hub, ct)).Should().Be(index, "the existing link is reused, not recreated");
        var addresses = (await hub.RunCheckedAsync("ip", "-o", "-4", "address", "show", "dev", hub.WgInterfaceName)).StandardOutput;
        addresses.Should().Contain($"{tunnel}.9/24").And.NotContain($"{tunnel}.1/24", "the old address was flushed");
        var link = (await hub.RunCheckedAsync("ip", "link", "show", "dev", hub.WgInterfaceName)).StandardOutput;
        link.Should().Contain("mtu 1420").And.Contain(",UP");
        (await hub.RunCheckedAsync("ip", "route", "show", "dev", hub.WgInterfaceName)).StandardOutput.Should().Contain($"{tunnel}.128/25");
        (await hub.RunCheckedAsync("wg", "show", hub.WgInterfaceName, "public-key")).StandardOutput.Trim().Should().Be(keys.PublicKey);
        (await hub.RunCheckedAsync("wg", "show", hub.WgInterfaceName, "listen-port")).StandardOutput.Trim().Should().Be("51820");
    }

    [RootFact]
    public async Task SetPeers_removes_peers_not_listed()
    {
        using var cts = new CancellationTokenSource(TestTimeout);
        var ct = cts.Token;
        await using var net = await TestNetwork.CreateAsync("hub");
        var hub = net["hub"];
        var keys = await WgKeys.GenerateAsync(hub.Runner, ct);
        var a = (await WgKeys.GenerateAsync(hub.Runner, ct)).PublicKey;
        var b = (await WgKeys.GenerateAsync(hub.Runner, ct)).PublicKey;
        var c = (await WgKeys.GenerateAsync(hub.Runner, ct)).PublicKey;
        await using var device = new WgToolsDevice(hub.Runner, NullLogger<WgToolsDevice>.Instance);
        await device.UpAsync(new WgInterfaceConfig(hub.WgInterfaceName, keys.PrivateKey, "10.188.0.1/24", 51820, []), ct);

        await device.SetPeersAsync(
            [
                new WgPeer(a, ["10.188.0.2/32"]),
                new WgPeer(b, ["10.188.0.3/32"], "10.213.0.99:51820", 25),
                new WgPeer(c, ["10.188.0.4/32"]),
            ],
            ct);
        (await PeersAsync(hub, ct)).Should().BeEquivalentTo([a, b, c]);

        await device.SetPeersAsync([new WgPeer(b, ["10.188.0.3/32", "10.99.0.0/16"])], ct);

        (await PeersAsync(hub, ct)).Should().BeEquivalentTo([b]);
        var allowed = (await hub.RunCheckedAsync("wg", "show", hub.WgInterfaceName, "allowed-ips")).StandardOutput;
        allowed.Should().Contain("10.188.0.3/32").And.Contain("10.99.0.0/16");
        var keepalive = (await hub.RunCheckedAsync("wg", "show", hub.WgInterfaceName, "persistent-keepalive")).StandardOutput;
        keepalive.Should().Contain("off", "an update without keepalive clears it");

        await device.SetPeersAsync([], ct);
        (await PeersAsync(hub, ct)).Should().BeEmpty();
    }

    [RootFact]
    public async Task SetPeers_makes_every_difference_in_one_wg_set_runs_none_when_nothing_differs_and_repairs_edits_made_by_hand()
    {
        using var cts = new CancellationTokenSource(TestTimeout);
        var ct = cts.Token;
        await using var net = await TestNetwork.CreateAsync("hub");
        var hub = net["hub"];
        var keys = await WgKeys.GenerateAsync(hub.Runner, ct);
        var a = (await WgKeys.GenerateAsync(hub.Runner, ct)).PublicKey;
        var b = (await WgKeys.GenerateAsync(hub.Runner, ct)).PublicKey;
        var c = (await WgKeys.GenerateAsync(hub.Runner, ct)).PublicKey;
        var runner = new CountingRunner(hub.Runner);
        await using var device = new WgToolsDevice(runner, NullLogger<WgToolsDevice>.Instance);
        await device.UpAsync(new WgInterfaceConfig(hub.WgInterfaceName, keys.PrivateKey, "10.188.0.1/24", 51820, []), ct);
        WgPeer[] wanted =
        [
            new(a, ["10.188.0.2/32"]),
            new(b, ["10.188.0.3/32"], "10.213.0.99:51820", 25),
            new(c, ["10.188.0.4/32"], "localhost:51999"),
        ];

        runner.Reset();
        await device.SetPeersAsync(wanted, ct);
        runner.WgSets.Should().Be(1, "three new peers are one wg set");
        (await PeersAsync(hub, ct)).Should().BeEquivalentTo([a, b, c]);

        runner.Reset();
        await device.SetPeersAsync(wanted, ct);
        runner.WgSets.Should().Be(0, "nothing differs (the endpoint given as a name resolves to what the interface has)");

        // Someone edits the interface by hand: a peer removed, another's allowed IPs and endpoint changed, a stranger added.
        var stranger = (await WgKeys.GenerateAsync(hub.Runner, ct)).PublicKey;
        await hub.RunCheckedAsync("wg", "set", hub.WgInterfaceName, "peer", a, "remove", "peer", b, "allowed-ips", "10.9.9.9/32", "endpoint", "10.213.0.77:51820", "peer", stranger, "allowed-ips", "10.188.0.66/32");
        runner.Reset();
        await device.SetPeersAsync(wanted, ct);

        runner.WgSets.Should().Be(1, "every repair is one wg set");
        (await PeersAsync(hub, ct)).Should().BeEquivalentTo([a, b, c]);
        var dump = (await hub.RunCheckedAsync("wg", "show", hub.WgInterfaceName, "allowed-ips")).StandardOutput;
        dump.Should().Contain($"{b}\t10.188.0.3/32").And.NotContain("10.9.9.9").And.NotContain("10.188.0.66");
        (await hub.RunCheckedAsync("wg", "show", hub.WgInterfaceName, "endpoints")).StandardOutput.Should().Contain($"{b}\t10.213.0.99:51820");
    }

    [RootFact]
    public async Task An_interface_deleted_by_hand_is_created_again_with_its_address_port_and_peers_by_the_next_SetPeers()
    {
        using var cts = new CancellationTokenSource(TestTimeout);
        var ct = cts.Token;
        await using var net = await TestNetwork.CreateAsync("hub");
        var hub = net["hub"];
        var keys = await WgKeys.GenerateAsync(hub.Runner, ct);
        var a = (await WgKeys.GenerateAsync(hub.Runner, ct)).PublicKey;
        await using var device = new WgToolsDevice(hub.Runner, NullLogger<WgToolsDevice>.Instance);
        await device.UpAsync(new WgInterfaceConfig(hub.WgInterfaceName, keys.PrivateKey, "10.188.0.1/24", 51820, []), ct);
        WgPeer[] wanted = [new(a, ["10.188.0.2/32"])];
        await device.SetPeersAsync(wanted, ct);

        await hub.RunCheckedAsync("ip", "link", "delete", "dev", hub.WgInterfaceName);
        await device.SetPeersAsync(wanted, ct);

        (await PeersAsync(hub, ct)).Should().Equal(a);
        (await hub.RunCheckedAsync("wg", "show", hub.WgInterfaceName, "listen-port")).StandardOutput.Trim().Should().Be("51820");
        (await hub.RunCheckedAsync("wg", "show", hub.WgInterfaceName, "public-key")).StandardOutput.Trim().Should().Be(keys.PublicKey);
        (await hub.RunCheckedAsync("ip", "-o", "address", "show", "dev", hub.WgInterfaceName)).StandardOutput.Should().Contain("10.188.0.1/24");
        (await hub.RunCheckedAsync("ip", "-o", "link", "show", "dev", hub.WgInterfaceName)).StandardOutput.Should().Contain("state UNKNOWN").And.Contain("mtu 1420");
    }

    [RootFact]
    public async Task Down_removes_the_interface()
    {
        using var cts = new CancellationTokenSource(TestTimeout);
        var ct = cts.Token;
        await using var net = await TestNetwork.CreateAsync("hub");
        var hub = net["hub"];
        var keys = await WgKeys.GenerateAsync(hub.Runner, ct);
        await using var device = new WgToolsDevice(hub.Runner, NullLogger<WgToolsDevice>.Instance);
        await device.UpAsync(new WgInterfaceConfig(hub.WgInterfaceName, keys.PrivateKey, "10.188.0.1/24", null, []), ct);
        File.Exists(WgToolsDevice.SocketPath(hub.WgInterfaceName)).Should().BeTrue("wireguard-go listens on its control socket");

        await device.DownAsync(ct);

        var show = await hub.RunAsync("ip", ["link", "show", "dev", hub.WgInterfaceName], ct: ct);
        show.Succeeded.Should().BeFalse();
        show.StandardError.Should().Contain("does not exist");
        File.Exists(WgToolsDevice.SocketPath(hub.WgInterfaceName)).Should().BeFalse("wireguard-go exited and removed its socket");
        await device.DownAsync(ct); // already gone: not an error

        // And it comes back up under the same name.
        await device.UpAsync(new WgInterfaceConfig(hub.WgInterfaceName, keys.PrivateKey, "10.188.0.1/24", null, []), ct);
        (await hub.RunAsync("ip", ["link", "show", "dev", hub.WgInterfaceName], ct: ct)).Succeeded.Should().BeTrue();
    }

    [RootFact]
    public async Task Private_key_never_appears_in_process_arguments_or_logs()
    {
        using var cts = new CancellationTokenSource(TestTimeout);
        var ct = cts.Token;
        await using var net = await TestNetwork.CreateAsync("hub");
        var hub = net["hub"];
        var runner = new RecordingRunner(hub.Runner);
        var logger = new RecordingLogger<WgToolsDevice>();
        var keys = await WgKeys.GenerateAsync(runner, ct);
        var peer = await WgKeys.GenerateAsync(hub.Runner, ct);
        var config = new WgInterfaceConfig(hub.WgInterfaceName, keys.PrivateKey, "10.188.0.1/24", 51820, ["10.189.0.0/24"]);

        await using (var device = new WgToolsDevice(runner, logger))
        {
            await device.UpAsync(config, ct);
            await device.UpAsync(config, ct);
            await device.SetPeersAsync([new WgPeer(peer.PublicKey, ["10.188.0.2/32"], "10.213.0.2:51820", 10)], ct);
            await device.DownAsync(ct);
        }

        runner.Calls.Should().NotBeEmpty();
        foreach (var (fileName, arguments, _) in runner.Calls)
        {
            fileName.Should().NotContain(keys.PrivateKey);
            arguments.Should().NotContain(a => a.Contains(keys.PrivateKey), "private keys go on stdin only");
        }

        runner.Calls.Where(c => c.StandardInput?.Contains(keys.PrivateKey) == true)
            .Select(c => string.Join(' ', c.Arguments))
            .Should().BeEquivalentTo(["pubkey", $"set {hub.WgInterfaceName} private-key /dev/stdin listen-port 51820", $"set {hub.WgInterfaceName} private-key /dev/stdin listen-port 51820"]);
        logger.Lines.Should().NotBeEmpty().And.NotContain(l => l.Contains(keys.PrivateKey));
        keys.ToString().Should().NotContain(keys.PrivateKey).And.Contain(keys.PublicKey);
        config.ToString().Should().NotContain(keys.PrivateKey);
    }

    [RootFact]
    public async Task Preflight_passes_on_this_machine()
    {
        await using var net = await TestNetwork.CreateAsync("hub");
        (await WgPreflight.CheckAsync(net["hub"].Runner, CancellationToken.None)).Should().BeNull();
    }

    [RootFact]
    public async Task Failing_command_names_the_command_and_stderr_but_not_the_key()
    {
        using var cts = new CancellationTokenSource(TestTimeout);
        var ct = cts.Token;
        await using var net = await TestNetwork.CreateAsync("hub");
        var hub = net["hub"];
        var keys = await WgKeys.GenerateAsync(hub.Runner, ct);
        await using var first = new WgToolsDevice(hub.Runner, NullLogger<WgToolsDevice>.Instance);
        await using var second = new WgToolsDevice(hub.Runner, NullLogger<WgToolsDevice>.Instance);
        await first.UpAsync(new WgInterfaceConfig(hub.WgInterfaceName, keys.PrivateKey, "10.188.0.1/24", 51820, []), ct);

        // A second interface in the same namespace cannot take the same UDP port.
        var samePort = async () => await second.UpAsync(new WgInterfaceConfig(hub.WgInterfaceName + "b", keys.PrivateKey, "10.188.1.1/24", 51820, []), ct);

        var failure = (await samePort.Should().ThrowAsync<WireGuardCommandException>()).Which;
        failure.Command.Should().Be($"wg set {hub.WgInterfaceName}b private-key /dev/stdin listen-port 51820");
        failure.Message.Should().Contain(failure.Command).And.Contain("Address already in use").And.NotContain(keys.PrivateKey);

        // Input wg would chew on for a minute is refused up front.
        var badEndpoint = async () => await first.SetPeersAsync([new WgPeer(keys.PublicKey, ["10.188.0.2/32"], "10.213.0.2:notaport")], ct);
        (await badEndpoint.Should().ThrowAsync<ArgumentException>()).Which.Message.Should().Contain("10.213.0.2:notaport");
        var badRoute = async () => await first.UpAsync(new WgInterfaceConfig(hub.WgInterfaceName, keys.PrivateKey, "10.188.0.1/24", null, ["10.188.0.0/33"]), ct);
        (await badRoute.Should().ThrowAsync<ArgumentException>()).Which.Message.Should().Contain("10.188.0.0/33");
    }

    [RootFact]
    public async Task A_wg_set_that_fails_once_is_run_again_and_the_peer_lands_on_the_real_interface()
    {
        using var cts = new CancellationTokenSource(TestTimeout);
        await using var net = await TestNetwork.CreateAsync("hub");
        await using var rig = await FlakyDevice.UpAsync(net["hub"], failures: 1, cts.Token);

        await rig.Device.SetPeersAsync([new WgPeer(rig.PeerKey, ["10.189.0.2/32"])], cts.Token);

        rig.Runner.Failed.Should().Be(1, "the first attempt failed");
        (await PeersAsync(net["hub"], cts.Token)).Should().Equal(rig.PeerKey);
        rig.Retries.Should().ContainSingle().Which.Operation.Should().Be("wireguard");
    }

    [RootFact]
    public async Task A_wg_set_that_keeps_failing_gives_up_after_three_attempts_with_the_tools_error()
    {
        using var cts = new CancellationTokenSource(TestTimeout);
        await using var net = await TestNetwork.CreateAsync("hub");
        await using var rig = await FlakyDevice.UpAsync(net["hub"], failures: int.MaxValue, cts.Token);

        var set = () => rig.Device.SetPeersAsync([new WgPeer(rig.PeerKey, ["10.189.0.2/32"])], cts.Token);

        (await set.Should().ThrowAsync<WireGuardCommandException>()).Which.Message.Should().Contain("control socket busy");
        rig.Runner.Failed.Should().Be(RetrySchedule.WireGuardAttempts);
        (await PeersAsync(net["hub"], cts.Token)).Should().BeEmpty();
        rig.Retries.Should().HaveCount(RetrySchedule.WireGuardAttempts - 1);
    }

    /// <summary>
    /// A real interface in <paramref name="site"/> driven through a runner whose first <c>failures</c> peer updates
    /// fail (the one thing simulated: wireguard-go's control socket refusing a `wg set … peer`, a tool that ran and
    /// failed), with the side's WireGuard retry pipeline.
    /// </summary>
    private sealed record FlakyDevice(WgToolsDevice Device, FailFirstPeerSet Runner, List<RetryNotice> Retries, string PeerKey) : IAsyncDisposable
    {
        public static async Task<FlakyDevice> UpAsync(Site site, int failures, CancellationToken ct)
        {
            var keys = await WgKeys.GenerateAsync(site.Runner, ct);
            var peer = await WgKeys.GenerateAsync(site.Runner, ct);
            var retries = new List<RetryNotice>();
            var pipelines = new RetryPipelines(NullLogger<RetryPipelines>.Instance, TimeProvider.System, notice => { lock (retries) { retries.Add(notice); } });
            var runner = new FailFirstPeerSet(site.Runner, failures);
            var device = new WgToolsDevice(runner, NullLogger<WgToolsDevice>.Instance, pipelines.WireGuard);
            await device.UpAsync(new WgInterfaceConfig(site.WgInterfaceName, keys.PrivateKey, $"{TunnelPrefix()}.1/24", 51820, []), ct);
            return new FlakyDevice(device, runner, retries, peer.PublicKey);
        }

        public ValueTask DisposeAsync() => Device.DisposeAsync();
    }

    /// <summary>Runs every command for real and counts the <c>wg set</c> runs that change peers.</summary>
    private sealed class CountingRunner(IProcessRunner inner) : IProcessRunner
    {
        private int _wgSets;

        public int WgSets => Volatile.Read(ref _wgSets);

        public void Reset() => Volatile.Write(ref _wgSets, 0);

        public Task<ProcessResult> RunAsync(string fileName, IReadOnlyList<string> arguments, string? standardInput = null, CancellationToken cancellationToken = default)
        {
            if (fileName == "wg" && arguments is ["set", _, "peer", ..])
            {
                Interlocked.Increment(ref _wgSets);
            }

            return inner.RunAsync(fileName, arguments, standardInput, cancellationToken);
        }
    }

    /// <summary>Runs every command for real, except that the first <c>failures</c> <c>wg set … peer … allowed-ips</c> fail with exit code 1.</summary>
    private sealed class FailFirstPeerSet(IProcessRunner inner, int failures = 1) : IProcessRunner
    {
        private int _failed;

        public int Failed => Volatile.Read(ref _failed);

        public Task<ProcessResult> RunAsync(string fileName, IReadOnlyList<string> arguments, string? standardInput = null, CancellationToken cancellationToken = default)
        {
            if (fileName == "wg" && arguments is ["set", _, "peer", _, "allowed-ips", ..] && Volatile.Read(ref _failed) < failures)
            {
                Interlocked.Increment(ref _failed);
                return Task.FromResult(new ProcessResult(1, "", "Unable to modify interface: control socket busy"));
            }

            return inner.RunAsync(fileName, arguments, standardInput, cancellationToken);
        }
    }

    private static string TunnelPrefix() => $"10.188.{RandomNumberGenerator.GetInt32(1, 250)}";

    private static async Task<string> LinkIndexAsync(Site site, CancellationToken ct)
    {
        var result = await site.RunAsync("ip", ["-o", "link", "show", "dev", site.WgInterfaceName], ct: ct);
        result.Succeeded.Should().BeTrue(result.StandardError);
        return result.StandardOutput.Split(':')[0];
    }

    private static async Task<string[]> PeersAsync(Site site, CancellationToken ct) =>
        (await site.RunCheckedAsync("wg", "show", site.WgInterfaceName, "peers")).StandardOutput
            .Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    private static async Task SendAllAsync(Socket socket, byte[] data, CancellationToken ct)
    {
        var sent = 0;
        while (sent < data.Length)
        {
            sent += await socket.SendAsync(data.AsMemory(sent), SocketFlags.None, ct);
        }
    }

    private static async Task<byte[]> ReceiveExactlyAsync(Socket socket, int count, CancellationToken ct)
    {
        var buffer = new byte[count];
        var read = 0;
        while (read < count)
        {
            var n = await socket.ReceiveAsync(buffer.AsMemory(read), SocketFlags.None, ct);
            if (n == 0)
            {
                throw new EndOfStreamException($"Connection closed after {read} of {count} bytes.");
            }

            read += n;
        }

        return buffer;
    }
}
