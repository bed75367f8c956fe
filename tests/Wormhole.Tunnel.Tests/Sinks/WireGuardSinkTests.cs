using System.Net;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Sinks;
using Wormhole.Tunnel.Sources;
using Wormhole.Tunnel.Tests.Runtime;
using Wormhole.Tunnel.Tests.Server;
using Wormhole.Tunnel.WireGuard;

namespace Wormhole.Tunnel.Tests.Sinks;

public sealed class WireGuardSinkTests : IDisposable
{
    private static readonly string Alpha = HubFixture.NewKey();
    private static readonly string Beta = HubFixture.NewKey();
    private readonly string _peersFile = Path.Combine(Path.GetTempPath(), "wormhole-wg-sink-" + Guid.NewGuid().ToString("N"));
    private readonly ManualClock _clock = new(DateTimeOffset.UnixEpoch);
    private readonly RecordingWireGuard _device;
    private readonly WireGuardSink _sink;

    public WireGuardSinkTests()
    {
        _device = new RecordingWireGuard(_peersFile);
        _sink = new WireGuardSink(_device, _clock);
    }

    public void Dispose() => File.Delete(_peersFile);

    [Fact]
    public async Task Without_a_tunnel_address_there_is_no_interface_and_nothing_is_applied()
    {
        var plan = PlanOf(tunnel: null, new PeerLink("server", Alpha, IPAddress.Parse("10.188.0.1"), "hub.example.com:51820", 10));

        _sink.IsUpToDate(plan).Should().BeTrue();
        await _sink.ApplyAsync(plan, CancellationToken.None);
        _device.Calls.Should().Be(0);
    }

    [Fact]
    public async Task The_plans_peer_set_is_applied_whole_and_an_unchanged_plan_is_skipped_until_the_drift_check_is_due()
    {
        var plan = PlanOf(IPAddress.Parse("10.188.0.1"), Link("alpha", Alpha, "10.188.0.2"), Link("beta", Beta, "10.188.0.3"));

        _sink.IsUpToDate(plan).Should().BeFalse();
        await _sink.ApplyAsync(plan, CancellationToken.None);
        _device.Calls.Should().Be(1, "one call for the whole set");
        _device.Peers.Select(p => (p.PublicKey, string.Join(',', p.AllowedIps))).Should().BeEquivalentTo([(Alpha, "10.188.0.2/32"), (Beta, "10.188.0.3/32")]);

        var same = PlanOf(IPAddress.Parse("10.188.0.1"), Link("beta", Beta, "10.188.0.3"), Link("alpha", Alpha, "10.188.0.2"));
        _sink.IsUpToDate(same).Should().BeTrue("the same peers (in another order) change nothing");

        _clock.Advance(WireGuardSink.DriftCheck);
        _sink.IsUpToDate(same).Should().BeFalse("the interface is read back and repaired every drift check");
        await _sink.ApplyAsync(same, CancellationToken.None);
        _device.Calls.Should().Be(2);

        var fewer = PlanOf(IPAddress.Parse("10.188.0.1"), Link("beta", Beta, "10.188.0.3"));
        _sink.IsUpToDate(fewer).Should().BeFalse("a peer went");
    }

    [Fact]
    public async Task A_peer_set_WireGuard_refused_is_not_up_to_date_so_the_next_pass_tries_again()
    {
        var plan = PlanOf(IPAddress.Parse("10.188.0.1"), Link("alpha", Alpha, "10.188.0.2"));
        _device.Refuse = "Unable to modify interface: Operation not permitted";

        var apply = () => _sink.ApplyAsync(plan, CancellationToken.None);

        await apply.Should().ThrowAsync<WireGuardCommandException>();
        _sink.IsUpToDate(plan).Should().BeFalse();
        _device.Refuse = null;
        await _sink.ApplyAsync(plan, CancellationToken.None);
        _sink.IsUpToDate(plan).Should().BeTrue();
        _device.Peers.Should().ContainSingle().Which.PublicKey.Should().Be(Alpha);
    }

    private static PeerLink Link(string name, string key, string address) => new(name, key, IPAddress.Parse(address));

    private static Plan PlanOf(IPAddress? tunnel, params PeerLink[] peers) =>
        Planner.Build(new PlanInput("server", tunnel, [], [], PortRange.Local, PortRange.Remote) { Peers = peers });
}
