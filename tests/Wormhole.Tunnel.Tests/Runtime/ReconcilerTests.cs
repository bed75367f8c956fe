using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Runtime;
using Wormhole.Tunnel.Sinks;
using Wormhole.Tunnel.Sources;
using Wormhole.Tunnel.Tests.Server;

namespace Wormhole.Tunnel.Tests.Runtime;

public sealed class ReconcilerTests
{
    [Fact]
    public async Task A_sink_whose_part_of_the_plan_is_up_to_date_is_skipped_and_one_that_threw_is_named_in_the_result()
    {
        var rig = new Rig();
        var counting = new CountingSink("counting");
        var failing = new CountingSink("failing") { Throw = new IOException("the outside is down") };
        var reconciler = rig.Reconciler(counting, failing);
        rig.Local.Set([HubFixture.App("web")]);

        await reconciler.ReconcileOnceAsync(CancellationToken.None);
        await reconciler.ReconcileOnceAsync(CancellationToken.None);

        counting.Applied.Should().Be(1, "the second pass built the same plan");
        failing.Applied.Should().Be(2, "a sink that failed is never up to date");
        var result = await ConvergeOnceAsync(reconciler);
        result.Succeeded.Should().BeFalse();
        result.FailureOf("failing").Should().Be("the failing sink failed: the outside is down");
        result.FailureOf("counting").Should().BeNull();

        rig.Local.Set([HubFixture.App("web"), HubFixture.App("db", 5432)]);
        await reconciler.ReconcileOnceAsync(CancellationToken.None);
        counting.Applied.Should().Be(2, "the plan changed");
    }

    [Fact]
    public async Task The_tunnel_sources_peers_become_the_plans_wireguard_peer_set_and_reach_the_device()
    {
        var rig = new Rig();
        var device = new RecordingWireGuard(Path.Combine(Path.GetTempPath(), "none-" + Guid.NewGuid().ToString("N")));
        var reconciler = rig.Reconciler(new WireGuardSink(device, TimeProvider.System));
        using var stop = new CancellationTokenSource();
        var loop = Task.Run(() => reconciler.RunAsync(stop.Token));
        var key = HubFixture.NewKey();

        rig.Tunnel.SetPeers([new PeerLink("alpha", key, IPAddress.Parse("10.188.0.2"))]);
        (await reconciler.ConvergeAsync(CancellationToken.None)).Succeeded.Should().BeTrue();

        device.Peers.Should().ContainSingle().Which.AllowedIps.Should().Equal("10.188.0.2/32");
        reconciler.Current.PairedPeers.Should().Equal("alpha");
        await stop.CancelAsync();
        await loop.ContinueWith(_ => { }, TaskScheduler.Default);
    }

    [Fact]
    public async Task A_storm_of_changes_is_coalesced_and_rate_limited()
    {
        var rig = new Rig();
        var sink = new CountingSink("counting") { AlwaysApply = true };
        var reconciler = rig.Reconciler(sink);
        using var stop = new CancellationTokenSource();
        var loop = Task.Run(() => reconciler.RunAsync(stop.Token));
        var storm = Task.Run(async () =>
        {
            // A source that changes without pause for a second (a Service flapping in a busy cluster).
            var started = DateTime.UtcNow;
            while (DateTime.UtcNow - started < TimeSpan.FromSeconds(1))
            {
                rig.Signal.Request();
                await Task.Yield();
            }
        });

        await storm;
        await stop.CancelAsync();
        await loop.ContinueWith(_ => { }, TaskScheduler.Default);

        sink.Applied.Should().BeGreaterThan(1, "the loop keeps up with changes")
            .And.BeLessThanOrEqualTo((2 * Reconciler.PassesPerSecond) + 1, "a burst of passes, then at most the rate a second");
    }

    private static async Task<ConvergeResult> ConvergeOnceAsync(Reconciler reconciler)
    {
        var converge = reconciler.ConvergeAsync(CancellationToken.None);
        await reconciler.ReconcileOnceAsync(CancellationToken.None);
        return await converge;
    }

    private sealed class Rig
    {
        public Rig()
        {
            Signal = new ReconcileSignal();
            Local = new MutableLocalApps(Signal);
            Remote = new RemoteAppStore(Signal, TimeProvider.System);
            Tunnel = new TunnelSource(Signal);
            Tunnel.SetAddress(IPAddress.Parse("10.188.0.1"));
        }

        public ReconcileSignal Signal { get; }

        public MutableLocalApps Local { get; }

        public RemoteAppStore Remote { get; }

        public TunnelSource Tunnel { get; }

        public Reconciler Reconciler(params IPlanSink[] sinks) =>
            new(new ReconcilerOptions("hub", TimeSpan.FromHours(1)), Local, Remote, Tunnel, sinks, Signal, TimeProvider.System, NullLogger<Reconciler>.Instance);
    }

    private sealed class CountingSink(string name) : IPlanSink
    {
        private Plan? _applied;
        private int _count;

        public string Name => name;

        public Exception? Throw { get; init; }

        public bool AlwaysApply { get; init; }

        public int Applied => Volatile.Read(ref _count);

        public bool IsUpToDate(Plan plan) =>
            !AlwaysApply && _applied is { } last && last.LocalListeners.SequenceEqual(plan.LocalListeners) && last.RemoteListeners.SequenceEqual(plan.RemoteListeners);

        public Task<SinkResult> ApplyAsync(Plan plan, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref _count);
            if (Throw is { } ex)
            {
                return Task.FromException<SinkResult>(ex);
            }

            _applied = plan;
            return Task.FromResult(SinkResult.Done);
        }
    }
}
