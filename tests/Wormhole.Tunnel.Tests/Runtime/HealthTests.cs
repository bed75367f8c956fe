using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.Runtime;

namespace Wormhole.Tunnel.Tests.Runtime;

/// <summary>
/// The model behind GET /readyz and GET /livez, on a manual clock. The probes themselves are asked of the real pods in
/// Wormhole.Tunnel.Chart.Tests (ProbeTests), where a hung wireguard-go makes a real wg command stuck.
/// </summary>
public sealed class HealthTests
{
    private readonly Kubernetes.ManualTimeProvider _clock = new();

    [Fact]
    public void Readiness_waits_for_every_condition_and_a_plan_with_the_tunnel_address_then_stays()
    {
        var listed = false;
        var tunnel = false;
        var health = new Health(_clock, TimeSpan.FromMinutes(5)).Require("first list", () => listed).Require("wireguard", () => tunnel);

        health.Waiting().Should().Equal("first list", "wireguard", "the first plan with the tunnel address is not applied yet (by every sink: proxy, WireGuard, Kubernetes)");
        listed = true;
        health.PlanApplied(withTunnelAddress: false);
        health.Waiting().Should().Equal("wireguard", "the first plan with the tunnel address is not applied yet (by every sink: proxy, WireGuard, Kubernetes)");
        tunnel = true;
        health.PlanApplied(withTunnelAddress: true);
        health.Waiting().Should().BeEmpty();

        listed = false;
        health.Waiting().Should().BeEmpty("readiness is about the start: once reached it stays");
    }

    [Fact]
    public void A_step_running_longer_than_stuck_after_is_stuck_until_it_ends()
    {
        var health = new Health(_clock, TimeSpan.FromSeconds(30));
        using (health.Begin("reconcile pass"))
        {
        }

        var step = health.Begin("wg set wg0");
        _clock.Advance(TimeSpan.FromSeconds(30));
        health.Stuck().Should().BeEmpty("30 s is not longer than --stuck-after");
        _clock.Advance(TimeSpan.FromSeconds(1));
        health.Stuck().Should().ContainSingle().Which.Should().Be(new StuckStep("wg set wg0", TimeSpan.FromSeconds(31)));

        step.Dispose();
        health.Stuck().Should().BeEmpty();
    }

    [Fact]
    public async Task A_tool_run_through_the_watched_runner_is_a_step_named_by_its_first_arguments()
    {
        var health = new Health(_clock, TimeSpan.FromSeconds(1));
        var release = new TaskCompletionSource<ProcessResult>();
        var runner = new HealthWatchedRunner(new BlockedRunner(release.Task), health);

        var run = runner.RunAsync("wg", ["set", "wg0", "private-key", "/dev/stdin"], "secret");
        _clock.Advance(TimeSpan.FromSeconds(2));
        health.Stuck().Select(s => s.Step).Should().Equal(["wg set wg0"], "the tool, its subcommand and interface; never the rest");

        release.SetResult(new ProcessResult(0, "", ""));
        await run;
        health.Stuck().Should().BeEmpty();
    }

    private sealed class BlockedRunner(Task<ProcessResult> result) : IProcessRunner
    {
        public Task<ProcessResult> RunAsync(string fileName, IReadOnlyList<string> arguments, string? standardInput = null, CancellationToken cancellationToken = default) => result;
    }
}
