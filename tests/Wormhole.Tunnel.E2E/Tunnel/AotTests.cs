using System.Text.Json;
using Wormhole.Tunnel.E2E.Infrastructure;

namespace Wormhole.Tunnel.E2E.Tunnel;

/// <summary>The NativeAOT executables (scripts/publish-aot), run as <see cref="TunnelTests"/> runs the build's.</summary>
public class AotTests
{
    [AotFact]
    public async Task Aot_hub_and_spoke_pair_carry_a_request_through_the_tunnel_and_list_it_in_api_apps()
    {
        if (AotExecutables.MissingReason is { } missing)
        {
            Assert.Fail("CI runs the NativeAOT executables: " + missing);
        }

        await using var lab = await TunnelLab.CreateAotAsync("spoke1");
        var spoke = lab.Network["spoke1"];
        var backend = lab.StartBackend(spoke, "hello from an AOT spoke");
        lab.WriteApps(spoke, ("web", $"127.0.0.1:{backend}"));
        var hub = await lab.StartHubAsync(["--debug"]);
        var spokeProcess = await lab.StartSpokeAsync(spoke, extra: ["--log-format", "json"]);

        int? port = null;
        await TunnelLab.EventuallyAsync(
            async () => (port ??= await TunnelLab.ExposedPortAsync(lab.Hub, "web")) is { } p && await TunnelLab.FetchAsync(lab.Hub, p) == "hello from an AOT spoke",
            "the AOT spoke's app answers through the AOT hub");

        var app = (await TunnelLab.ApiAsync(lab.Hub, "/api/apps")).AsArray().Should().ContainSingle().Which!;
        app["name"]!.GetValue<string>().Should().Be("web");
        app["peer"]!.GetValue<string>().Should().Be("spoke1");
        app["address"]!.GetValue<string>().Should().Be($"localhost:{port}");

        // Both are native code: no JIT runtime is mapped into either process.
        foreach (var process in new[] { hub, spokeProcess })
        {
            File.ReadAllText($"/proc/{process.Id}/maps").Should().NotContain("libcoreclr.so", $"{process.Description} is a NativeAOT executable");
        }

        // The request log (Serilog.AspNetCore's middleware) and the compact JSON log work in the AOT build too.
        await hub.WaitForOutputAsync("Wormhole.Tunnel.Http: HTTP GET /api/apps on admin API responded 200", TunnelLab.Patience);
        var pairing = spokeProcess.Output.Split('\n').First(l => l.Contains("assigned IP", StringComparison.Ordinal));
        using var line = JsonDocument.Parse(pairing);
        line.RootElement.GetProperty("@t").GetString().Should().NotBeNullOrEmpty();
        line.RootElement.GetProperty("@m").GetString().Should().Contain("assigned IP");
    }
}
