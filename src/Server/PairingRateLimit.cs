using System.Globalization;
using System.Net;
using System.Threading.RateLimiting;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.RateLimiting;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.Metrics;

namespace Wormhole.Tunnel.Server;

/// <summary>
/// The pairing API's rate limit, per source address (ASP.NET Core's rate limiter, a token bucket per address): a burst
/// of <c>burst</c> requests, then <c>perSecond</c> a second. Beyond it a request gets 429 with Retry-After before its
/// body is read; refusals are counted in <c>wormhole_pairing_attempts_total{outcome="rate_limited"}</c> and logged once
/// per interval with a count. An IPv6 source is limited by its /64 (one host holds a whole /64).
/// </summary>
internal static partial class PairingRateLimit
{
    public const int DefaultPerSecond = 2;
    public const int DefaultBurst = 10;

    public static Action<IApplicationBuilder> Middleware(int perSecond, int burst, WormholeMetrics metrics, ILogger logger, TimeProvider? time = null)
    {
        var refusals = new LogRateLimiter(time ?? TimeProvider.System, LogRateLimiter.DefaultInterval, (_, count, interval) =>
            LogSuppressed(logger, count, interval.TotalSeconds));
        var options = new RateLimiterOptions
        {
            RejectionStatusCode = StatusCodes.Status429TooManyRequests,
            GlobalLimiter = PartitionedRateLimiter.Create<HttpContext, IPAddress>(context => RateLimitPartition.GetTokenBucketLimiter(
                SourceOf(context),
                _ => new TokenBucketRateLimiterOptions
                {
                    TokenLimit = burst,
                    TokensPerPeriod = perSecond,
                    ReplenishmentPeriod = TimeSpan.FromSeconds(1),
                    QueueLimit = 0,
                    AutoReplenishment = true,
                })),
            OnRejected = async (rejected, cancellationToken) =>
            {
                var context = rejected.HttpContext;
                var retryAfter = rejected.Lease.TryGetMetadata(MetadataName.RetryAfter, out var after) ? Math.Max(1, (int)Math.Ceiling(after.TotalSeconds)) : 1;
                context.Response.Headers.RetryAfter = retryAfter.ToString(CultureInfo.InvariantCulture);
                metrics.Pairing("rate_limited");
                if (refusals.ShouldLog("rate_limited"))
                {
                    LogLimited(logger, SourceOf(context).ToString(), burst, perSecond, retryAfter);
                }

                context.Response.ContentType = "text/plain; charset=utf-8";
                await context.Response.WriteAsync($"too many pairing requests from this address; retry in {retryAfter} s\n", cancellationToken);
            },
        };
        return app => app.UseRateLimiter(options);
    }

    /// <summary>The partition of a request: its source address, an IPv6 one cut to its /64.</summary>
    internal static IPAddress SourceOf(HttpContext context)
    {
        var address = context.Connection.RemoteIpAddress ?? IPAddress.None;
        if (address.IsIPv4MappedToIPv6)
        {
            return address.MapToIPv4();
        }

        if (address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6)
        {
            var bytes = address.GetAddressBytes();
            Array.Clear(bytes, 8, 8);
            return new IPAddress(bytes);
        }

        return address;
    }

    [LoggerMessage(EventId = 2106, Level = LogLevel.Warning, Message = "Refused pairing requests from {Source} with 429: over the rate limit (burst {Burst}, then {PerSecond}/s per address); retry in {RetryAfter} s")]
    private static partial void LogLimited(ILogger logger, string source, int burst, int perSecond, int retryAfter);

    [LoggerMessage(EventId = 2107, Level = LogLevel.Warning, Message = "…and {Count} more pairing request(s) refused with 429 (rate limit) in the last {Seconds} s")]
    private static partial void LogSuppressed(ILogger logger, int count, double seconds);
}
