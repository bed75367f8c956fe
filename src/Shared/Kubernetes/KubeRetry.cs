using Microsoft.Extensions.Logging;
using Polly;
using Polly.Retry;
using Wormhole.Tunnel.Resilience;

namespace Wormhole.Tunnel.Kubernetes;

/// <summary>
/// The retries every Kubernetes request gets (Polly): 429 Too Many Requests is retried after the server's Retry-After
/// (exponential from 1 s when it gives none), and a 401 — a token that expired or rotated — once, after the credentials
/// are reloaded (exec plugin run again, token file read again). Each retry is logged at Debug; tokens never are.
/// </summary>
public static partial class KubeRetry
{
    /// <summary>The operation its retries are counted under.</summary>
    public const string Operation = "kubernetes";

    /// <summary>How many times a throttled request is sent again before its 429 is the answer.</summary>
    public const int MaxThrottleRetries = 5;

    /// <summary>A Retry-After beyond this is cut to it, so one answer cannot stall a loop for long.</summary>
    public static readonly TimeSpan MaxRetryAfter = TimeSpan.FromSeconds(60);

    /// <param name="reloadCredentials">Drops the cached credentials; null when they are static (a 401 is then final).</param>
    /// <param name="observer">Told of each retry (operation <c>kubernetes</c>), for the retry counter.</param>
    public static ResiliencePipeline Create(TimeProvider time, ILogger logger, Func<bool>? reloadCredentials, Action<RetryNotice>? observer = null)
    {
        var builder = new ResiliencePipelineBuilder { TimeProvider = time };
        if (reloadCredentials is not null)
        {
            builder.AddRetry(new RetryStrategyOptions
            {
                Name = "kubernetes-401",
                ShouldHandle = new PredicateBuilder().Handle<KubeApiException>(e => e.Code == 401),
                MaxRetryAttempts = 1,
                Delay = TimeSpan.Zero,
                BackoffType = DelayBackoffType.Constant,
                UseJitter = false,
                OnRetry = args =>
                {
                    var reloaded = reloadCredentials();
                    LogUnauthorized(logger, Describe(args.Outcome.Exception), reloaded);
                    observer?.Invoke(new RetryNotice(Operation, args.AttemptNumber + 1, args.RetryDelay, args.Outcome.Exception));
                    return default;
                },
            });
        }

        builder.AddRetry(new RetryStrategyOptions
        {
            Name = "kubernetes-429",
            ShouldHandle = new PredicateBuilder().Handle<KubeApiException>(e => e.Code == 429),
            MaxRetryAttempts = MaxThrottleRetries,
            Delay = TimeSpan.FromSeconds(1),
            BackoffType = DelayBackoffType.Exponential,
            UseJitter = false,
            DelayGenerator = static args => new ValueTask<TimeSpan?>(
                args.Outcome.Exception is KubeApiException { RetryAfter: { } after } ? (after < TimeSpan.Zero ? TimeSpan.Zero : after > MaxRetryAfter ? MaxRetryAfter : after) : null),
            OnRetry = args =>
            {
                LogThrottled(logger, Describe(args.Outcome.Exception), args.AttemptNumber + 1, (long)args.RetryDelay.TotalMilliseconds);
                observer?.Invoke(new RetryNotice(Operation, args.AttemptNumber + 1, args.RetryDelay, args.Outcome.Exception));
                return default;
            },
        });
        return builder.Build();
    }

    private static string Describe(Exception? exception) => exception is KubeApiException e ? e.Request : "request";

    [LoggerMessage(EventId = 1900, Level = LogLevel.Debug, Message = "{Request} was throttled (429); retry {Attempt} in {DelayMs} ms")]
    private static partial void LogThrottled(ILogger logger, string request, int attempt, long delayMs);

    [LoggerMessage(EventId = 1901, Level = LogLevel.Debug, Message = "{Request} was refused (401); credentials reloaded: {Reloaded}; retrying once")]
    private static partial void LogUnauthorized(ILogger logger, string request, bool reloaded);
}
