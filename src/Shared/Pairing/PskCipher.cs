using System.Security.Cryptography;
using System.Text;

namespace Wormhole.Tunnel.Pairing;

/// <summary>
/// The reference's invite-token encryption (reference §2.3): AES-128-GCM, key = the PSK's UTF-8 bytes cut or padded
/// to 16 with a fixed pad, wire = nonce(12) ‖ ciphertext ‖ tag(16). Kept byte-for-byte for compatibility; it is weak
/// (no KDF), so the PSK itself must be long and random.
/// </summary>
public sealed class PskCipher
{
    public const int NonceSize = 12;
    public const int TagSize = 16;
    private static readonly byte[] Pad = Convert.FromHexString("15777fc294f9a7ef2b575553537c1085");

    private readonly byte[] _key;

    public PskCipher(string psk)
    {
        _key = DeriveKey(psk);
    }

    /// <summary>Derives the 16-byte key; throws <see cref="ArgumentException"/> for a PSK under 6 bytes.</summary>
    public static byte[] DeriveKey(string psk)
    {
        var bytes = Encoding.UTF8.GetBytes(psk);
        if (bytes.Length < 6)
        {
            throw new ArgumentException("The invite token is too short: it must be at least 6 characters.", nameof(psk));
        }

        var key = new byte[16];
        var n = Math.Min(bytes.Length, 16);
        bytes.AsSpan(0, n).CopyTo(key);
        Pad.AsSpan(0, 16 - n).CopyTo(key.AsSpan(n));
        return key;
    }

    public byte[] Seal(ReadOnlySpan<byte> plaintext) => Seal(plaintext, RandomNumberGenerator.GetBytes(NonceSize));

    internal byte[] Seal(ReadOnlySpan<byte> plaintext, ReadOnlySpan<byte> nonce)
    {
        var output = new byte[NonceSize + plaintext.Length + TagSize];
        nonce.CopyTo(output);
        using var aes = new AesGcm(_key, TagSize);
        aes.Encrypt(
            nonce,
            plaintext,
            output.AsSpan(NonceSize, plaintext.Length),
            output.AsSpan(NonceSize + plaintext.Length, TagSize));
        return output;
    }

    /// <summary>Returns the plaintext, or null when the message is too short or does not authenticate.</summary>
    public byte[]? Open(ReadOnlySpan<byte> wire)
    {
        if (wire.Length < NonceSize + TagSize)
        {
            return null;
        }

        var cipherLength = wire.Length - NonceSize - TagSize;
        var plaintext = new byte[cipherLength];
        using var aes = new AesGcm(_key, TagSize);
        try
        {
            aes.Decrypt(
                wire[..NonceSize],
                wire.Slice(NonceSize, cipherLength),
                wire.Slice(NonceSize + cipherLength, TagSize),
                plaintext);
            return plaintext;
        }
        catch (AuthenticationTagMismatchException)
        {
            return null;
        }
    }
}
