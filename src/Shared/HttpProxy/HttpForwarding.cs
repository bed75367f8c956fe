using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Http;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Global;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.Metrics;
using Yarp.ReverseProxy.Forwarder;

namespace Wormhole.Tunnel.HttpProxy;

/// <summary>
/// What happens to one request on an HTTP listener. A per-peer listener forwards it to its peer's tunnel listener. A
/// global listener asks the app's <see cref="GlobalApp"/> for a site — per request, so one long-lived HTTP/2 or gRPC
/// connection still spreads over the sites — and reports back: a site that failed before its response began is marked
/// down at once (passive health, shared with the active probes and the TCP listeners through the same
/// <see cref="SiteState"/>), and an idempotent request without a body is sent once more, to another site. Such a
/// request still waiting for a site's response when that site is marked down (a probe timed out: its packets vanish)
/// is moved to another site the same way instead of waiting for a timeout.
/// </summary>
internal sealed class HttpForwarding(HttpMetrics metrics, GlobalSites? globalSites, ILogger logger, TimeProvider time) : IDisposable
{
    /// <summary>No bytes either way for this long ends a request (the TCP listeners' idle timeout).</summary>
    public static readonly TimeSpan ActivityTimeout = TimeSpan.FromMinutes(10);

    /// <summary>Connecting to a per-peer listener's site (the TCP listeners' connect timeout).</summary>
    public static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(5);

    private static readonly ForwarderRequestConfig Http11 = new()
    {
        Version = HttpVersion.Version11,
        VersionPolicy = HttpVersionPolicy.RequestVersionOrLower,
        ActivityTimeout = ActivityTimeout,
    };

    private static readonly ForwarderRequestConfig H2c = new()
    {
        Version = HttpVersion.Version20,
        VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        ActivityTimeout = ActivityTimeout,
    };

    private readonly ConcurrentDictionary<int, HttpListenerSpec> _routes = new();
    private readonly LogRateLimiter _failureLog = new(time, LogRateLimiter.DefaultInterval, (kind, count, interval) =>
        HttpProxyLog.FailuresSummarized(logger, kind, count, interval.TotalSeconds));

    // One connection pool per kind of listener: global sites are given up on after the shared attempt timeout, so a
    // dead site costs a request at most that long before it moves on.
    private readonly HttpMessageInvoker _siteClient = CreateClient(ConnectTimeout);
    private readonly HttpMessageInvoker _globalClient = CreateClient(GlobalSites.AttemptTimeout);

    public IHttpForwarder? Forwarder { get; set; }

    public void Set(HttpListenerSpec spec) => _routes[spec.Port] = spec;

    public void Remove(int port) => _routes.TryRemove(port, out _);

    public void RetainMetrics(IReadOnlyList<HttpListenerSpec> open)
    {
        var keep = new List<(string, string, string)>();
        foreach (var spec in open)
        {
            if (spec.Site is { } site)
            {
                keep.Add((spec.App, spec.Kind, site.Peer));
            }
            else if (globalSites?.Find(spec.App) is { } app)
            {
                keep.AddRange(app.Sites.Select(s => (spec.App, spec.Kind, s.Site.Peer)));
            }
            else
            {
                keep.Add((spec.App, spec.Kind, HttpMetrics.NoSite));
            }
        }

        metrics.Retain(keep);
    }

    public Task HandleAsync(HttpContext context)
    {
        if (Forwarder is null || !_routes.TryGetValue(context.Connection.LocalPort, out var route))
        {
            // The listener is being removed.
            context.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
            return Task.CompletedTask;
        }

        return route.Site is { } site ? ToSiteAsync(context, route, site) : ToGlobalAsync(context, route);
    }

    public void Dispose()
    {
        _siteClient.Dispose();
        _globalClient.Dispose();
    }

    private async Task ToSiteAsync(HttpContext context, HttpListenerSpec route, HttpSite site)
    {
        var started = time.GetTimestamp();
        var series = metrics.For(route.App, route.Kind, site.Peer);
        var error = await Forwarder!.SendAsync(context, site.Prefix, _siteClient, ConfigFor(context), Transformer.Instance);
        if (error != ForwarderError.None && BeforeResponse(context, error))
        {
            series.Failures.Inc();
            LogFailure(route, site.Peer, error, context);
        }

        series.Answered(context.Response.StatusCode);
        if (error == ForwarderError.None)
        {
            series.Duration.Observe(time.GetElapsedTime(started).TotalSeconds);
        }
    }

    private async Task ToGlobalAsync(HttpContext context, HttpListenerSpec route)
    {
        var started = time.GetTimestamp();
        if (globalSites?.Find(route.App) is not { } app)
        {
            NoSite(context, route);
            return;
        }

        var retryable = IsRetryable(context.Request);
        var config = ConfigFor(context);
        ulong tried = 0;
        for (var attempt = 0; ; attempt++)
        {
            if (app.Pick(tried) is not { Tag: SiteState site } upstream)
            {
                if (attempt == 0)
                {
                    NoSite(context, route);
                }
                else
                {
                    // The first attempt's error response was cleared for the retry that found no site left.
                    context.Response.StatusCode = StatusCodes.Status502BadGateway;
                    metrics.For(route.App, route.Kind, HttpMetrics.NoSite).Answered(StatusCodes.Status502BadGateway);
                }

                return;
            }

            tried |= 1UL << upstream.Index;
            var series = metrics.For(route.App, route.Kind, site.Site.Peer);
            // The site marked down while this request waits for its response: give up on it and retry elsewhere. Once the
            // response has begun it runs on (a stream that still flows is not cut because a probe failed).
            using var moveOff = retryable ? new CancellationTokenSource() : null;
            using var registration = moveOff is null ? default : site.WentDown.Register(static state =>
            {
                var (cts, ctx) = ((CancellationTokenSource, HttpContext))state!;
                if (!ctx.Response.HasStarted)
                {
                    try
                    {
                        cts.Cancel();
                    }
                    catch (ObjectDisposedException)
                    {
                    }
                }
            }, (moveOff, context));
            ForwarderError error;
            Interlocked.Increment(ref site.Active);
            try
            {
                error = await Forwarder!.SendAsync(context, $"http://{Apps.AppAddress.Format(upstream.Host, upstream.Port)}", _globalClient, config, Transformer.Instance, moveOff?.Token ?? CancellationToken.None);
            }
            finally
            {
                Interlocked.Decrement(ref site.Active);
            }

            var movedOff = moveOff?.IsCancellationRequested == true;

            if (error == ForwarderError.None)
            {
                app.Connected(upstream);
                app.Closed(upstream);
                series.Answered(context.Response.StatusCode);
                series.Duration.Observe(time.GetElapsedTime(started).TotalSeconds);
                return;
            }

            var clientGone = context.RequestAborted.IsCancellationRequested;
            if (!clientGone && BeforeResponse(context, error))
            {
                series.Failures.Inc();
                if (!movedOff)
                {
                    app.Failed(upstream, Reason(error, context));
                }

                if (retryable && attempt == 0)
                {
                    // Nothing of the response was sent: start it afresh for the next site.
                    context.Response.Clear();
                    context.Features.Set<IForwarderErrorFeature>(null);
                    metrics.Retried(route.App, route.Kind);
                    continue;
                }

                LogFailure(route, site.Site.Peer, error, context);
            }

            series.Answered(context.Response.StatusCode);
            return;
        }
    }

    private void NoSite(HttpContext context, HttpListenerSpec route)
    {
        context.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
        metrics.For(route.App, route.Kind, HttpMetrics.NoSite).Answered(StatusCodes.Status503ServiceUnavailable);
    }

    /// <summary>HTTP/2 from the client goes on as h2c; HTTP/1.x as HTTP/1.1.</summary>
    private static ForwarderRequestConfig ConfigFor(HttpContext context) =>
        HttpProtocol.IsHttp2(context.Request.Protocol) ? H2c : Http11;

    /// <summary>Safe to send twice: an idempotent method (RFC 9110 §9.2.2) and no body to replay.</summary>
    private static bool IsRetryable(HttpRequest request)
    {
        var method = request.Method;
        var idempotent = HttpMethods.IsGet(method) || HttpMethods.IsHead(method) || HttpMethods.IsOptions(method)
            || HttpMethods.IsTrace(method) || HttpMethods.IsPut(method) || HttpMethods.IsDelete(method);
        return idempotent && request.HttpContext.Features.Get<IHttpRequestBodyDetectionFeature>()?.CanHaveBody != true;
    }

    /// <summary>The attempt failed before anything of a response reached the client: connect, send, or wait for headers.</summary>
    private static bool BeforeResponse(HttpContext context, ForwarderError error) =>
        !context.Response.HasStarted && error is ForwarderError.Request or ForwarderError.RequestTimedOut or ForwarderError.RequestCanceled;

    private static string Reason(ForwarderError error, HttpContext context)
    {
        var exception = context.GetForwarderErrorFeature()?.Exception;
        return exception switch
        {
            HttpRequestException { HttpRequestError: var e } => $"a request failed ({e})",
            _ when error == ForwarderError.RequestTimedOut => "a request timed out",
            _ => $"a request failed ({error})",
        };
    }

    private void LogFailure(HttpListenerSpec route, string peer, ForwarderError error, HttpContext context)
    {
        var kind = $"{route.Kind}/{route.App}/{peer}";
        if (_failureLog.ShouldLog(kind))
        {
            HttpProxyLog.RequestFailed(logger, LogText.Of(route.App), LogText.Of(peer), Reason(error, context));
        }
    }

    private static HttpMessageInvoker CreateClient(TimeSpan connectTimeout) => new(new SocketsHttpHandler
    {
        UseProxy = false,
        AllowAutoRedirect = false,
        AutomaticDecompression = DecompressionMethods.None,
        UseCookies = false,
        EnableMultipleHttp2Connections = true,
        ActivityHeadersPropagator = null,
        ConnectTimeout = connectTimeout,
        PooledConnectionIdleTimeout = TimeSpan.FromSeconds(90),
    });

    /// <summary>
    /// Copies the request as it came, Host header included (the site sees the name the client used, as through a TCP
    /// listener), and appends the client's address to <c>X-Forwarded-For</c>.
    /// </summary>
    private sealed class Transformer : HttpTransformer
    {
        public static readonly Transformer Instance = new();

        public override async ValueTask TransformRequestAsync(HttpContext httpContext, HttpRequestMessage proxyRequest, string destinationPrefix, CancellationToken cancellationToken)
        {
            await base.TransformRequestAsync(httpContext, proxyRequest, destinationPrefix, cancellationToken);
            if (httpContext.Connection.RemoteIpAddress is { } client)
            {
                var address = client.IsIPv4MappedToIPv6 ? client.MapToIPv4() : client;
                var existing = httpContext.Request.Headers["X-Forwarded-For"];
                proxyRequest.Headers.Remove("X-Forwarded-For");
                proxyRequest.Headers.TryAddWithoutValidation("X-Forwarded-For", existing.Count == 0 ? address.ToString() : $"{string.Join(", ", existing.ToArray())}, {address}");
            }
        }
    }
}
