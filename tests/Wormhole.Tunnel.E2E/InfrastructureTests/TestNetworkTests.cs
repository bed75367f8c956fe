using System.Net;
using System.Net.Sockets;
using System.Text;
using Wormhole.Tunnel.E2E.Infrastructure;

namespace Wormhole.Tunnel.E2E.InfrastructureTests;

/// <summary>The namespace test network itself: reachability, processes, hosts files, HTTP, cleanup (root only).</summary>
public sealed class TestNetworkTests
{
    [RootFact]
    public async Task Sites_reach_each_other_over_the_lan()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await using var net = await TestNetwork.CreateAsync("a", "b", "c");

        net["a"].LanAddress.Should().Be(IPAddress.Parse($"10.213.{net.SubnetOctet}.10"));
        net["c"].LanAddress.Should().Be(IPAddress.Parse($"10.213.{net.SubnetOctet}.12"));
        using var listener = net["c"].ListenTcp(net["c"].LanAddress, 0);
        var port = ((IPEndPoint)listener.LocalEndPoint!).Port;
        var accept = listener.AcceptAsync(cts.Token).AsTask();
        using var client = await net["a"].ConnectTcpAsync(net["c"].LanAddress, port, cts.Token);
        using var server = await accept;

        ((IPEndPoint)server.RemoteEndPoint!).Address.Should().Be(net["a"].LanAddress);
    }

    [RootFact]
    public async Task RunInNamespace_moves_only_its_own_thread()
    {
        await using var net = await TestNetwork.CreateAsync("a");
        var mine = File.ResolveLinkTarget("/proc/thread-self/ns/net", false)!.ToString();

        var inside = NetNs.RunInNamespace(net["a"].Namespace, () => File.ResolveLinkTarget("/proc/thread-self/ns/net", false)!.ToString());

        inside.Should().NotBe(mine);
        File.ResolveLinkTarget("/proc/thread-self/ns/net", false)!.ToString().Should().Be(mine);
        var act = () => NetNs.RunInNamespace<int>(net["a"].Namespace, () => throw new InvalidOperationException("boom"));
        act.Should().Throw<InvalidOperationException>().WithMessage("boom");
    }

    [RootFact]
    public async Task Processes_see_the_site_hosts_file_and_can_be_stopped_or_killed()
    {
        await using var net = await TestNetwork.CreateAsync("a", "b");
        var a = net["a"];
        a.SetHosts(new Dictionary<string, IPAddress> { ["nginx.nginx"] = net["b"].LanAddress });

        using var resolver = await a.StartProcessAsync("sh", ["-c", "getent hosts nginx.nginx; echo \"$GREETING\"; exec sleep 600"], new Dictionary<string, string> { ["GREETING"] = "hello from a" });
        await resolver.WaitForOutputAsync("hello from a", TimeSpan.FromSeconds(10));
        resolver.Output.Should().Contain($"{net["b"].LanAddress}").And.Contain("nginx.nginx");
        await resolver.StopAsync();
        resolver.HasExited.Should().BeTrue();

        using var sleeper = await a.StartProcessAsync("sleep", ["600"]);
        sleeper.Kill();
        (await sleeper.WaitForExitAsync(TimeSpan.FromSeconds(5))).Should().BeTrue();
        sleeper.ExitCode.Should().NotBe(0);

        // Outside the namespace the name does not resolve from this hosts file.
        (await File.ReadAllTextAsync("/etc/hosts")).Should().NotContain("nginx.nginx");
    }

    [RootFact]
    public async Task WaitForOutput_fails_with_the_output_when_the_process_exits()
    {
        await using var net = await TestNetwork.CreateAsync("a");
        using var process = await net["a"].StartProcessAsync("sh", ["-c", "echo starting; exit 3"]);

        var act = async () => await process.WaitForOutputAsync("never printed", TimeSpan.FromSeconds(10));

        (await act.Should().ThrowAsync<InvalidOperationException>()).Which.Message.Should().Contain("code 3").And.Contain("starting");
    }

    [RootFact]
    public async Task HttpGet_connects_from_inside_the_site_and_resolves_its_hosts()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await using var net = await TestNetwork.CreateAsync("client", "web");
        var web = net["web"];
        net["client"].SetHosts(new Dictionary<string, IPAddress> { ["web.test"] = web.LanAddress });
        using var listener = web.ListenTcp(web.LanAddress, 8080);
        var serve = ServeOneAsync(listener, "hello over the lan", cts.Token);

        using var response = await net["client"].HttpGetAsync("http://web.test:8080/hi", cts.Token);

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        (await response.Content.ReadAsStringAsync(cts.Token)).Should().Be("hello over the lan");
        (await serve).Should().StartWith("GET /hi HTTP/1.1").And.Contain("Host: web.test:8080");
    }

    [RootFact]
    public async Task Dispose_removes_namespaces_processes_links_and_files()
    {
        var net = await TestNetwork.CreateAsync("a");
        var a = net["a"];
        a.SetHosts(new Dictionary<string, IPAddress> { ["x"] = IPAddress.Loopback });
        await a.RunCheckedAsync("wireguard-go", a.WgInterfaceName);
        using var sleeper = await a.StartProcessAsync("sleep", ["600"]);
        File.Exists($"/var/run/wireguard/{a.WgInterfaceName}.sock").Should().BeTrue();

        await net.DisposeAsync();

        (await TestTools.RunCheckedAsync(TestTools.Ip, "netns", "list")).StandardOutput.Should().NotContain(net.Id);
        Directory.Exists($"/etc/netns/{a.Namespace}").Should().BeFalse();
        File.Exists($"/var/run/wireguard/{a.WgInterfaceName}.sock").Should().BeFalse();
        sleeper.HasExited.Should().BeTrue();
        await net.DisposeAsync(); // twice is fine
    }

    private static async Task<string> ServeOneAsync(Socket listener, string body, CancellationToken ct)
    {
        using var connection = await listener.AcceptAsync(ct);
        var request = new StringBuilder();
        var buffer = new byte[4096];
        while (!request.ToString().Contains("\r\n\r\n", StringComparison.Ordinal))
        {
            var n = await connection.ReceiveAsync(buffer, SocketFlags.None, ct);
            if (n == 0)
            {
                break;
            }

            request.Append(Encoding.ASCII.GetString(buffer, 0, n));
        }

        var payload = Encoding.UTF8.GetBytes(body);
        var head = Encoding.ASCII.GetBytes($"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {payload.Length}\r\nConnection: close\r\n\r\n");
        await connection.SendAsync(head.Concat(payload).ToArray(), SocketFlags.None, ct);
        connection.Shutdown(SocketShutdown.Send);
        return request.ToString();
    }
}
