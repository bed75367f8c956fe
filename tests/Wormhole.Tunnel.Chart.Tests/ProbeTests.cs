using System.Diagnostics;
using System.Net;
using Wormhole.Tunnel.Chart.Tests.Infrastructure;

namespace Wormhole.Tunnel.Chart.Tests;

/// <summary>
/// The chart's probes asked of the real pods (<see cref="PodLab"/>) as the kubelet asks them: the path and named port of
/// the rendered startupProbe, readinessProbe and livenessProbe, with their timeouts. podman runs no HTTP probes, so
/// the test plays the kubelet.
/// </summary>
[Collection("pods")]
[Trait("Category", "Images")]
public sealed class ProbeTests(PodLab k) : IAsyncLifetime
{
    public Task InitializeAsync() => Podman.MissingReason is null ? k.ResetAsync() : Task.CompletedTask;

    public Task DisposeAsync() => Task.CompletedTask;

    [PodmanFact]
    public void The_startup_probe_holds_until_the_spoke_has_paired_and_liveness_passes_meanwhile()
    {
        // Observed while the spoke's hub did not exist yet (PodLab starts the spoke first).
        k.SpokeBeforeHub.Startup.Should().Be(HttpStatusCode.ServiceUnavailable);
        k.SpokeBeforeHub.Body.Should().Contain("not paired yet");
        k.SpokeBeforeHub.Liveness.Should().Be(HttpStatusCode.OK, "retrying the pairing is not being stuck");

        // And the window the kubelet gives it before restarting the container.
        var startup = k.Spoke.Manifests.Container["startupProbe"]!;
        TimeSpan.FromSeconds(startup["periodSeconds"]!.GetValue<long>() * startup["failureThreshold"]!.GetValue<long>())
            .Should().BeGreaterThanOrEqualTo(TimeSpan.FromMinutes(5), "a spoke may wait minutes for its hub (a load balancer being provisioned)");
        ((string)startup["httpGet"]!["path"]!).Should().Be((string)k.Spoke.Manifests.Container["readinessProbe"]!["httpGet"]!["path"]!, "start-up ends when the side is ready");
    }

    [PodmanFact]
    public async Task Readiness_waits_for_the_first_list_of_services_then_holds()
    {
        // Observed while the hub's API answered its first LIST with 429 (PodLab throttles it).
        k.HubBeforeFirstList.Status.Should().Be(HttpStatusCode.ServiceUnavailable);
        k.HubBeforeFirstList.Body.Should().Contain("the first list of Services from the Kubernetes API is not in yet");

        foreach (var pod in new[] { k.Hub, k.Spoke })
        {
            var (status, body) = await pod.ProbeAsync("readinessProbe");
            status.Should().Be(HttpStatusCode.OK, body);
            body.Should().Contain("\"status\":\"ready\"");
            (await pod.ProbeAsync("livenessProbe")).Status.Should().Be(HttpStatusCode.OK);
        }

        // The reference's own health check is untouched.
        using var http = new HttpClient();
        (await http.GetAsync(new Uri($"http://{k.Hub.Address}:8082/health"))).StatusCode.Should().Be(HttpStatusCode.OK);
    }

    [PodmanFact]
    public async Task Liveness_fails_while_the_sync_loop_is_stuck_on_a_hung_wireguard_go_and_passes_again_after()
    {
        // wireguard-go stopped (SIGSTOP): the tunnel carries nothing, the spoke's sync fails (its long-poll times out),
        // and the loop renews the WireGuard session with `wg`, which waits forever on wireguard-go's control socket.
        var wireguardGo = await Podman.ChildPidAsync(k.Spoke.Container, "wireguard-go");
        var stopped = Stopwatch.StartNew();
        await Tools.RunAsync("kill", ["-STOP", wireguardGo.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        string body;
        try
        {
            (await k.Spoke.ProbeAsync("livenessProbe")).Status.Should().Be(HttpStatusCode.OK, "nothing is stuck yet");
            var stuck = await Eventually.Async(
                async () => (await k.Spoke.ProbeAsync("livenessProbe")).Status == HttpStatusCode.ServiceUnavailable,
                "the spoke's liveness probe fails",
                TimeSpan.FromSeconds(90),
                k.Spoke.LogsAsync);
            Timings.Record("spoke pod: wireguard-go SIGSTOP -> liveness probe fails (--stuck-after=3s)", stuck);
            body = (await k.Spoke.ProbeAsync("livenessProbe")).Body;
            (await k.Spoke.ProbeAsync("readinessProbe")).Status.Should().Be(HttpStatusCode.OK, "readiness is about the start, and stays");
        }
        finally
        {
            await Tools.RunAsync("kill", ["-CONT", wireguardGo.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        }

        body.Should().Contain("\"status\":\"stuck\"").And.Contain("\"step\":\"wg ", "the wg command waiting on wireguard-go is what is stuck");
        await Eventually.Async(async () => (await k.Spoke.ProbeAsync("livenessProbe")).Status == HttpStatusCode.OK, "liveness passes once wg returns", TimeSpan.FromSeconds(30));
        await Eventually.Async(async () => (await k.Hub.ApiAsync("/api/peers/v1")).ToJsonString().Contains("\"client\"", StringComparison.Ordinal), "the spoke syncs again", TimeSpan.FromSeconds(60));
    }
}
