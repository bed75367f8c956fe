using System.Buffers.Text;
using System.Security.Cryptography;
using System.Text;

namespace Wormhole.Tunnel.Pairing;

/// <summary>
/// A join token as a person pastes it: the hub's pairing URL, the token's id, a 256-bit secret and the fingerprint of
/// the hub's WireGuard public key, in one string:
/// <c>whj1.&lt;id&gt;.&lt;secret&gt;.&lt;fingerprint&gt;.&lt;url&gt;</c> (each part base64url; the id is 16 hex digits).
/// The hub keeps only <see cref="Verifier"/> (a hash of the secret), never the secret or this string.
/// </summary>
public sealed class JoinToken
{
    public const string Prefix = "whj1";
    public const int SecretBytes = 32;
    public const int IdLength = 16;

    public JoinToken(Uri pairingUrl, string id, byte[] secret, byte[] fingerprint)
    {
        ArgumentNullException.ThrowIfNull(pairingUrl);
        ArgumentNullException.ThrowIfNull(secret);
        ArgumentNullException.ThrowIfNull(fingerprint);
        if (!IsValidId(id))
        {
            throw new ArgumentException("A token id is 16 lowercase hex digits.", nameof(id));
        }

        if (secret.Length != SecretBytes || fingerprint.Length != 32)
        {
            throw new ArgumentException("The secret and the fingerprint are 32 bytes each.", nameof(secret));
        }

        PairingUrl = pairingUrl;
        Id = id;
        Secret = secret;
        Fingerprint = fingerprint;
    }

    public Uri PairingUrl { get; }

    public string Id { get; }

    /// <summary>The secret: never logged, never sent (requests are keyed from it).</summary>
    public byte[] Secret { get; }

    /// <summary>SHA-256 of the hub's WireGuard public key (<see cref="FingerprintOf"/>).</summary>
    public byte[] Fingerprint { get; }

    /// <summary>What the hub stores: SHA-256 over a fixed label and the secret. Requests are keyed from it (HKDF).</summary>
    public byte[] Verifier => VerifierOf(Secret);

    /// <summary>A new token: a random id and a random 256-bit secret.</summary>
    public static JoinToken Create(Uri pairingUrl, string hubPublicKey) =>
        new(pairingUrl, Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(IdLength / 2)), RandomNumberGenerator.GetBytes(SecretBytes), FingerprintOf(hubPublicKey));

    public static bool IsValidId(string? id) => id is { Length: IdLength } && id.All(char.IsAsciiHexDigitLower);

    public static byte[] VerifierOf(ReadOnlySpan<byte> secret)
    {
        var label = "wormhole join token v1\n"u8;
        var input = new byte[label.Length + secret.Length];
        label.CopyTo(input);
        secret.CopyTo(input.AsSpan(label.Length));
        var hash = SHA256.HashData(input);
        CryptographicOperations.ZeroMemory(input);
        return hash;
    }

    /// <summary>SHA-256 of the 32 bytes of a WireGuard public key.</summary>
    public static byte[] FingerprintOf(string wireGuardPublicKey) => SHA256.HashData(Convert.FromBase64String(wireGuardPublicKey));

    /// <summary>The fingerprint as people compare it (base64url, 43 characters).</summary>
    public static string FormatFingerprint(ReadOnlySpan<byte> fingerprint) => Base64Url.EncodeToString(fingerprint);

    /// <summary>The pasteable string. It holds the secret: show it once, never log it.</summary>
    public string Encode() =>
        string.Join('.', Prefix, Id, Base64Url.EncodeToString(Secret), Base64Url.EncodeToString(Fingerprint), Base64Url.EncodeToString(Encoding.UTF8.GetBytes(PairingUrl.ToString())));

    /// <summary>Never prints the secret.</summary>
    public override string ToString() => $"JoinToken {{ Id = {Id}, PairingUrl = {PairingUrl}, Fingerprint = {FormatFingerprint(Fingerprint)}, Secret = (hidden) }}";

    /// <summary>Parses a pasted token (surrounding white space is ignored); null plus one sentence (never echoing the secret) when it is not one.</summary>
    public static JoinToken? TryParse(string? text, out string? error)
    {
        var parts = (text ?? "").Trim().Split('.');
        if (parts.Length != 5 || parts[0] != Prefix)
        {
            error = $"not a join token: a join token starts with '{Prefix}.' and has five parts separated by dots (create one with `wormhole-server token create`)";
            return null;
        }

        if (!IsValidId(parts[1]))
        {
            error = "the join token's id is not 16 lowercase hex digits (was it cut when pasted?)";
            return null;
        }

        byte[] secret, fingerprint, url;
        try
        {
            secret = Base64Url.DecodeFromChars(parts[2]);
            fingerprint = Base64Url.DecodeFromChars(parts[3]);
            url = Base64Url.DecodeFromChars(parts[4]);
        }
        catch (FormatException)
        {
            error = "the join token has characters that are not base64url (was it cut or changed when pasted?)";
            return null;
        }

        if (secret.Length != SecretBytes || fingerprint.Length != 32)
        {
            error = "the join token's secret or fingerprint has the wrong length (was it cut when pasted?)";
            return null;
        }

        string urlText;
        try
        {
            urlText = new UTF8Encoding(false, true).GetString(url);
        }
        catch (DecoderFallbackException)
        {
            error = "the join token's pairing URL is not text";
            return null;
        }

        if (!Uri.TryCreate(urlText, UriKind.Absolute, out var pairingUrl) || pairingUrl.Scheme is not ("http" or "https"))
        {
            error = "the join token's pairing URL is not an http(s) URL";
            return null;
        }

        error = null;
        return new JoinToken(pairingUrl, parts[1], secret, fingerprint);
    }
}
