using Wormhole.Tunnel.Hosting;

namespace Wormhole.Tunnel.WireGuard;

/// <summary>WireGuard keys via <c>wg genkey</c> / <c>wg pubkey</c>; private keys travel on stdin/stdout only.</summary>
public static class WgKeys
{
    /// <summary>Generates a new key pair with <c>wg genkey</c> and <c>wg pubkey</c>.</summary>
    public static async Task<WgKeyPair> GenerateAsync(IProcessRunner runner, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(runner);
        var result = await runner.RunAsync("wg", ["genkey"], null, ct);
        if (!result.Succeeded)
        {
            throw new WireGuardCommandException("wg genkey", result.ExitCode, result.StandardError);
        }

        var privateKey = result.StandardOutput.Trim();
        if (!IsValidKey(privateKey))
        {
            throw new WireGuardCommandException("`wg genkey` printed something that is not a WireGuard key.");
        }

        return new WgKeyPair(privateKey, await PublicKeyOfAsync(runner, privateKey, ct));
    }

    /// <summary>The public key of <paramref name="privateKey"/> (<c>wg pubkey</c>, the private key on stdin).</summary>
    public static async Task<string> PublicKeyOfAsync(IProcessRunner runner, string privateKey, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(runner);
        if (!IsValidKey(privateKey))
        {
            throw new ArgumentException("Not a WireGuard key (expected 32 bytes in base64, 44 characters).", nameof(privateKey));
        }

        var result = await runner.RunAsync("wg", ["pubkey"], privateKey + "\n", ct);
        if (!result.Succeeded)
        {
            throw new WireGuardCommandException("wg pubkey", result.ExitCode, Redact(result.StandardError, privateKey));
        }

        var publicKey = result.StandardOutput.Trim();
        if (!IsValidKey(publicKey))
        {
            throw new WireGuardCommandException("`wg pubkey` printed something that is not a WireGuard key.");
        }

        return publicKey;
    }

    /// <summary>The all-zero key: decodes fine, but is no one's public key (WireGuard treats it as "no key").</summary>
    public const string ZeroKey = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    /// <summary>
    /// True for a WireGuard key: 32 bytes in canonical padded base64, i.e. exactly what encoding those bytes gives
    /// (44 characters ending in '='). The last digit before '=' carries 2 unused bits; a spelling with those bits set
    /// decodes to the same bytes but is refused by <c>wg</c>, so it is refused here too.
    /// </summary>
    public static bool IsValidKey(string? base64)
    {
        if (base64 is null || base64.Length != 44 || base64[43] != '=' || base64[42] == '=')
        {
            return false;
        }

        Span<byte> bytes = stackalloc byte[33];
        if (!Convert.TryFromBase64String(base64, bytes, out var written) || written != 32)
        {
            return false;
        }

        Span<char> canonical = stackalloc char[44];
        return Convert.TryToBase64Chars(bytes[..32], canonical, out var chars) && chars == 44 && canonical.SequenceEqual(base64);
    }

    internal static string Redact(string text, string secret) =>
        string.IsNullOrEmpty(secret) ? text : text.Replace(secret, "(hidden)", StringComparison.Ordinal);
}
