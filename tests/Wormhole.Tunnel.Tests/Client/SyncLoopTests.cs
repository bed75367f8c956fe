using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging.Abstractions;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Client;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.Metrics;
using Wormhole.Tunnel.Pairing;
using Wormhole.Tunnel.Resilience;
using Wormhole.Tunnel.Runtime;
using Wormhole.Tunnel.Sinks;
using Wormhole.Tunnel.Sources;
using Wormhole.Tunnel.Sync;
using Wormhole.Tunnel.Tests.Server;

namespace Wormhole.Tunnel.Tests.Client;

/// <summary>The spoke's sync loop over real HTTP against a hub stand-in that answers every long-poll at once.</summary>
[Collection(MemoryMeasurements.Name)]
public class SyncLoopTests
{
    [Fact]
    public async Task Ten_thousand_sync_rounds_leave_no_waiter_behind_and_memory_flat()
    {
        await using var hub = await InstantHub.StartAsync();
        await using var rig = new Rig(hub.Url);
        var loop = rig.Loop(new RetryPipelines(NullLogger<RetryPipelines>.Instance, TimeProvider.System), _ => Task.CompletedTask);
        var run = Task.Run(() => loop.RunAsync(rig.Stop.Token));

        await Eventually.TrueAsync(() => loop.Rounds >= 1_000 || run.IsCompleted, "1,000 rounds (warm-up)", TimeSpan.FromSeconds(60));
        var before = GC.GetTotalMemory(forceFullCollection: true);
        await Eventually.TrueAsync(() => loop.Rounds >= 11_000 || run.IsCompleted, "10,000 more rounds", TimeSpan.FromSeconds(120));
        var waiters = rig.Reconciler.AdvertisedWaiters;
        var after = GC.GetTotalMemory(forceFullCollection: true);
        await rig.Stop.CancelAsync();
        await run.ContinueWith(_ => { }, TaskScheduler.Default);

        run.IsFaulted.Should().BeFalse(run.Exception?.ToString());
        hub.Requests.Should().BeGreaterThanOrEqualTo(11_000);
        waiters.Should().BeLessThanOrEqualTo(1, "each round's wait for a local change ends with the round");
        (after - before).Should().BeLessThan(512 * 1024, "10,000 rounds must not keep memory (before: {0} B, after: {1} B)", before, after);
    }

    [Fact]
    public async Task A_hub_that_answers_503_twice_is_retried_with_the_tunnel_renewed_between_attempts_then_its_apps_arrive()
    {
        await using var hub = await InstantHub.StartAsync(unavailableFirst: 2, apps: [new AppDescriptor("web", "127.0.0.1:9000", "server", 9000)]);
        await using var rig = new Rig(hub.Url);
        var renewed = 0;
        var notices = new List<RetryNotice>();
        var retries = new RetryPipelines(NullLogger<RetryPipelines>.Instance, TimeProvider.System, n => { lock (notices) { notices.Add(n); } });
        var loop = rig.Loop(retries, _ => { Interlocked.Increment(ref renewed); return Task.CompletedTask; });
        var run = Task.Run(() => loop.RunAsync(rig.Stop.Token));

        await Eventually.TrueAsync(() => rig.Remote.Snapshot().Any(p => p.Apps.Any(a => a.Name == "web")) || run.IsCompleted, "the hub's app after two refusals", TimeSpan.FromSeconds(30));
        await rig.Stop.CancelAsync();
        await run.ContinueWith(_ => { }, TaskScheduler.Default);

        run.IsFaulted.Should().BeFalse(run.Exception?.ToString());
        Volatile.Read(ref renewed).Should().Be(2, "each 503 renews the tunnel before the next attempt");
        lock (notices)
        {
            notices.Select(n => (n.Operation, n.Attempt)).Should().Equal(("sync", 1), ("sync", 2));
        }
    }

    /// <summary>A spoke's side of the sync: a running reconcile loop with no local apps, a hub client, a pairing with the hub at <c>hubUrl</c>.</summary>
    private sealed class Rig : IAsyncDisposable
    {
        private readonly Task _reconcile;
        private readonly HubClient _client = new(new Uri("http://127.0.0.1:9/"), new PairingCodec(null));
        private readonly PairingResponse _pairing;

        public Rig(Uri hubUrl)
        {
            var signal = new ReconcileSignal();
            Remote = new RemoteAppStore(signal, TimeProvider.System);
            Reconciler = new Reconciler(
                new ReconcilerOptions("spoke1", TimeSpan.FromHours(1)), new MutableLocalApps(signal), Remote, new TunnelSource(signal),
                [new ProxySink(new RecordingProxyTable())], signal, TimeProvider.System, NullLogger<Reconciler>.Instance);
            _reconcile = Task.Run(() => Reconciler.RunAsync(Stop.Token));
            _pairing = new PairingResponse(
                "server", "127.0.0.2", "127.0.0.1", new PairingWireGuard(HubFixture.NewKey(), "hub.example.test:51820"),
                new Dictionary<string, string> { [PairingResponse.SyncServerAddressKey] = hubUrl.ToString() });
        }

        public CancellationTokenSource Stop { get; } = new();

        public RemoteAppStore Remote { get; }

        public Reconciler Reconciler { get; }

        public SyncLoop Loop(RetryPipelines retries, Func<CancellationToken, Task> renewTunnel) =>
            new(_client, () => _pairing, _ => Task.CompletedTask, renewTunnel, Reconciler, Remote, "spoke1", null, new WormholeMetrics(), retries, TimeProvider.System, NullLogger.Instance);

        public async ValueTask DisposeAsync()
        {
            await Stop.CancelAsync();
            await _reconcile.ContinueWith(_ => { }, TaskScheduler.Default);
            _client.Dispose();
            Stop.Dispose();
        }
    }

    /// <summary>A hub stand-in: answers every sync at once with no apps and a version header (as a hub of ours whose apps keep changing).</summary>
    private sealed class InstantHub : IAsyncDisposable
    {
        private readonly List<WebApplication> _servers = [];
        private long _requests;

        public Uri Url { get; private set; } = null!;

        public long Requests => Interlocked.Read(ref _requests);

        public static async Task<InstantHub> StartAsync(int unavailableFirst = 0, IReadOnlyList<AppDescriptor>? apps = null)
        {
            var hub = new InstantHub();
            var body = SyncCodec.Encode("server", null, apps ?? []);
            var app = WebHost.Create(new IPEndPoint(IPAddress.Loopback, 0), NullLoggerFactory.Instance, SyncCodec.MaxBodyBytes, a =>
                a.MapPost("/sync", async (HttpContext context) =>
                {
                    await context.Request.Body.CopyToAsync(Stream.Null);
                    var n = Interlocked.Increment(ref hub._requests);
                    if (n <= unavailableFirst)
                    {
                        return Results.StatusCode(StatusCodes.Status503ServiceUnavailable);
                    }

                    context.Response.Headers[SyncHeaders.Version] = $"v{n}";
                    return Results.Bytes(body, "application/json");
                }));
            hub.Url = await LoopbackHost.StartAsync(app, hub._servers);
            return hub;
        }

        public async ValueTask DisposeAsync()
        {
            foreach (var server in _servers)
            {
                await server.StopAsync(CancellationToken.None);
                await server.DisposeAsync();
            }
        }
    }
}
