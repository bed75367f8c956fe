using Microsoft.Extensions.Logging;
using Polly;
using Polly.Retry;

namespace Wormhole.Tunnel.Resilience;

/// <summary>A retry that is about to wait: what for, which attempt, how long and why.</summary>
public readonly record struct RetryNotice(string Operation, int Attempt, TimeSpan Delay, Exception? Problem);

/// <summary>
/// The Polly pipelines of one side, built once by its composition root: each retries one kind of call to the outside on
/// its <see cref="RetrySchedule"/>, logs every retry at Debug and reports it to the observer (metrics count them).
/// </summary>
public sealed partial class RetryPipelines
{
    private readonly ILogger _logger;
    private readonly Action<RetryNotice>? _observer;
    private readonly TimeProvider _time;

    public RetryPipelines(ILogger<RetryPipelines> logger, TimeProvider time, Action<RetryNotice>? observer = null)
    {
        _logger = logger;
        _observer = observer;
        _time = time;
        WireGuard = Build(RetrySchedule.WireGuard, RetrySchedule.WireGuardAttempts - 1, ex => ex is WireGuard.WireGuardCommandException { IsTransient: true });
    }

    /// <summary>A WireGuard command that can be run again as it is (wg set, wg syncconf): two more quick attempts.</summary>
    public ResiliencePipeline WireGuard { get; }

    /// <summary>
    /// A pipeline retrying the exceptions <paramref name="handle"/> accepts, for as long as it takes (until the token is
    /// cancelled) or <paramref name="maxRetries"/> times. <paramref name="onRetry"/> runs before each wait (e.g. to
    /// repair the tunnel between attempts).
    /// </summary>
    public ResiliencePipeline Build(RetrySchedule schedule, int maxRetries, Func<Exception, bool> handle, Func<RetryNotice, CancellationToken, ValueTask>? onRetry = null)
    {
        var options = new RetryStrategyOptions
        {
            Name = schedule.Operation,
            MaxRetryAttempts = maxRetries,
            ShouldHandle = args => new ValueTask<bool>(args.Outcome.Exception is { } ex && handle(ex)),
            DelayGenerator = args => new ValueTask<TimeSpan?>(schedule.Delay(args.AttemptNumber + 1)),
            OnRetry = async args =>
            {
                var notice = new RetryNotice(schedule.Operation, args.AttemptNumber + 1, args.RetryDelay, args.Outcome.Exception);
                LogRetry(schedule.Operation, notice.Attempt, args.RetryDelay.TotalMilliseconds, Hosting.LogText.Of(args.Outcome.Exception?.Message ?? "?", Hosting.LogText.MaxReasonLength));
                _observer?.Invoke(notice);
                if (onRetry is not null)
                {
                    await onRetry(notice, args.Context.CancellationToken);
                }
            },
        };
        return new ResiliencePipelineBuilder { TimeProvider = _time }.AddRetry(options).Build();
    }

    /// <summary>Counts and logs a pass re-scheduled outside a pipeline (the reconcile loop's sinks, a watch reconnecting).</summary>
    public void Report(RetryNotice notice)
    {
        LogRetry(notice.Operation, notice.Attempt, notice.Delay.TotalMilliseconds, Hosting.LogText.Of(notice.Problem?.Message ?? "?", Hosting.LogText.MaxReasonLength));
        _observer?.Invoke(notice);
    }

    [LoggerMessage(EventId = 1500, Level = LogLevel.Debug, Message = "Retrying {Operation} (retry {Attempt}) in {DelayMs:0} ms: {Reason}")]
    private partial void LogRetry(string operation, int attempt, double delayMs, string reason);
}
