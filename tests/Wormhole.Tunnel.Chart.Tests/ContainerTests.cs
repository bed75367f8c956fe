using System.Diagnostics;
using System.Net;
using System.Text.Json.Nodes;
using Wormhole.Tunnel.Chart.Tests.Infrastructure;

namespace Wormhole.Tunnel.Chart.Tests;

/// <summary>
/// The images scripts/images builds, run with <c>podman run</c> and exactly the security context, volumes and secret
/// environment the chart renders (read-only root, every capability dropped but NET_ADMIN, no privilege escalation,
/// /dev/net/tun): a hub and a spoke on a podman network bring up WireGuard (wireguard-go), pair, and carry a request
/// from the hub's listener to an HTTP backend container next to the spoke.
/// </summary>
[Trait("Category", "Images")]
public sealed class ContainerTests
{
    private const string Psk = "container-test-psk";

    [PodmanFact]
    public async Task Hub_and_spoke_containers_with_the_charts_security_context_pair_and_carry_traffic()
    {
        var hubChart = await HelmChart.TemplateAsync("server", "wormhole", [.. PodLab.ImageValues, "server.enabled=true", "server.wg.publicHost=unused", $"peering.psk={Psk}", "wireguard.mountTunDevice=true"]);
        var spokeChart = await HelmChart.TemplateAsync("client", "wormhole", [.. PodLab.ImageValues, "client.enabled=true", "client.name=site-b", "client.serverDsn=http://unused:8080", $"peering.psk={Psk}", "wireguard.mountTunDevice=true"]);
        await using var net = await PodmanNetwork.CreateAsync("run");
        using var config = new TempDirectory("whpod-run-");
        IPAddress hubIp = net.Address(10), spokeIp = net.Address(11), backendIp = net.Address(20);
        await net.RunBackendAsync("backend", backendIp, "Hello from the backend container!");
        await File.WriteAllTextAsync(Path.Combine(config.Path, "apps.yaml"), $"apps:\n  - name: web\n    address: {backendIp}:80\n");

        var hub = await net.RunAsync("hub", hubIp, ChartContainer.RunOptions(hubChart, net.Volume("hub-storage")), Podman.Image("server"),
            "--name", "server", "--wg-public-host", hubIp.ToString());
        var spoke = await net.RunAsync("spoke", spokeIp, [.. ChartContainer.RunOptions(spokeChart, net.Volume("spoke-storage")), "-v", $"{config.Path}:/config:ro"], Podman.Image("client"),
            "--name", "site-b", "--server", $"http://{hubIp}:8080", "--apps-file", "/config/apps.yaml");

        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        var port = 0;
        await Eventually.Async(
            async () =>
            {
                var apps = JsonNode.Parse(await http.GetStringAsync($"http://{hubIp}:8082/api/apps"))!.AsArray();
                port = apps.Count == 1 ? int.Parse(((string)apps[0]!["address"]!).Split(':')[1], System.Globalization.CultureInfo.InvariantCulture) : 0;
                return port > 0;
            },
            "the hub lists the spoke's app",
            TimeSpan.FromSeconds(60),
            async () => await Podman.LogsAsync(hub) + await Podman.LogsAsync(spoke));

        var curl = await Tools.RunAsync("curl", ["-sS", "-m", "10", $"http://{hubIp}:{port}/"]);
        curl.StandardOutput.Should().Be("Hello from the backend container!", $"curl through the hub's listener reaches the backend over WireGuard: {curl}");
        (await Podman.LogsAsync(hub)).Should().Contain("(wireguard-go)", "the node has no WireGuard module: wireguard-go runs on the mounted /dev/net/tun");
        (await Podman.LogsAsync(spoke)).Should().Contain("Paired with server");
        foreach (var container in new[] { hub, spoke })
        {
            (await Podman.EffectiveCapabilitiesAsync(container)).Should().Be(1UL << 12, "CAP_NET_ADMIN (12) is the only capability left");
        }
    }

    [PodmanFact]
    public async Task The_images_hold_no_shell_and_are_small()
    {
        foreach (var role in new[] { "server", "client" })
        {
            var size = long.Parse((await Podman.RunAsync("image", "inspect", "--format", "{{.Size}}", Podman.Image(role))).Trim(), System.Globalization.CultureInfo.InvariantCulture);
            size.Should().BeLessThan(60_000_000, $"{Podman.Image(role)} should stay under 60 MB");
            var shell = await Podman.TryAsync("run", "--rm", "--entrypoint", "/bin/sh", Podman.Image(role), "-c", "true");
            shell.Succeeded.Should().BeFalse("nothing a shell session needs is in the image");
            var help = await Podman.TryAsync("run", "--rm", "--read-only", "--read-only-tmpfs=false", Podman.Image(role), "--help");
            help.Succeeded.Should().BeTrue(help.ToString());
            help.StandardOutput.Should().Contain("--kubernetes-labels");
        }
    }
}

/// <summary>Polling a condition about containers until it holds.</summary>
public static class Eventually
{
    public static async Task<TimeSpan> Async(Func<Task<bool>> condition, string what, TimeSpan timeout, Func<Task<string>>? diagnostics = null)
    {
        var watch = Stopwatch.StartNew();
        Exception? last = null;
        while (watch.Elapsed < timeout)
        {
            try
            {
                if (await condition())
                {
                    return watch.Elapsed;
                }
            }
            catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException or IOException or System.Text.Json.JsonException)
            {
                last = ex;
            }

            await Task.Delay(TimeSpan.FromMilliseconds(200));
        }

        var details = diagnostics is null ? "" : "\n" + await diagnostics();
        throw new TimeoutException($"Timed out after {timeout.TotalSeconds:0} s waiting until {what}{(last is null ? "" : $" (last error: {last.Message})")}.{details}");
    }
}
