using System.Text;
using Wormhole.Tunnel.Pairing;

namespace Wormhole.Tunnel.Tests.Pairing;

public class PskCipherTests
{
    private static readonly byte[] Nonce = Convert.FromHexString("000102030405060708090a0b");
    private static readonly byte[] Plaintext = Encoding.UTF8.GetBytes("{\"name\":\"client1\"}");

    [Theory]
    [InlineData("supersecret", "737570657273656372657415777fc294", "000102030405060708090a0bfa1f22db181a7ae7e0e05058f5c00e9d4b6c104f365a2b81849141c66fda40ac39ed")]
    [InlineData("defaultPeeringKeyPleaseChangeMe", "64656661756c7450656572696e674b65", "000102030405060708090a0b713c38f0869854b353e7b60a1770c9727f89ad6644d1d926f5a89df9941661f07257")]
    public void Reference_test_vectors_match_byte_for_byte(string psk, string keyHex, string wireHex)
    {
        Convert.ToHexStringLower(PskCipher.DeriveKey(psk)).Should().Be(keyHex);
        var cipher = new PskCipher(psk);
        Convert.ToHexStringLower(cipher.Seal(Plaintext, Nonce)).Should().Be(wireHex);
        cipher.Open(Convert.FromHexString(wireHex)).Should().Equal(Plaintext);
    }

    [Fact]
    public void Tokens_sharing_their_first_16_bytes_are_the_same_key_as_in_the_reference()
    {
        PskCipher.DeriveKey("defaultPeeringKeyPleaseChangeMe").Should().Equal(PskCipher.DeriveKey("defaultPeeringKeXXXX"));
    }

    [Fact]
    public void A_token_under_6_characters_is_refused()
    {
        var act = () => new PskCipher("short");
        act.Should().Throw<ArgumentException>().WithMessage("*at least 6 characters*");
    }

    [Fact]
    public void Every_message_gets_a_fresh_nonce()
    {
        var cipher = new PskCipher("supersecret");
        cipher.Seal(Plaintext).Should().NotEqual(cipher.Seal(Plaintext));
    }

    [Fact]
    public void A_tampered_or_short_message_does_not_open()
    {
        var cipher = new PskCipher("supersecret");
        var wire = cipher.Seal(Plaintext);
        wire[^1] ^= 1;
        cipher.Open(wire).Should().BeNull();
        cipher.Open(new byte[20]).Should().BeNull();
        new PskCipher("anothersecret").Open(cipher.Seal(Plaintext)).Should().BeNull();
    }
}
