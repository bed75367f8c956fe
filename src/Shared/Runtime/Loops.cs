using Microsoft.Extensions.Logging;

namespace Wormhole.Tunnel.Runtime;

/// <summary>A background loop ended or failed while the process was meant to keep running.</summary>
public sealed class LoopFailedException(string loop, Exception? cause)
    : Exception(cause is null ? $"the {loop} loop ended unexpectedly" : $"the {loop} loop failed: {cause.Message}", cause)
{
    public string Loop { get; } = loop;
}

/// <summary>One named background loop; it runs until the token is cancelled.</summary>
public sealed record BackgroundLoop(string Name, Func<CancellationToken, Task> Run);

/// <summary>Runs a side's background loops together; the first that dies takes the others (and the process) down.</summary>
public static partial class Loops
{
    /// <summary>
    /// Runs every loop until <paramref name="stop"/> is cancelled, then waits for all of them. A loop that ends or
    /// faults before that is logged with its exception, the others are stopped, and <see cref="LoopFailedException"/>
    /// is thrown, so the process exits non-zero instead of staying up healthy-looking and wrong.
    /// </summary>
    public static async Task RunAsync(IReadOnlyList<BackgroundLoop> loops, ILogger logger, CancellationToken stop)
    {
        using var inner = CancellationTokenSource.CreateLinkedTokenSource(stop);
        var tasks = loops.Select(l => Task.Run(() => l.Run(inner.Token), CancellationToken.None)).ToArray();
        var first = await Task.WhenAny(tasks);
        await inner.CancelAsync();
        await Task.WhenAll(tasks).ContinueWith(static _ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
        if (stop.IsCancellationRequested)
        {
            return;
        }

        var failed = loops[Array.IndexOf(tasks, first)];
        var cause = first.IsFaulted ? first.Exception!.InnerException : first.IsCanceled ? new OperationCanceledException("cancelled from within") : null;
        LogLoopFailed(logger, cause, failed.Name);
        throw new LoopFailedException(failed.Name, cause);
    }

    [LoggerMessage(EventId = 1410, Level = LogLevel.Critical, Message = "The {Loop} loop died; stopping the process")]
    private static partial void LogLoopFailed(ILogger logger, Exception? exception, string loop);
}
