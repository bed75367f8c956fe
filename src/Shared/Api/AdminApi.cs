using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Wormhole.Tunnel.Apps;
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
    /// </summary>
    Task<PeerDeletion> DeleteAsync(string name, CancellationToken cancellationToken);
}

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

[JsonSerializable(typeof(List<SyncApp>))]
[JsonSerializable(typeof(List<PeerV1>))]
[JsonSerializable(typeof(List<PeerV2>))]
[JsonSerializable(typeof(List<InvalidStoredPeer>))]
[JsonSerializable(typeof(ApiError))]
[JsonSerializable(typeof(HealthMessage))]
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
    public static void MapAdminApi(this IEndpointRouteBuilder app, Func<IEnumerable<AppDescriptor>> exposedApps, IPeerDirectory? peers, BasicAuthCredentials? basicAuth)
    {
        app.MapGet("/health", () => Json(new HealthMessage(HealthText), Context.HealthMessage));

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
            app.MapDelete("/api/peers/v1/{name}", async (string name, HttpContext context) =>
            {
                // The reference answers 500 with this body. Deleting without configured credentials is refused by
                // design, not a server failure: 403 (forbidden for everyone until --basic-auth-* is set), same body.
                if (basicAuth is null)
                {
                    return Error(StatusCodes.Status403Forbidden, "Server misconfiguration: Basic authentication is required but not enabled");
                }

                if (!Authorized(context.Request, basicAuth))
                {
                    context.Response.Headers.WWWAuthenticate = "Basic realm=\"Restricted\"";
                    return Error(StatusCodes.Status401Unauthorized, "Unauthorized: Invalid credentials");
                }

                PeerDeletion deletion;
                try
                {
                    deletion = await peers.DeleteAsync(name, context.RequestAborted);
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
        }

        // A RequestDelegate, not a Delegate: the request-delegate generator (10.0) replaces a fallback's pattern with
        // "{*path:nonfile}", which would leave paths such as /favicon.ico without the reference's 404 body.
        app.MapFallback("{*path}", (RequestDelegate)(context =>
            Results.Text("404 page not found", "text/plain; charset=utf-8", statusCode: StatusCodes.Status404NotFound).ExecuteAsync(context)));
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

    private static IResult Json<T>(T value, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> type) =>
        Results.Text(JsonSerializer.Serialize(value, type), JsonType);

    private static IResult Error(int status, string message) =>
        Results.Text(JsonSerializer.Serialize(new ApiError(message), Context.ApiError), JsonType, statusCode: status);
}
