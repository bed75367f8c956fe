using System.Net;
using System.Text.Json.Nodes;
using Wormhole.Tunnel.Tests.Server;
using static Wormhole.Tunnel.Tests.Metrics.MetricsTestMeter;

namespace Wormhole.Tunnel.Tests.Metrics;

/// <summary>The hub's peer label values: those of its registry, whatever the network sends.</summary>
public sealed class HubMetricsSpecs
{
    private const string Alpha = "127.0.0.2";
    private const string Beta = "127.0.0.3";
    private const string Stranger = "127.0.0.9";

    [Fact]
    public async Task A_deleted_peers_series_go_and_senders_that_are_no_peer_share_one_series()
    {
        await using var hub = await HubFixture.StartAsync();
        await hub.PairAsync("alpha");
        await hub.PairAsync("beta");
        (await hub.PostSyncAsync(Alpha, Sync("alpha"))).StatusCode.Should().Be(HttpStatusCode.OK);
        (await hub.PostSyncAsync(Beta, Sync("beta"))).StatusCode.Should().Be(HttpStatusCode.OK);
        for (var i = 0; i < 5; i++)
        {
            // Names the hub never paired: refused, and they never become label values.
            (await hub.PostSyncAsync(Stranger, Sync($"intruder-{i}"))).StatusCode.Should().Be(HttpStatusCode.Forbidden);
        }

        var before = await ScrapeAsync(hub.Metrics);
        Series(before, "wormhole_sync_round_trips_total").Keys.Should().BeEquivalentTo(["{peer=\"alpha\"}", "{peer=\"beta\"}"]);
        Series(before, "wormhole_sync_round_trip_duration_seconds_count").Keys.Should().BeEquivalentTo(["{peer=\"alpha\"}", "{peer=\"beta\"}"]);
        Series(before, "wormhole_sync_failures_total").Should().Equal(new Dictionary<string, double> { ["{peer=\"unknown\",reason=\"403\"}"] = 5 });
        Series(before, "wormhole_peers")[""].Should().Be(2);
        before.Should().NotContain("intruder");

        (await hub.DeletePeerAsync("beta")).StatusCode.Should().Be(HttpStatusCode.NoContent);

        var after = await ScrapeAsync(hub.Metrics);
        Series(after, "wormhole_sync_round_trips_total").Keys.Should().BeEquivalentTo(["{peer=\"alpha\"}"]);
        Series(after, "wormhole_peers")[""].Should().Be(1);
        after.Should().NotContain("beta");
    }

    [Fact]
    public async Task Pairing_is_counted_and_timed_by_outcome()
    {
        await using var hub = await HubFixture.StartAsync();
        await hub.PairAsync("alpha");
        using (var refused = await hub.PostPairingAsync("alpha", HubFixture.NewKey()))
        {
            refused.StatusCode.Should().Be(HttpStatusCode.Conflict);
        }

        var text = await ScrapeAsync(hub.Metrics);
        Series(text, "wormhole_pairing_attempts_total").Should().Equal(new Dictionary<string, double>
        {
            ["{outcome=\"paired\"}"] = 1,
            ["{outcome=\"key_mismatch\"}"] = 1,
        });
        Series(text, "wormhole_pairing_duration_seconds_count").Should().Equal(new Dictionary<string, double>
        {
            ["{outcome=\"paired\"}"] = 1,
            ["{outcome=\"key_mismatch\"}"] = 1,
        });
    }

    private static string Sync(string peer) =>
        new JsonObject { ["Peer"] = peer, ["Metadata"] = new JsonObject(), ["Apps"] = new JsonArray() }.ToJsonString();
}
