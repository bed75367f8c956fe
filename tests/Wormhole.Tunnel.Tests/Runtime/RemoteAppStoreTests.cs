using System.Net;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Runtime;
using Wormhole.Tunnel.Sources;

namespace Wormhole.Tunnel.Tests.Runtime;

public class RemoteAppStoreTests
{
    private static readonly IPAddress Peer = IPAddress.Parse("10.188.0.2");
    private readonly ManualClock _clock = new(DateTimeOffset.Parse("2026-11-22T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
    private readonly RemoteAppStore _store;

    public RemoteAppStoreTests()
    {
        _store = new RemoteAppStore(new ReconcileSignal(), _clock);
    }

    [Fact]
    public void A_peer_silent_for_the_ttl_has_its_apps_withdrawn_and_they_return_with_its_next_sync()
    {
        _store.Update("client1", Peer, [new AppDescriptor("web", "10.188.0.2:20000", "ignored", 80)]);
        _clock.Advance(TimeSpan.FromSeconds(59));
        _store.Expire(TimeSpan.FromSeconds(60)).Should().BeEmpty();
        _store.Snapshot().Should().ContainSingle();

        _clock.Advance(TimeSpan.FromSeconds(2));
        _store.Expire(TimeSpan.FromSeconds(60)).Should().Equal("client1");
        _store.Snapshot().Should().BeEmpty();

        _store.Update("client1", Peer, [new AppDescriptor("web", "10.188.0.2:20000", "ignored", 80)]);
        _store.Snapshot().Single().Apps.Single().Peer.Should().Be("client1", "the receiver overwrites peer with the sender's name");
    }

    [Fact]
    public void A_waiting_long_poll_keeps_the_peer_alive()
    {
        _store.Update("client1", Peer, []);
        _clock.Advance(TimeSpan.FromSeconds(50));
        _store.Touch("client1");
        _clock.Advance(TimeSpan.FromSeconds(50));
        _store.Expire(TimeSpan.FromSeconds(60)).Should().BeEmpty();
    }

    [Fact]
    public void Removing_a_peer_forgets_its_apps()
    {
        _store.Update("client1", Peer, [new AppDescriptor("web", "10.188.0.2:20000", "client1", 80)]);
        _store.Remove("client1").Should().BeTrue();
        _store.Remove("client1").Should().BeFalse();
        _store.Snapshot().Should().BeEmpty();
    }
}
