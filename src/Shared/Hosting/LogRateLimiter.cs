namespace Wormhole.Tunnel.Hosting;

/// <summary>
/// Keeps a flood of the same log line (refused pairings, refused syncs) from filling the disk: per kind, the first
/// occurrence is logged at once, later ones within <see cref="Interval"/> are only counted, and when the interval has
/// passed one summary line tells how many were not logged. The next occurrence after that is logged at once again, so
/// a steady flood gives two lines per interval per kind. Thread-safe; timers come from the given
/// <see cref="TimeProvider"/>.
/// </summary>
/// <remarks>
/// Kinds must come from a bounded set (an outcome, a paired peer's name), never from raw remote input: each kind keeps
/// a little state. Idle kinds are forgotten once there are many.
/// </remarks>
internal sealed class LogRateLimiter(TimeProvider time, TimeSpan interval, Action<string, int, TimeSpan> summarize)
{
    public static readonly TimeSpan DefaultInterval = TimeSpan.FromSeconds(10);

    private const int PruneAbove = 256;
    private readonly Lock _lock = new();
    private readonly Dictionary<string, Window> _windows = new(StringComparer.Ordinal);

    public TimeSpan Interval => interval;

    /// <summary>True when this occurrence of <paramref name="kind"/> should be logged now; false when it was counted instead.</summary>
    public bool ShouldLog(string kind)
    {
        int flushed;
        lock (_lock)
        {
            var now = time.GetUtcNow();
            if (!_windows.TryGetValue(kind, out var window))
            {
                if (_windows.Count >= PruneAbove)
                {
                    Prune(now);
                }

                _windows[kind] = new Window { Start = now };
                return true;
            }

            if (now - window.Start < interval)
            {
                window.Suppressed++;
                window.Timer ??= time.CreateTimer(_ => Flush(kind), null, window.Start + interval - now, Timeout.InfiniteTimeSpan);
                return false;
            }

            // The interval is over but its timer has not run yet: report the count first, then this line.
            flushed = window.TakeSuppressed();
            window.Start = now;
        }

        if (flushed > 0)
        {
            summarize(kind, flushed, interval);
        }

        return true;
    }

    private void Flush(string kind)
    {
        int count;
        lock (_lock)
        {
            if (!_windows.TryGetValue(kind, out var window))
            {
                return;
            }

            count = window.TakeSuppressed();
        }

        if (count > 0)
        {
            summarize(kind, count, interval);
        }
    }

    private void Prune(DateTimeOffset now)
    {
        foreach (var (kind, window) in _windows.ToList())
        {
            if (window.Suppressed == 0 && now - window.Start >= interval)
            {
                window.Timer?.Dispose();
                _windows.Remove(kind);
            }
        }
    }

    private sealed class Window
    {
        public DateTimeOffset Start { get; set; }

        public int Suppressed { get; set; }

        public ITimer? Timer { get; set; }

        public int TakeSuppressed()
        {
            var count = Suppressed;
            Suppressed = 0;
            Timer?.Dispose();
            Timer = null;
            return count;
        }
    }
}
