using System.Buffers.Text;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Wormhole.Tunnel.Pairing;

/// <summary>The envelope of a pairing request made with a join token (<c>POST /pairing/token</c>): JSON, safe over plain HTTP.</summary>
/// <param name="Id">The token's id (public).</param>
/// <param name="Timestamp">Unix seconds when the spoke made the request; the hub refuses requests outside its clock skew.</param>
/// <param name="Nonce">12 random bytes (base64url): the AES-GCM nonce, and what the hub's replay cache remembers.</param>
/// <param name="Box">AES-256-GCM ciphertext and tag (base64url) of the <see cref="PairingRequest"/> JSON.</param>
public sealed record JoinRequestEnvelope(
    [property: JsonPropertyName("id")] string Id,
    [property: JsonPropertyName("ts")] long Timestamp,
    [property: JsonPropertyName("nonce")] string Nonce,
    [property: JsonPropertyName("box")] string Box);

/// <summary>The hub's answer to a token pairing: the <see cref="PairingResponse"/> JSON sealed with the token's response key, bound to the request's nonce.</summary>
public sealed record JoinResponseEnvelope(
    [property: JsonPropertyName("nonce")] string Nonce,
    [property: JsonPropertyName("box")] string Box);

[JsonSourceGenerationOptions(PropertyNameCaseInsensitive = false)]
[JsonSerializable(typeof(JoinRequestEnvelope))]
[JsonSerializable(typeof(JoinResponseEnvelope))]
internal sealed partial class JoinJsonContext : JsonSerializerContext;

/// <summary>
/// Pairing with a join token. Both directions are AES-256-GCM with keys derived by HKDF-SHA256 from the token's
/// <see cref="JoinToken.Verifier"/> (salted with the token id, one key per direction), so the secret never crosses the
/// wire and neither an eavesdropper nor a man in the middle can read or change a request (name, WireGuard key) or an
/// answer (addresses, the hub's key, the per-peer preshared key). The request's additional data binds the token id,
/// timestamp and nonce; the answer's binds the request's nonce, so an old answer cannot be replayed to a spoke.
/// </summary>
public static class JoinPairing
{
    public const string Path = "/pairing/token";

    /// <summary>How far a request's timestamp may be from the hub's clock; the replay cache remembers nonces this long.</summary>
    public static readonly TimeSpan MaxClockSkew = TimeSpan.FromMinutes(5);

    public const int NonceSize = 12;
    private const int TagSize = 16;

    public static byte[] RequestKey(ReadOnlySpan<byte> verifier, string id) => Key(verifier, id, "wormhole join request v1");

    public static byte[] ResponseKey(ReadOnlySpan<byte> verifier, string id) => Key(verifier, id, "wormhole join response v1");

    /// <summary>The spoke's request body; <paramref name="nonce"/> is what the answer must be bound to.</summary>
    public static byte[] SealRequest(JoinToken token, PairingRequest request, DateTimeOffset now, out byte[] nonce)
    {
        ArgumentNullException.ThrowIfNull(token);
        nonce = RandomNumberGenerator.GetBytes(NonceSize);
        var ts = now.ToUnixTimeSeconds();
        var nonceText = Base64Url.EncodeToString(nonce);
        var plain = JsonSerializer.SerializeToUtf8Bytes(request, PairingJsonContext.Default.PairingRequest);
        var box = Seal(RequestKey(token.Verifier, token.Id), nonce, plain, RequestAad(token.Id, ts, nonceText));
        return JsonSerializer.SerializeToUtf8Bytes(new JoinRequestEnvelope(token.Id, ts, nonceText, Base64Url.EncodeToString(box)), JoinJsonContext.Default.JoinRequestEnvelope);
    }

    /// <summary>The envelope of a request body (not yet authenticated), or null and why it is not one.</summary>
    public static JoinRequestEnvelope? ParseRequest(ReadOnlySpan<byte> body, out string? error)
    {
        JoinRequestEnvelope? envelope;
        try
        {
            envelope = JsonSerializer.Deserialize(body, JoinJsonContext.Default.JoinRequestEnvelope);
        }
        catch (JsonException)
        {
            error = "the body is not a token pairing request (JSON with id, ts, nonce and box)";
            return null;
        }

        if (envelope is null || !JoinToken.IsValidId(envelope.Id) || envelope.Nonce is null || envelope.Box is null
            || !TryDecode(envelope.Nonce, out var nonce) || nonce.Length != NonceSize || !TryDecode(envelope.Box, out var box) || box.Length < TagSize)
        {
            error = "the token pairing request lacks a valid id, nonce or box";
            return null;
        }

        error = null;
        return envelope;
    }

    /// <summary>Opens a parsed request with the stored verifier; null when it does not authenticate or is not a pairing request.</summary>
    public static PairingRequest? OpenRequest(JoinRequestEnvelope envelope, ReadOnlySpan<byte> verifier, out string? error)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        TryDecode(envelope.Nonce, out var nonce);
        TryDecode(envelope.Box, out var box);
        var plain = Open(RequestKey(verifier, envelope.Id), nonce, box, RequestAad(envelope.Id, envelope.Timestamp, envelope.Nonce));
        if (plain is null)
        {
            error = "the request is not authenticated by this token's secret";
            return null;
        }

        PairingRequest? request;
        try
        {
            request = JsonSerializer.Deserialize(plain, PairingJsonContext.Default.PairingRequest);
        }
        catch (JsonException)
        {
            request = null;
        }

        if (request is null || string.IsNullOrWhiteSpace(request.Name) || request.WireGuard is null || string.IsNullOrEmpty(request.WireGuard.PublicKey))
        {
            error = "the request lacks a name or a WireGuard public key";
            return null;
        }

        error = null;
        return request;
    }

    /// <summary>The hub's answer, bound to the request's nonce.</summary>
    public static byte[] SealResponse(ReadOnlySpan<byte> verifier, JoinRequestEnvelope request, PairingResponse response)
    {
        ArgumentNullException.ThrowIfNull(request);
        var nonce = RandomNumberGenerator.GetBytes(NonceSize);
        var plain = JsonSerializer.SerializeToUtf8Bytes(response, PairingJsonContext.Default.PairingResponse);
        var box = Seal(ResponseKey(verifier, request.Id), nonce, plain, ResponseAad(request.Id, request.Nonce));
        return JsonSerializer.SerializeToUtf8Bytes(new JoinResponseEnvelope(Base64Url.EncodeToString(nonce), Base64Url.EncodeToString(box)), JoinJsonContext.Default.JoinResponseEnvelope);
    }

    /// <summary>
    /// Opens the hub's answer on the spoke: it must be sealed with this token's response key for this request's nonce,
    /// and name a hub key whose fingerprint is the token's. Null and why otherwise.
    /// </summary>
    public static PairingResponse? OpenResponse(JoinToken token, ReadOnlySpan<byte> requestNonce, ReadOnlySpan<byte> body, out string? error)
    {
        ArgumentNullException.ThrowIfNull(token);
        JoinResponseEnvelope? envelope;
        try
        {
            envelope = JsonSerializer.Deserialize(body, JoinJsonContext.Default.JoinResponseEnvelope);
        }
        catch (JsonException)
        {
            envelope = null;
        }

        if (envelope is null || envelope.Nonce is null || envelope.Box is null || !TryDecode(envelope.Nonce, out var nonce) || nonce.Length != NonceSize || !TryDecode(envelope.Box, out var box))
        {
            error = "the hub's answer is not a token pairing answer";
            return null;
        }

        var plain = Open(ResponseKey(token.Verifier, token.Id), nonce, box, ResponseAad(token.Id, Base64Url.EncodeToString(requestNonce)));
        if (plain is null)
        {
            error = "the hub's answer is not authenticated by the join token: this is not the hub that issued it, or the answer was changed on the way";
            return null;
        }

        PairingResponse? response;
        try
        {
            response = JsonSerializer.Deserialize(plain, PairingJsonContext.Default.PairingResponse);
        }
        catch (JsonException)
        {
            response = null;
        }

        if (response?.WireGuard?.PublicKey is not { } hubKey || !WireGuard.WgKeys.IsValidKey(hubKey))
        {
            error = "the hub's answer has no valid WireGuard public key";
            return null;
        }

        if (!CryptographicOperations.FixedTimeEquals(JoinToken.FingerprintOf(hubKey), token.Fingerprint))
        {
            error = $"the hub's WireGuard key (fingerprint {JoinToken.FormatFingerprint(JoinToken.FingerprintOf(hubKey))}) does not match the join token's fingerprint {JoinToken.FormatFingerprint(token.Fingerprint)}: refusing to pair with this hub";
            return null;
        }

        error = null;
        return response;
    }

    private static byte[] Key(ReadOnlySpan<byte> verifier, string id, string purpose) =>
        HKDF.DeriveKey(HashAlgorithmName.SHA256, verifier.ToArray(), 32, Encoding.UTF8.GetBytes(id), Encoding.UTF8.GetBytes(purpose));

    private static byte[] RequestAad(string id, long ts, string nonce) =>
        Encoding.UTF8.GetBytes(string.Create(CultureInfo.InvariantCulture, $"wormhole join request v1|{id}|{ts}|{nonce}"));

    private static byte[] ResponseAad(string id, string requestNonce) =>
        Encoding.UTF8.GetBytes($"wormhole join response v1|{id}|{requestNonce}");

    private static byte[] Seal(byte[] key, byte[] nonce, byte[] plain, byte[] aad)
    {
        var output = new byte[plain.Length + TagSize];
        using var aes = new AesGcm(key, TagSize);
        aes.Encrypt(nonce, plain, output.AsSpan(0, plain.Length), output.AsSpan(plain.Length), aad);
        return output;
    }

    private static byte[]? Open(byte[] key, byte[] nonce, byte[] box, byte[] aad)
    {
        if (box.Length < TagSize || nonce.Length != NonceSize)
        {
            return null;
        }

        var plain = new byte[box.Length - TagSize];
        using var aes = new AesGcm(key, TagSize);
        try
        {
            aes.Decrypt(nonce, box.AsSpan(0, plain.Length), box.AsSpan(plain.Length), plain, aad);
            return plain;
        }
        catch (AuthenticationTagMismatchException)
        {
            return null;
        }
    }

    private static bool TryDecode(string? text, out byte[] bytes)
    {
        bytes = [];
        if (text is null || text.Length > 64 * 1024)
        {
            return false;
        }

        try
        {
            bytes = Base64Url.DecodeFromChars(text);
            return true;
        }
        catch (FormatException)
        {
            return false;
        }
    }
}

/// <summary>
/// A spoke's key rotation, sent through the tunnel (<c>POST /rotate</c> on the hub's sync address): WireGuard has
/// authenticated the sender by its current key, so the hub moves that peer to <see cref="PublicKey"/> and
/// <see cref="PresharedKey"/>, keeping its address and apps. The spoke chooses both, so it can tell afterwards which
/// pair works even when the answer is lost.
/// </summary>
public sealed record KeyRotation(
    [property: JsonPropertyName("public_key")] string PublicKey,
    [property: JsonPropertyName("preshared_key")] string PresharedKey)
{
    public const string Path = "/rotate";

    public override string ToString() => $"KeyRotation {{ PublicKey = {PublicKey}, PresharedKey = (hidden) }}";
}

[JsonSerializable(typeof(KeyRotation))]
public sealed partial class KeyRotationJsonContext : JsonSerializerContext;
