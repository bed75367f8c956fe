using System.Security.Cryptography;
using Wormhole.Tunnel.WireGuard;

namespace Wormhole.Tunnel.Tests.WireGuard;

public sealed class WgKeysTests
{
    [Fact]
    public void Keys_as_wg_prints_them_are_valid()
    {
        for (var i = 0; i < 200; i++)
        {
            WgKeys.IsValidKey(Convert.ToBase64String(RandomNumberGenerator.GetBytes(32))).Should().BeTrue();
        }
    }

    [Fact]
    public void A_key_whose_last_digit_has_its_unused_bits_set_is_refused()
    {
        var canonical = Convert.ToBase64String(RandomNumberGenerator.GetBytes(32));
        var spelledOtherwise = NonCanonical(canonical);

        Convert.FromBase64String(spelledOtherwise).Should().Equal(Convert.FromBase64String(canonical), "both spellings decode to the same 32 bytes");
        WgKeys.IsValidKey(canonical).Should().BeTrue();
        WgKeys.IsValidKey(spelledOtherwise).Should().BeFalse();
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("not-a-key")]
    [InlineData("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==")]
    [InlineData("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")]
    [InlineData(" AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")]
    public void Other_junk_is_refused(string? key)
    {
        WgKeys.IsValidKey(key).Should().BeFalse();
    }

    [Fact]
    public void The_zero_key_is_well_formed_but_known()
    {
        WgKeys.IsValidKey(WgKeys.ZeroKey).Should().BeTrue();
        Convert.FromBase64String(WgKeys.ZeroKey).Should().OnlyContain(b => b == 0).And.HaveCount(32);
    }

    /// <summary>
    /// The same 32 bytes spelled with the last digit's unused low bit set: the last digit of a canonical key is a
    /// multiple of 4 (A, E, …, 0, 4, 8), and the next character in the base64 alphabet is that value plus one.
    /// Base64 decoders accept it; wg does not.
    /// </summary>
    internal static string NonCanonical(string canonicalKey) =>
        canonicalKey[..42] + (char)(canonicalKey[42] + 1) + "=";
}
