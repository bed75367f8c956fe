using System.Net;
using Wormhole.Tunnel.Tests.Hosting;

namespace Wormhole.Tunnel.Tests.Server;

/// <summary>Floods of refused pairings and syncs give one log line per interval and a count, not a line each.</summary>
public sealed class RefusalLogRateTests
{
    private const int PairingRefused = 2101;
    private const int SyncRefused = 2102;
    private const int PairingSummary = 2103;
    private const int SyncSummary = 2104;
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(10);
    private readonly SteppedClock _clock = new(DateTimeOffset.Parse("2026-12-03T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));

    [Fact]
    public async Task A_burst_of_1000_refused_pairings_gives_one_line_and_then_one_count()
    {
        await using var hub = await HubFixture.StartAsync(logClock: _clock);
        var garbage = new byte[64];

        var statuses = await Task.WhenAll(Enumerable.Range(0, 8).Select(async _ =>
        {
            var seen = new List<HttpStatusCode>();
            for (var i = 0; i < 125; i++)
            {
                using var response = await hub.PostPairingBytesAsync(garbage);
                seen.Add(response.StatusCode);
            }

            return seen;
        }));

        statuses.SelectMany(s => s).Should().HaveCount(1000).And.OnlyContain(s => s == HttpStatusCode.BadRequest);
        hub.Logs.WithEvent(PairingRefused).Should().ContainSingle("the first refusal is logged at once, the others counted");
        hub.Logs.WithEvent(PairingSummary).Should().BeEmpty();

        _clock.Advance(Interval);

        hub.Logs.WithEvent(PairingSummary).Should().ContainSingle().Which.Message.Should().Contain("999 more").And.Contain("bad_request").And.Contain("10 s");
        using (var next = await hub.PostPairingBytesAsync(garbage))
        {
            next.StatusCode.Should().Be(HttpStatusCode.BadRequest);
        }

        hub.Logs.WithEvent(PairingRefused).Should().HaveCount(2, "after the interval the next refusal is logged at once");
    }

    [Fact]
    public async Task Refused_syncs_are_limited_per_peer_so_one_noisy_peer_does_not_hide_another()
    {
        await using var hub = await HubFixture.StartAsync(logClock: _clock);
        await hub.PairAsync("alpha");
        await hub.PairAsync("beta");

        for (var i = 0; i < 50; i++)
        {
            using var refused = await hub.PostSyncAsync("127.0.0.2", "not json");
            refused.StatusCode.Should().Be(HttpStatusCode.BadRequest);
        }

        using (var other = await hub.PostSyncAsync("127.0.0.3", "not json"))
        {
            other.StatusCode.Should().Be(HttpStatusCode.BadRequest);
        }

        using (var stranger = await hub.PostSyncAsync("127.0.0.9", "{}"))
        {
            stranger.StatusCode.Should().Be(HttpStatusCode.Forbidden);
        }

        hub.Logs.WithEvent(SyncRefused).Select(l => l.Message.Split(' ')[4]).Should().BeEquivalentTo(["alpha", "beta", "unknown"]);
        _clock.Advance(Interval);
        hub.Logs.WithEvent(SyncSummary).Should().ContainSingle().Which.Message.Should().Contain("49 more").And.Contain("alpha");
    }
}
