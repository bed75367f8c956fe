namespace Wormhole.Tunnel.Resilience;

/// <summary>
/// How long to wait before retry <c>n</c> of one kind of call to the outside: <see cref="First"/> doubling per attempt
/// up to <see cref="Max"/>, then jitter takes up to half off (so a fleet of spokes restarted together spreads out).
/// Every retrying call and every re-scheduled pass of this program takes its delays from one of the schedules below.
/// </summary>
/// <param name="Operation">The name retries are counted and logged under.</param>
public sealed record RetrySchedule(string Operation, TimeSpan First, TimeSpan Max)
{
    /// <summary>A spoke pairing with the hub: for as long as it takes.</summary>
    public static readonly RetrySchedule Pairing = new("pairing", TimeSpan.FromMilliseconds(500), TimeSpan.FromSeconds(30));

    /// <summary>A spoke's sync with the hub: capped low, so a hub that comes back is found within seconds.</summary>
    public static readonly RetrySchedule Sync = new("sync", TimeSpan.FromMilliseconds(500), TimeSpan.FromSeconds(5));

    /// <summary>Another pass of the reconcile loop after a sink (Kubernetes) failed.</summary>
    public static readonly RetrySchedule Sinks = new("sinks", TimeSpan.FromMilliseconds(500), TimeSpan.FromSeconds(30));

    /// <summary>A Kubernetes list/watch reconnecting after a failure.</summary>
    public static readonly RetrySchedule KubernetesWatch = new("kubernetes-watch", TimeSpan.FromMilliseconds(200), TimeSpan.FromSeconds(30));

    /// <summary>A WireGuard command (wg, ip) that failed: a few quick attempts, then the caller sees the error.</summary>
    public static readonly RetrySchedule WireGuard = new("wireguard", TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(1));

    /// <summary>Attempts a WireGuard command gets in all (the first and two retries).</summary>
    public const int WireGuardAttempts = 3;

    /// <summary>The wait before retry <paramref name="attempt"/> (1-based), with <paramref name="random"/> in [0, 1) choosing the jitter.</summary>
    public TimeSpan Delay(int attempt, double random)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(attempt, 1);
        var step = Math.Min(Max.TotalMilliseconds, First.TotalMilliseconds * Math.Pow(2, Math.Min(attempt - 1, 30)));
        return TimeSpan.FromMilliseconds(step * (0.5 + (random / 2)));
    }

    /// <summary>The wait before retry <paramref name="attempt"/>, with random jitter.</summary>
    public TimeSpan Delay(int attempt) => Delay(attempt, Random.Shared.NextDouble());
}
