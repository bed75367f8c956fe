using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Runtime;
using Wormhole.Tunnel.State;
using Wormhole.Tunnel.Sync;

namespace Wormhole.Tunnel.Api;

/// <summary>What the admin API needs from the hub's peer registry.</summary>
public interface IPeerDirectory
{
    IReadOnlyList<StoredPeer> List();

    /// <summary>Entries of the peers file the hub skipped at start because it cannot use them.</summary>
    IReadOnlyList<InvalidStoredPeer> ListInvalid();

    /// <summary>
    /// Forgets the peer: WireGuard, store, its apps and what they made (generated Services, listeners). Throws
    /// <see cref="PeerDirectoryException"/> when WireGuard or the store refused the change (then nothing changed).
    /// With <paramref name="revoke"/>, its name and key are also blocked from pairing until the revocation is lifted.
    /// </summary>
    Task<PeerDeletion> DeleteAsync(string name, bool revoke, CancellationToken cancellationToken);

    /// <summary>Revoked names and keys (<c>GET /api/revocations/v1</c>).</summary>
    IReadOnlyList<RevocationInfo> Revocations();

    /// <summary>Lifts the revocation of a name (and the key revoked with it); false when there is none.</summary>
    Task<bool> LiftRevocationAsync(string name, CancellationToken cancellationToken);
}

/// <summary>What the admin API needs to issue, list and revoke join tokens.</summary>
public interface IJoinTokenIssuer
{
    Task<IssuedToken> CreateAsync(TokenCreateRequest request, CancellationToken cancellationToken);

    IReadOnlyList<TokenInfo> List();

    Task<bool> RevokeAsync(string id, CancellationToken cancellationToken);
}

/// <summary>A validated <c>POST /api/tokens/v1</c>.</summary>
public sealed record TokenCreateRequest(TimeSpan Ttl, int Uses, string? Name);

/// <summary>The body of <c>POST /api/tokens/v1</c> as sent: <c>{"ttl":"1h","uses":1,"name":"site-b"}</c>, each field optional.</summary>
public sealed record TokenCreateBody(
    [property: JsonPropertyName("ttl")] string? Ttl,
    [property: JsonPropertyName("uses")] int? Uses,
    [property: JsonPropertyName("name")] string? Name);

/// <summary>A token just issued: the only time its pasteable string (<see cref="Token"/>) is shown.</summary>
public sealed record IssuedToken(
    [property: JsonPropertyName("id")] string Id,
    [property: JsonPropertyName("token")] string Token,
    [property: JsonPropertyName("expires")] DateTimeOffset Expires,
    [property: JsonPropertyName("uses")] int Uses,
    [property: JsonPropertyName("name")] string? Name,
    [property: JsonPropertyName("fingerprint")] string Fingerprint,
    [property: JsonPropertyName("pairing_url")] string PairingUrl)
{
    /// <summary>Never prints the token string (it holds the secret).</summary>
    public override string ToString() => $"IssuedToken {{ Id = {Id}, Expires = {Expires:O}, Uses = {Uses}, Name = {Name}, Token = (hidden) }}";
}

/// <summary>A token as <c>GET /api/tokens/v1</c> lists it: no secret.</summary>
public sealed record TokenInfo(
    [property: JsonPropertyName("id")] string Id,
    [property: JsonPropertyName("name")] string? Name,
    [property: JsonPropertyName("created")] DateTimeOffset Created,
    [property: JsonPropertyName("expires")] DateTimeOffset Expires,
    [property: JsonPropertyName("uses")] int Uses,
    [property: JsonPropertyName("used")] int Used,
    [property: JsonPropertyName("revoked")] bool Revoked,
    [property: JsonPropertyName("expired")] bool Expired);

/// <summary>A revoked peer: its name and the key it had (either is refused at pairing).</summary>
public sealed record RevocationInfo(
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("public_key")] string? PublicKey,
    [property: JsonPropertyName("revoked_at")] DateTimeOffset RevokedAt);

/// <summary>What deleting a peer did: not found, done, or done but with something left (<see cref="Pending"/> says what).</summary>
public sealed record PeerDeletion(bool Found, string? Pending)
{
    public static readonly PeerDeletion NotFound = new(false, null);

    public static readonly PeerDeletion Deleted = new(true, null);

    public static PeerDeletion Incomplete(string pending) => new(true, pending);
}

/// <summary>A change to the peer list that WireGuard or the state file refused; nothing was changed.</summary>
public sealed class PeerDirectoryException : Exception
{
    public PeerDirectoryException()
    {
    }

    public PeerDirectoryException(string message)
        : base(message)
    {
    }

    public PeerDirectoryException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>A peers-file entry the hub skipped: its fields where they are strings, and why it was skipped.</summary>
public sealed record InvalidStoredPeer(
    [property: JsonPropertyName("name")] string? Name,
    [property: JsonPropertyName("ip")] string? Ip,
    [property: JsonPropertyName("public_key")] string? PublicKey,
    [property: JsonPropertyName("reason")] string Reason);

public sealed record BasicAuthCredentials(string Username, string Password);

public sealed record PeerV1([property: JsonPropertyName("name")] string Name, [property: JsonPropertyName("ip")] string Ip, [property: JsonPropertyName("public_key")] string PublicKey);

public sealed record PeerV2([property: JsonPropertyName("name")] string Name, [property: JsonPropertyName("metadata")] JsonElement? Metadata);

public sealed record ApiError([property: JsonPropertyName("error")] string Error);

public sealed record HealthMessage([property: JsonPropertyName("message")] string Message);

/// <summary>GET /readyz: <c>ready</c>, or <c>starting</c> with what the side still waits for.</summary>
public sealed record ReadinessStatus([property: JsonPropertyName("status")] string Status, [property: JsonPropertyName("waiting")] IReadOnlyList<string> Waiting);

/// <summary>A step that has run too long, as GET /livez shows it.</summary>
public sealed record StuckStepStatus([property: JsonPropertyName("step")] string Step, [property: JsonPropertyName("seconds")] double Seconds);

/// <summary>GET /livez: <c>live</c>, or <c>stuck</c> with the steps that have run for longer than <c>--stuck-after</c>.</summary>
public sealed record LivenessStatus([property: JsonPropertyName("status")] string Status, [property: JsonPropertyName("stuck")] IReadOnlyList<StuckStepStatus> Stuck);

[JsonSerializable(typeof(List<SyncApp>))]
[JsonSerializable(typeof(List<PeerV1>))]
[JsonSerializable(typeof(List<PeerV2>))]
[JsonSerializable(typeof(List<InvalidStoredPeer>))]
[JsonSerializable(typeof(ApiError))]
[JsonSerializable(typeof(TokenCreateBody))]
[JsonSerializable(typeof(IssuedToken))]
[JsonSerializable(typeof(List<TokenInfo>))]
[JsonSerializable(typeof(List<RevocationInfo>))]
[JsonSerializable(typeof(HealthMessage))]
[JsonSerializable(typeof(ReadinessStatus))]
[JsonSerializable(typeof(LivenessStatus))]
internal sealed partial class AdminJsonContext : JsonSerializerContext;

/// <summary>The admin API on :8082 (reference §6), with its shapes and status codes, minus its bugs.</summary>
public static class AdminApi
{
    public const string HealthText =
        "Wormholes are allowable within the laws of physics, but there's no observational evidence for them. If you find a wormhole, you're a very lucky person because they are extremely rare.";

    private const string JsonType = "application/json; charset=utf-8";

    // Go's encoding/json leaves '+' and '\'' alone (WireGuard keys, the health text): so do we.
    private static readonly AdminJsonContext Context = new(new System.Text.Json.JsonSerializerOptions
    {
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    });

    /// <param name="exposedApps">The remote apps exposed on this side (<c>/api/apps/v1</c>).</param>
    /// <param name="peers">The hub's peers; null on a spoke (no peers endpoints, as in the reference).</param>
    /// <param name="tokens">The hub's join tokens (<c>/api/tokens/v1</c>); null on a spoke.</param>
    /// <param name="health">Readiness and liveness (<c>/readyz</c>, <c>/livez</c>); null: those paths are not served.</param>
    public static void MapAdminApi(this IEndpointRouteBuilder app, Func<IEnumerable<AppDescriptor>> exposedApps, IPeerDirectory? peers, BasicAuthCredentials? basicAuth, IJoinTokenIssuer? tokens = null, Health? health = null)
    {
        // The reference's health check: 200 whenever the process answers.
        app.MapGet("/health", () => Json(new HealthMessage(HealthText), Context.HealthMessage));
        if (health is not null)
        {
            // Not in the reference: the chart's readiness and startup probe, and its liveness probe.
            app.MapGet("/readyz", () =>
            {
                var waiting = health.Waiting();
                return Json(new ReadinessStatus(waiting.Count == 0 ? "ready" : "starting", waiting), Context.ReadinessStatus, waiting.Count == 0 ? StatusCodes.Status200OK : StatusCodes.Status503ServiceUnavailable);
            });
            app.MapGet("/livez", () =>
            {
                var stuck = health.Stuck();
                return Json(
                    new LivenessStatus(stuck.Count == 0 ? "live" : "stuck", [.. stuck.Select(s => new StuckStepStatus(s.Step, Math.Round(s.Running.TotalSeconds, 1)))]),
                    Context.LivenessStatus,
                    stuck.Count == 0 ? StatusCodes.Status200OK : StatusCodes.Status503ServiceUnavailable);
            });
        }

        IResult Apps() => Json(
            exposedApps().Select(a => new SyncApp { Name = a.Name, Address = a.Address, Peer = a.Peer, OriginalPort = a.OriginalPort, TargetLabels = a.TargetLabels }).ToList(),
            Context.ListSyncApp);
        app.MapGet("/api/apps/v1", Apps);
        app.MapGet("/api/apps", Apps);

        if (peers is not null)
        {
            IResult V1() => Json(peers.List().OrderBy(p => p.Name, StringComparer.Ordinal).Select(p => new PeerV1(p.Name, p.Ip, p.PublicKey)).ToList(), Context.ListPeerV1);
            app.MapGet("/api/peers/v1", V1);
            app.MapGet("/api/peers", V1);
            app.MapGet("/api/peers/v2", () => Json(peers.List().OrderBy(p => p.Name, StringComparer.Ordinal).Select(p => new PeerV2(p.Name, p.Metadata)).ToList(), Context.ListPeerV2));

            // Not in the reference. The entries of peers.json the hub skipped at start (it serves the others):
            // [{name, ip, public_key, reason}] in file order, each field null where the entry has no such string.
            // Its own path, so /api/peers/v1 stays the reference's array of usable peers. DELETE /api/peers/v1/{name}
            // removes a skipped entry as it removes a peer.
            app.MapGet("/api/peers/v1/invalid", () => Json(peers.ListInvalid().ToList(), Context.ListInvalidStoredPeer));
            app.MapDelete("/api/peers/v1/{name}", async Task<IResult> (string name, HttpContext context) =>
            {
                if (Refuse(context, basicAuth) is { } refused)
                {
                    return refused;
                }

                // ?revoke=true also blocks the name and key from pairing again (PSK, token or a replayed message).
                var revokeText = context.Request.Query["revoke"].ToString();
                if (revokeText is not ("" or "true" or "false" or "1" or "0"))
                {
                    return Error(StatusCodes.Status400BadRequest, "revoke must be true or false");
                }

                PeerDeletion deletion;
                try
                {
                    deletion = await peers.DeleteAsync(name, revokeText is "true" or "1", context.RequestAborted);
                }
                catch (PeerDirectoryException ex)
                {
                    // Not the caller's fault (WireGuard or the disk refused); the peer is still there, retry later.
                    return Error(StatusCodes.Status503ServiceUnavailable, ex.Message);
                }

                // The reference answers 500 for a peer that does not exist; it is the caller's mistake: 404, same body.
                if (!deletion.Found)
                {
                    return Error(StatusCodes.Status404NotFound, "peer does not exist");
                }

                // 204 means gone; when a sink (the Kubernetes API) could not apply the withdrawal, say so.
                return deletion.Pending is null
                    ? Results.StatusCode(StatusCodes.Status204NoContent)
                    : Error(StatusCodes.Status503ServiceUnavailable, $"the peer is deleted, but what it exposed is not all withdrawn yet ({deletion.Pending}); it is retried");
            });

            // Not in the reference: revoked peers, and lifting a revocation.
            app.MapGet("/api/revocations/v1", IResult (HttpContext context) =>
                Refuse(context, basicAuth) ?? Json(peers.Revocations().ToList(), Context.ListRevocationInfo));
            app.MapDelete("/api/revocations/v1/{name}", async Task<IResult> (string name, HttpContext context) =>
            {
                if (Refuse(context, basicAuth) is { } refused)
                {
                    return refused;
                }

                try
                {
                    return await peers.LiftRevocationAsync(name, context.RequestAborted)
                        ? Results.StatusCode(StatusCodes.Status204NoContent)
                        : Error(StatusCodes.Status404NotFound, "no revocation of that name");
                }
                catch (PeerDirectoryException ex)
                {
                    return Error(StatusCodes.Status503ServiceUnavailable, ex.Message);
                }
            });
        }

        if (tokens is not null)
        {
            MapTokens(app, tokens, basicAuth);
        }

        // A RequestDelegate, not a Delegate: the request-delegate generator (10.0) replaces a fallback's pattern with
        // "{*path:nonfile}", which would leave paths such as /favicon.ico without the reference's 404 body.
        app.MapFallback("{*path}", (RequestDelegate)(context =>
            Results.Text("404 page not found", "text/plain; charset=utf-8", statusCode: StatusCodes.Status404NotFound).ExecuteAsync(context)));
    }

    /// <summary>
    /// Join tokens (not in the reference), all behind basic auth: <c>POST /api/tokens/v1</c>
    /// <c>{"ttl":"1h","uses":1,"name":"site-b"}</c> → 201 with the pasteable token (shown this once);
    /// <c>GET /api/tokens/v1</c> lists them without secrets; <c>DELETE /api/tokens/v1/{id}</c> revokes one.
    /// </summary>
    private static void MapTokens(IEndpointRouteBuilder app, IJoinTokenIssuer tokens, BasicAuthCredentials? basicAuth)
    {
        app.MapPost("/api/tokens/v1", async Task<IResult> (HttpContext context) =>
        {
            if (Refuse(context, basicAuth) is { } refused)
            {
                return refused;
            }

            TokenCreateBody? body;
            try
            {
                body = context.Request.ContentLength == 0 ? new TokenCreateBody(null, null, null) : await JsonSerializer.DeserializeAsync(context.Request.Body, Context.TokenCreateBody, context.RequestAborted);
            }
            catch (Exception ex) when (ex is JsonException or BadHttpRequestException)
            {
                return Error(StatusCodes.Status400BadRequest, "the body must be JSON such as {\"ttl\":\"1h\",\"uses\":1,\"name\":\"site-b\"}");
            }

            body ??= new TokenCreateBody(null, null, null);
            var ttl = TimeSpan.FromHours(1);
            if (body.Ttl is not null && (!Hosting.Durations.TryParse(body.Ttl, out ttl) || ttl < TimeSpan.FromSeconds(1) || ttl > TimeSpan.FromDays(365)))
            {
                return Error(StatusCodes.Status400BadRequest, "ttl must be a duration between 1s and 8760h, such as 15m or 1h");
            }

            var uses = body.Uses ?? 1;
            if (uses is < 1 or > 10_000)
            {
                return Error(StatusCodes.Status400BadRequest, "uses must be between 1 and 10000");
            }

            if (body.Name is not null && !Names.IsValidPeerName(body.Name))
            {
                return Error(StatusCodes.Status400BadRequest, "name must be a DNS label: 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit");
            }

            IssuedToken issued;
            try
            {
                issued = await tokens.CreateAsync(new TokenCreateRequest(ttl, uses, body.Name), context.RequestAborted);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                return Error(StatusCodes.Status503ServiceUnavailable, "the token could not be stored: " + ex.Message);
            }

            context.Response.Headers.CacheControl = "no-store";
            return Results.Text(JsonSerializer.Serialize(issued, Context.IssuedToken), JsonType, statusCode: StatusCodes.Status201Created);
        });
        app.MapGet("/api/tokens/v1", IResult (HttpContext context) => Refuse(context, basicAuth) ?? Json(tokens.List().ToList(), Context.ListTokenInfo));
        app.MapDelete("/api/tokens/v1/{id}", async Task<IResult> (string id, HttpContext context) =>
        {
            if (Refuse(context, basicAuth) is { } refused)
            {
                return refused;
            }

            try
            {
                return await tokens.RevokeAsync(id, context.RequestAborted)
                    ? Results.StatusCode(StatusCodes.Status204NoContent)
                    : Error(StatusCodes.Status404NotFound, "token does not exist");
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                return Error(StatusCodes.Status503ServiceUnavailable, "the revocation could not be stored: " + ex.Message);
            }
        });
    }

    /// <summary>
    /// Null when the request carries the configured credentials; else the answer. The reference answers 500 with the
    /// 403 body; calling without configured credentials is refused by design, not a server failure: 403 (forbidden for
    /// everyone until --basic-auth-* is set), same body.
    /// </summary>
    private static IResult? Refuse(HttpContext context, BasicAuthCredentials? basicAuth)
    {
        if (basicAuth is null)
        {
            return Error(StatusCodes.Status403Forbidden, "Server misconfiguration: Basic authentication is required but not enabled");
        }

        if (!Authorized(context.Request, basicAuth))
        {
            context.Response.Headers.WWWAuthenticate = "Basic realm=\"Restricted\"";
            return Error(StatusCodes.Status401Unauthorized, "Unauthorized: Invalid credentials");
        }

        return null;
    }

    /// <summary>Basic credentials, compared in constant time (over hashes, so lengths do not leak either).</summary>
    public static bool Authorized(HttpRequest request, BasicAuthCredentials expected)
    {
        var header = request.Headers.Authorization.ToString();
        if (!header.StartsWith("Basic ", StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }

        string decoded;
        try
        {
            decoded = Encoding.UTF8.GetString(Convert.FromBase64String(header[6..].Trim()));
        }
        catch (FormatException)
        {
            return false;
        }

        var colon = decoded.IndexOf(':');
        if (colon < 0)
        {
            return false;
        }

        var userOk = SecretEquals(decoded[..colon], expected.Username);
        var passwordOk = SecretEquals(decoded[(colon + 1)..], expected.Password);
        return userOk & passwordOk;
    }

    public static bool SecretEquals(string given, string expected) =>
        CryptographicOperations.FixedTimeEquals(SHA256.HashData(Encoding.UTF8.GetBytes(given)), SHA256.HashData(Encoding.UTF8.GetBytes(expected)));

    private static IResult Json<T>(T value, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> type, int status = StatusCodes.Status200OK) =>
        Results.Text(JsonSerializer.Serialize(value, type), JsonType, statusCode: status);

    private static IResult Error(int status, string message) =>
        Results.Text(JsonSerializer.Serialize(new ApiError(message), Context.ApiError), JsonType, statusCode: status);
}
