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
    /// <param name="tokens">The hub's join tokens: with them, <c>POST /pairing/token</c> pairs a spoke that holds one.</param>
    /// <param name="pskPairing">False turns the reference's PSK pairing (<c>POST /pairing</c>) off: tokens only.</param>
    public static void MapPairing(
        this IEndpointRouteBuilder app, PairingCodec codec, PeerRegistry registry, HubIdentity hub, WormholeMetrics metrics, ILogger logger,
        TimeProvider? time = null, JoinTokenStore? tokens = null, bool pskPairing = true)
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
            if (!pskPairing)
            {
                return Fail(context, null, StatusCodes.Status403Forbidden, "psk_disabled", "PSK pairing is turned off on this hub: pair with a join token (--join-token)", started);
            }

            byte[] body;
            try
            {
                body = await ReadBodyAsync(context);
            }
            catch (BadHttpRequestException ex)
            {
                return Fail(context, null, ex.StatusCode, "bad_request", "the pairing body is too large or incomplete", started);
            }

            var request = codec.DecodeRequest(body, out var error, out var withPrevious);
            if (request is null)
            {
                return Fail(context, null, StatusCodes.Status400BadRequest, "bad_request", error!, started);
            }

            var result = await registry.PairAsync(request.Name, request.WireGuard.PublicKey, request.WantsPresharedKey, context.RequestAborted);
            if (result.Outcome == PairingOutcome.Paired)
            {
                var peer = result.Peer!;
                LogPaired(logger, peer.Name, peer.Ip);
                var encoded = codec.EncodeResponse(Response(hub, peer, request.WantsPresharedKey), withPrevious);
                metrics.Pairing("paired", Stopwatch.GetElapsedTime(started));
                return Results.Bytes(encoded, "application/octet-stream");
            }

            return Refused(context, request.Name, result, started);
        });

        if (tokens is not null)
        {
            // Pairing with a join token: the request is sealed with a key derived from the token's secret, fresh
            // (timestamp within the clock skew, nonce never seen), and redeems one use; the answer is sealed for the
            // spoke, bound to its request. Safe over plain HTTP.
            app.MapPost(JoinPairing.Path, async (HttpContext context) =>
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

                var envelope = JoinPairing.ParseRequest(body, out var error);
                if (envelope is null)
                {
                    return Fail(context, null, StatusCodes.Status400BadRequest, "bad_request", error!, started);
                }

                // Unknown token and a request the token does not authenticate look the same to the sender.
                var verifier = tokens.VerifierOf(envelope.Id);
                var request = verifier is null ? null : JoinPairing.OpenRequest(envelope, verifier, out error);
                if (request is null)
                {
                    return Fail(context, null, StatusCodes.Status403Forbidden, "token_refused", "the join token is unknown or the request is not authenticated by it", started);
                }

                var fresh = tokens.CheckFresh(envelope.Id, envelope.Nonce, envelope.Timestamp);
                if (fresh != TokenRefusal.None)
                {
                    return fresh == TokenRefusal.ReplayCacheFull
                        ? Fail(context, request.Name, StatusCodes.Status503ServiceUnavailable, "unavailable", "too many token pairings in the last minutes; retry later", started)
                        : Fail(context, request.Name, StatusCodes.Status403Forbidden, fresh == TokenRefusal.Replayed ? "replayed" : "token_refused", TokenReason(fresh), started);
                }

                // Names and keys are checked before a use is taken.
                if (!Apps.Names.IsValidPeerName(request.Name))
                {
                    return Fail(context, request.Name, StatusCodes.Status400BadRequest, "bad_request", "the peer name must be a DNS label: 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit", started);
                }

                var taken = tokens.TryReserve(envelope.Id, request.Name, request.WireGuard.PublicKey, out var reservation);
                if (taken != TokenRefusal.None)
                {
                    return Fail(context, request.Name, StatusCodes.Status403Forbidden, "token_refused", TokenReason(taken), started);
                }

                PairingResult result;
                try
                {
                    result = await registry.PairAsync(request.Name, request.WireGuard.PublicKey, wantsPresharedKey: true, CancellationToken.None);
                }
                catch
                {
                    tokens.Release(reservation!);
                    throw;
                }

                if (result.Outcome != PairingOutcome.Paired)
                {
                    tokens.Release(reservation!);
                    return Refused(context, request.Name, result, started);
                }

                await tokens.CommitAsync(reservation!);
                var peer = result.Peer!;
                LogPairedWithToken(logger, peer.Name, peer.Ip, envelope.Id);
                metrics.Pairing("paired", Stopwatch.GetElapsedTime(started));
                return Results.Bytes(JoinPairing.SealResponse(verifier!, envelope, Response(hub, peer, includePresharedKey: true)), "application/json");
            });
        }

        IResult Refused(HttpContext context, string name, PairingResult result, long started) => result.Outcome switch
        {
            PairingOutcome.KeyMismatch => Fail(context, name, StatusCodes.Status409Conflict, "key_mismatch", result.Reason!, started),
            PairingOutcome.Revoked => Fail(context, name, StatusCodes.Status403Forbidden, "revoked", result.Reason!, started),
            PairingOutcome.PoolExhausted => Fail(context, name, StatusCodes.Status503ServiceUnavailable, "pool_exhausted", result.Reason!, started),
            PairingOutcome.Unavailable => Fail(context, name, StatusCodes.Status503ServiceUnavailable, "unavailable", result.Reason!, started),
            _ => Fail(context, name, StatusCodes.Status400BadRequest, "bad_request", result.Reason!, started),
        };

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

    /// <summary>The pairing answer for a peer (reference §2.2), with its own preshared key when it asked for one.</summary>
    private static PairingResponse Response(HubIdentity hub, State.StoredPeer peer, bool includePresharedKey)
    {
        var metadata = new Dictionary<string, string> { [PairingResponse.SyncServerAddressKey] = hub.SyncServerAddress };
        if (includePresharedKey && peer.PresharedKey is { } psk)
        {
            metadata[PairingResponse.PresharedKeyKey] = psk;
        }

        return new PairingResponse(hub.Name, peer.Ip, hub.TunnelAddress.ToString(), new PairingWireGuard(hub.PublicKey, hub.Endpoint), metadata);
    }

    private static string TokenReason(TokenRefusal refusal) => refusal switch
    {
        TokenRefusal.Revoked => "the join token is revoked",
        TokenRefusal.Expired => "the join token has expired",
        TokenRefusal.Exhausted => "the join token has been used as many times as it allows",
        TokenRefusal.OtherName => "the join token is for another peer name",
        TokenRefusal.Replayed => "this request was seen before (a replay)",
        TokenRefusal.ClockSkew => $"the request's timestamp is more than {JoinPairing.MaxClockSkew.TotalMinutes:0} minutes from the hub's clock (check both clocks)",
        _ => "the join token is unknown or the request is not authenticated by it",
    };

    /// <param name="stopping">Cancelled when the hub stops: held long-polls end at once (503) instead of holding the shutdown.</param>
    /// <param name="time">Clock of the refusal-log rate limiter (tests pass a manual one).</param>
    /// <param name="tokens">Told when a spoke rotates its key, so a token it redeemed still answers it (may be null).</param>
    /// <param name="maxMetadataBytes">The metadata quota per peer (--max-metadata-bytes).</param>
    public static void MapSync(this IEndpointRouteBuilder app, PeerRegistry registry, RemoteAppStore remoteApps, Reconciler reconciler, string hubName, WormholeMetrics metrics, ILogger logger, CancellationToken stopping, TimeProvider? time = null, JoinTokenStore? tokens = null, int maxMetadataBytes = SyncCodec.MaxMetadataBytes)
    {
        // Refused syncs: one line per interval per paired peer (and one for senders that are no peer) plus a count.
        var refusals = new LogRateLimiter(time ?? TimeProvider.System, LogRateLimiter.DefaultInterval, (peer, count, interval) =>
            LogSyncRefusalsSuppressed(logger, count, peer, interval.TotalSeconds));
        var trim = new MemoryTrim(logger, time ?? TimeProvider.System, stopping);

        // Spokes probe this through the tunnel to check a cached pairing (no ICMP needed).
        app.MapGet("/health", () => Results.Text("ok", "text/plain; charset=utf-8"));

        // A spoke's key rotation: WireGuard authenticated it by its current key (the tunnel address is its own). The new
        // key is stored before the answer; WireGuard switches once the answer has left through the old key's session.
        app.MapPost(KeyRotation.Path, async (HttpContext context) =>
        {
            var source = context.Connection.RemoteIpAddress ?? IPAddress.None;
            var peer = registry.FindByAddress(source);
            if (peer is null)
            {
                return Fail(WormholeMetrics.UnknownPeer, StatusCodes.Status403Forbidden, "rotation refused: the request does not come from a paired peer's tunnel address");
            }

            KeyRotation? rotation;
            try
            {
                rotation = System.Text.Json.JsonSerializer.Deserialize(await ReadBodyAsync(context), KeyRotationJsonContext.Default.KeyRotation);
            }
            catch (Exception ex) when (ex is System.Text.Json.JsonException or BadHttpRequestException)
            {
                rotation = null;
            }

            if (rotation?.PublicKey is null || rotation.PresharedKey is null)
            {
                return Fail(peer.Name, StatusCodes.Status400BadRequest, "the body must be {\"public_key\":…,\"preshared_key\":…}");
            }

            var (refusal, apply) = await registry.RotateAsync(peer.Name, rotation.PublicKey, rotation.PresharedKey, CancellationToken.None);
            if (refusal is not null)
            {
                return Fail(peer.Name, StatusCodes.Status409Conflict, "rotation refused: " + refusal);
            }

            if (tokens is not null)
            {
                await tokens.KeyRotatedAsync(peer.Name, peer.PublicKey, rotation.PublicKey);
            }

            context.Response.OnCompleted(apply!);
            return Results.Text("{\"public_key\":\"" + rotation.PublicKey + "\"}", "application/json");
        });

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

            var message = SyncCodec.Decode(body, maxMetadataBytes, out var error);
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

            var appsBefore = remoteApps.CountOf(peer.Name);
            remoteApps.Update(peer.Name, IPAddress.Parse(peer.Ip), message.Apps!.Select(a => a.ToDescriptor(peer.Name)).ToList());
            trim.AfterSync(body.Length, appsBefore, remoteApps.CountOf(peer.Name));

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

    [LoggerMessage(EventId = 2105, Level = LogLevel.Information, Message = "Pairing request from {Name} with join token {TokenId}, assigned IP {Ip}")]
    private static partial void LogPairedWithToken(ILogger logger, string name, string ip, string tokenId);

    [LoggerMessage(EventId = 2101, Level = LogLevel.Warning, Message = "Refused pairing request from {Source} for peer {Name} with status {Status}: {Reason}")]
    private static partial void LogPairingRefused(ILogger logger, string source, string name, int status, string reason);

    [LoggerMessage(EventId = 2102, Level = LogLevel.Warning, Message = "Refused sync from peer {Peer} with status {Status}: {Reason}")]
    private static partial void LogSyncRefused(ILogger logger, string peer, int status, string reason);

    [LoggerMessage(EventId = 2103, Level = LogLevel.Warning, Message = "…and {Count} more pairing request(s) refused as {Outcome} in the last {Seconds} s (one line per {Seconds} s is logged)")]
    private static partial void LogPairingRefusalsSuppressed(ILogger logger, int count, string outcome, double seconds);

    [LoggerMessage(EventId = 2104, Level = LogLevel.Warning, Message = "…and {Count} more sync(s) from peer {Peer} refused in the last {Seconds} s (one line per {Seconds} s is logged)")]
    private static partial void LogSyncRefusalsSuppressed(ILogger logger, int count, string peer, double seconds);
}
