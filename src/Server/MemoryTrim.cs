using Microsoft.Extensions.Logging;

namespace Wormhole.Tunnel.Server;

/// <summary>
/// Gives memory back to the operating system after a large sync. A sync of 100,000 apps (an 8 MiB body, the parsed
/// list, the plan of the peer's quota of listeners) grows the heap by tens of MB; once it is over or withdrawn the hub
/// is idle again and allocates too little for the workstation GC to run a full collection, so the RSS stayed at its
/// peak. After a sync whose body is at least <see cref="LargeBodyBytes"/>, or that withdraws at least
/// <see cref="LargeWithdrawal"/> of a peer's apps, one full compacting collection that decommits free memory
/// (<see cref="GCCollectionMode.Aggressive"/>) runs <see cref="Delay"/> later (when the reconciler has closed the
/// withdrawn listeners). Further triggers while one is pending join it, so a peer sending huge syncs in a loop causes
/// at most one collection per <see cref="Delay"/>. Ordinary syncs (a few KB, a few apps changed) never trigger it.
/// </summary>
internal sealed partial class MemoryTrim(ILogger logger, TimeProvider time, CancellationToken stopping)
{
    public const long LargeBodyBytes = 1024 * 1024;
    public const int LargeWithdrawal = 256;
    public static readonly TimeSpan Delay = TimeSpan.FromSeconds(3);

    private int _pending;

    /// <summary>Whether a sync of <paramref name="bodyBytes"/> that took the peer from <paramref name="appsBefore"/> to <paramref name="appsAfter"/> kept apps calls for a trim.</summary>
    public static bool IsLarge(long bodyBytes, int appsBefore, int appsAfter) =>
        bodyBytes >= LargeBodyBytes || appsBefore - appsAfter >= LargeWithdrawal;

    /// <summary>Schedules a trim when the sync was large (at most one pending).</summary>
    public void AfterSync(long bodyBytes, int appsBefore, int appsAfter)
    {
        if (!IsLarge(bodyBytes, appsBefore, appsAfter) || Interlocked.Exchange(ref _pending, 1) == 1)
        {
            return;
        }

        _ = Task.Run(async () =>
        {
            try
            {
                await Task.Delay(Delay, time, stopping);
                Interlocked.Exchange(ref _pending, 0);
                var before = Environment.WorkingSet;
                var started = time.GetTimestamp();
                GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
                LogTrimmed(logger, before / (1024 * 1024), Environment.WorkingSet / (1024 * 1024), time.GetElapsedTime(started).TotalMilliseconds);
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                // the hub is stopping: nothing to give back
            }
            catch (Exception ex)
            {
                Interlocked.Exchange(ref _pending, 0);
                LogTrimFailed(logger, ex);
            }
        });
    }

    [LoggerMessage(EventId = 2108, Level = LogLevel.Information, Message = "After a large sync: full compacting garbage collection, resident memory {BeforeMb} MB → {AfterMb} MB ({Milliseconds:F0} ms)")]
    private static partial void LogTrimmed(ILogger logger, long beforeMb, long afterMb, double milliseconds);

    [LoggerMessage(EventId = 2109, Level = LogLevel.Warning, Message = "The garbage collection after a large sync failed")]
    private static partial void LogTrimFailed(ILogger logger, Exception exception);
}
