using Wormhole.Tunnel.Hosting;

namespace Wormhole.Tunnel.Tests.Hosting;

public sealed class LogRateLimiterTests
{
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(10);
    private readonly SteppedClock _clock = new(DateTimeOffset.Parse("2026-12-03T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
    private readonly List<(string Kind, int Count, TimeSpan Interval)> _summaries = [];

    [Fact]
    public void A_burst_of_1000_gives_one_line_at_once_and_one_count_when_the_interval_is_over()
    {
        var limiter = NewLimiter();

        var logged = Enumerable.Range(0, 1000).Count(_ => limiter.ShouldLog("pairing"));

        logged.Should().Be(1, "only the first refusal is logged at once");
        _summaries.Should().BeEmpty("the count is told when the interval is over");
        _clock.Advance(Interval - TimeSpan.FromMilliseconds(1));
        _summaries.Should().BeEmpty();
        _clock.Advance(TimeSpan.FromMilliseconds(1));
        _summaries.Should().Equal(("pairing", 999, Interval));
        _clock.PendingTimers.Should().Be(0);
    }

    [Fact]
    public void After_the_interval_the_next_occurrence_is_logged_at_once_again()
    {
        var limiter = NewLimiter();
        limiter.ShouldLog("pairing").Should().BeTrue();
        limiter.ShouldLog("pairing").Should().BeFalse();
        _clock.Advance(Interval);
        _summaries.Should().Equal(("pairing", 1, Interval));

        limiter.ShouldLog("pairing").Should().BeTrue();
        limiter.ShouldLog("pairing").Should().BeFalse();
        limiter.ShouldLog("pairing").Should().BeFalse();
        _clock.Advance(Interval);

        _summaries.Should().Equal(("pairing", 1, Interval), ("pairing", 2, Interval));
    }

    [Fact]
    public void A_single_occurrence_gives_no_summary()
    {
        var limiter = NewLimiter();

        limiter.ShouldLog("sync").Should().BeTrue();
        _clock.Advance(Interval * 3);
        limiter.ShouldLog("sync").Should().BeTrue();

        _summaries.Should().BeEmpty();
        _clock.PendingTimers.Should().Be(0, "nothing was counted, so no timer waits");
    }

    [Fact]
    public void Kinds_are_limited_separately()
    {
        var limiter = NewLimiter();

        limiter.ShouldLog("sync:alpha").Should().BeTrue();
        limiter.ShouldLog("sync:beta").Should().BeTrue();
        limiter.ShouldLog("sync:alpha").Should().BeFalse();
        limiter.ShouldLog("sync:beta").Should().BeFalse();
        limiter.ShouldLog("sync:beta").Should().BeFalse();
        _clock.Advance(Interval);

        _summaries.Should().BeEquivalentTo([("sync:alpha", 1, Interval), ("sync:beta", 2, Interval)]);
    }

    [Fact]
    public void Concurrent_callers_each_count_once()
    {
        var limiter = NewLimiter();

        var logged = 0;
        Parallel.For(0, 10_000, _ =>
        {
            if (limiter.ShouldLog("pairing"))
            {
                Interlocked.Increment(ref logged);
            }
        });
        _clock.Advance(Interval);

        logged.Should().Be(1);
        _summaries.Should().Equal(("pairing", 9_999, Interval));
    }

    private LogRateLimiter NewLimiter() => new(_clock, Interval, (kind, count, interval) =>
    {
        lock (_summaries)
        {
            _summaries.Add((kind, count, interval));
        }
    });
}
