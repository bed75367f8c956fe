using System.Diagnostics;
using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.Metrics;
using Wormhole.Tunnel.Pairing;
using Wormhole.Tunnel.Runtime;
using Wormhole.Tunnel.Sources;
using Wormhole.Tunnel.Sync;

namespace Wormhole.Tunnel.Server;

/// <summary>What the pairing endpoint tells spokes about the hub.</summary>
internal sealed record HubIdentity(string Name, IPAddress TunnelAddress, string PublicKey, string Endpoint, string SyncServerAddress);

/// <summary>The hub's two protocol endpoints: <c>/pairing</c> (public, PSK) and <c>/sync</c> (tunnel only).</summary>
internal static partial class HubEndpoints
{
    public static readonly TimeSpan MaxLongPoll = TimeSpan.FromSeconds(25);

    /// <summary>
    /// Before every scrape: wormhole_peers from the registry, and the sync series of deleted peers removed (the peer
    /// label values left are the registry's, plus <see cref="WormholeMetrics.UnknownPeer"/>).
    /// </summary>
    public static void ObservePeers(this WormholeMetrics metrics, PeerRegistry registry) => metrics.OnCollect(() =>
    {
        var peers = registry.List();
        metrics.Peers.Set(peers.Count);
        metrics.RetainPeers(peers.Select(p => p.Name));
    });

    /// <param name="time">Clock of the refusal-log rate limiter (tests pass a manual one).</param>
    public static void MapPairing(this IEndpointRouteBuilder app, PairingCodec codec, PeerRegistry registry, HubIdentity hub, WormholeMetrics metrics, ILogger logger, TimeProvider? time = null)
    {
        // A flood of refused pairings (90,000 in 10 s wrote 17 MB of log) gives one line per outcome per interval
        // plus a count; the metric still counts every one.
        var refusals = new LogRateLimiter(time ?? TimeProvider.System, LogRateLimiter.DefaultInterval, (outcome, count, interval) =>
            LogPairingRefusalsSuppressed(logger, count, outcome, interval.TotalSeconds));

        // POST only (the reference's spokes POST): any other method, CONNECT included, is a 405 from routing before a
        // body is read. Kestrel cannot read the body of a CONNECT request and the handler would answer 500.
        app.MapPost("/pairing", async (HttpContext context) =>
        {
            var started = Stopwatch.GetTimestamp();
            byte[] body;
            try
            {
                body = await ReadBodyAsync(context);
            }
            catch (BadHttpRequestException ex)
            {
                return Fail(context, null, ex.StatusCode, "bad_request", "the pairing body is too large or incomplete", started);
            }

            var request = codec.DecodeRequest(body, out var error);
            if (request is null)
            {
                return Fail(context, null, StatusCodes.Status400BadRequest, "bad_request", error!, started);
            }

            var result = await registry.PairAsync(request.Name, request.WireGuard.PublicKey, context.RequestAborted);
            switch (result.Outcome)
            {
                case PairingOutcome.Paired:
                    var peer = result.Peer!;
                    LogPaired(logger, peer.Name, peer.Ip);
                    var response = new PairingResponse(
                        hub.Name,
                        peer.Ip,
                        hub.TunnelAddress.ToString(),
                        new PairingWireGuard(hub.PublicKey, hub.Endpoint),
                        new Dictionary<string, string> { [PairingResponse.SyncServerAddressKey] = hub.SyncServerAddress });
                    var encoded = codec.EncodeResponse(response);
                    metrics.Pairing("paired", Stopwatch.GetElapsedTime(started));
                    return Results.Bytes(encoded, "application/octet-stream");
                case PairingOutcome.KeyMismatch:
                    return Fail(context, request.Name, StatusCodes.Status409Conflict, "key_mismatch", result.Reason!, started);
                case PairingOutcome.PoolExhausted:
                    return Fail(context, request.Name, StatusCodes.Status503ServiceUnavailable, "pool_exhausted", result.Reason!, started);
                case PairingOutcome.Unavailable:
                    return Fail(context, request.Name, StatusCodes.Status503ServiceUnavailable, "unavailable", result.Reason!, started);
                default:
                    return Fail(context, request.Name, StatusCodes.Status400BadRequest, "bad_request", result.Reason!, started);
            }
        });

        // Every refusal: one log line (the name as the client sent it, escaped and cut), the metric, the reason.
        IResult Fail(HttpContext context, string? name, int status, string outcome, string reason, long started)
        {
            metrics.Pairing(outcome, Stopwatch.GetElapsedTime(started));
            var safeReason = LogText.Of(reason, LogText.MaxReasonLength);
            if (refusals.ShouldLog(outcome))
            {
                LogPairingRefused(logger, context.Connection.RemoteIpAddress?.ToString() ?? "?", name is null ? "?" : LogText.Of(name), status, safeReason);
            }

            return Results.Text(safeReason + "\n", "text/plain; charset=utf-8", statusCode: status);
        }
    }

    /// <param name="stopping">Cancelled when the hub stops: held long-polls end at once (503) instead of holding the shutdown.</param>
    /// <param name="time">Clock of the refusal-log rate limiter (tests pass a manual one).</param>
    public static void MapSync(this IEndpointRouteBuilder app, PeerRegistry registry, RemoteAppStore remoteApps, Reconciler reconciler, string hubName, WormholeMetrics metrics, ILogger logger, CancellationToken stopping, TimeProvider? time = null)
    {
        // Refused syncs: one line per interval per paired peer (and one for senders that are no peer) plus a count.
        var refusals = new LogRateLimiter(time ?? TimeProvider.System, LogRateLimiter.DefaultInterval, (peer, count, interval) =>
            LogSyncRefusalsSuppressed(logger, count, peer, interval.TotalSeconds));

        // Spokes probe this through the tunnel to check a cached pairing (no ICMP needed).
        app.MapGet("/health", () => Results.Text("ok", "text/plain; charset=utf-8"));

        // POST only, as /pairing.
        app.MapPost("/sync", async (HttpContext context) =>
        {
            var started = Stopwatch.GetTimestamp();
            var source = context.Connection.RemoteIpAddress ?? IPAddress.None;
            var peer = registry.FindByAddress(source);
            if (peer is null)
            {
                return Fail(WormholeMetrics.UnknownPeer, StatusCodes.Status403Forbidden, "sync refused: the request does not come from a paired peer's tunnel address");
            }

            // Until the first plan is applied the hub's list of apps is empty, not true: answering with it would make
            // the spoke withdraw every hub app (and delete its generated Services). The spoke retries.
            if (!reconciler.FirstPlanApplied)
            {
                return Fail(peer.Name, StatusCodes.Status503ServiceUnavailable, "the hub is starting: its first plan is not applied yet; retry shortly");
            }

            byte[] body;
            try
            {
                body = await ReadBodyAsync(context);
            }
            catch (BadHttpRequestException ex)
            {
                return Fail(peer.Name, ex.StatusCode, $"the sync body is larger than {SyncCodec.MaxBodyBytes / (1024 * 1024)} MiB or incomplete");
            }

            var message = SyncCodec.Decode(body, out var error);
            if (message is null)
            {
                return Fail(peer.Name, StatusCodes.Status400BadRequest, error!);
            }

            if (message.Peer != peer.Name)
            {
                if (registry.Find(message.Peer) is null)
                {
                    return Fail(peer.Name, StatusCodes.Status404NotFound, "peer does not exist");
                }

                return Fail(peer.Name, StatusCodes.Status403Forbidden, $"sync refused: peer '{LogText.Of(message.Peer)}' must sync from its own tunnel address");
            }

            // Metadata first: when it cannot be stored, the sync changes nothing.
            if (await registry.UpdateMetadataAsync(peer.Name, message.Metadata, context.RequestAborted) is { } storeFailure)
            {
                return Fail(peer.Name, StatusCodes.Status503ServiceUnavailable, $"the hub cannot store this sync: {storeFailure}");
            }

            remoteApps.Update(peer.Name, IPAddress.Parse(peer.Ip), message.Apps!.Select(a => new Apps.AppDescriptor(a.Name, a.Address, peer.Name, a.OriginalPort, a.TargetLabels ?? "")).ToList());

            if (context.Request.Headers.TryGetValue(SyncHeaders.Wait, out var known))
            {
                using var wait = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, stopping);
                try
                {
                    await reconciler.WaitForAdvertisedChangeAsync(known.ToString(), MaxLongPoll, wait.Token);
                }
                catch (OperationCanceledException) when (stopping.IsCancellationRequested)
                {
                    return Fail(peer.Name, StatusCodes.Status503ServiceUnavailable, "the hub is stopping");
                }

                remoteApps.Touch(peer.Name);
            }

            metrics.SyncAnswered(peer.Name, Stopwatch.GetElapsedTime(started));
            var version = reconciler.AdvertisedVersion;
            context.Response.Headers[SyncHeaders.Version] = version;
            return Results.Bytes(SyncCodec.Encode(hubName, null, reconciler.Current.Advertised), "application/json");
        });

        IResult Fail(string peer, int status, string reason)
        {
            metrics.SyncFailed(peer, status.ToString(System.Globalization.CultureInfo.InvariantCulture));
            var safeReason = LogText.Of(reason, LogText.MaxReasonLength);
            if (refusals.ShouldLog(peer))
            {
                LogSyncRefused(logger, peer, status, safeReason);
            }

            return Results.Text(safeReason, "text/plain; charset=utf-8", statusCode: status);
        }
    }

    /// <summary>Reads the whole body, chunked or not, up to the server's MaxRequestBodySize.</summary>
    private static async Task<byte[]> ReadBodyAsync(HttpContext context)
    {
        using var buffer = new MemoryStream();
        await context.Request.Body.CopyToAsync(buffer, context.RequestAborted);
        return buffer.ToArray();
    }

    [LoggerMessage(EventId = 2100, Level = LogLevel.Information, Message = "Pairing request from {Name}, assigned IP {Ip}")]
    private static partial void LogPaired(ILogger logger, string name, string ip);

    [LoggerMessage(EventId = 2101, Level = LogLevel.Warning, Message = "Refused pairing request from {Source} for peer {Name} with status {Status}: {Reason}")]
    private static partial void LogPairingRefused(ILogger logger, string source, string name, int status, string reason);

    [LoggerMessage(EventId = 2102, Level = LogLevel.Warning, Message = "Refused sync from peer {Peer} with status {Status}: {Reason}")]
    private static partial void LogSyncRefused(ILogger logger, string peer, int status, string reason);

    [LoggerMessage(EventId = 2103, Level = LogLevel.Warning, Message = "…and {Count} more pairing request(s) refused as {Outcome} in the last {Seconds} s (one line per {Seconds} s is logged)")]
    private static partial void LogPairingRefusalsSuppressed(ILogger logger, int count, string outcome, double seconds);

    [LoggerMessage(EventId = 2104, Level = LogLevel.Warning, Message = "…and {Count} more sync(s) from peer {Peer} refused in the last {Seconds} s (one line per {Seconds} s is logged)")]
    private static partial void LogSyncRefusalsSuppressed(ILogger logger, int count, string peer, double seconds);
}
