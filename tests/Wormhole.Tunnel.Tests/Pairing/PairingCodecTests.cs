using System.Security.Cryptography;
using System.Text;
using Wormhole.Tunnel.Pairing;

namespace Wormhole.Tunnel.Tests.Pairing;

public class PairingCodecTests
{
    private const string Key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    [Fact]
    public void Plain_request_has_the_reference_snake_case_shape()
    {
        var json = Encoding.UTF8.GetString(new PairingCodec(null).EncodeRequest(new PairingRequest("client1", new PairingWireGuard(Key), [])));
        json.Should().Be($$$"""{"name":"client1","wireguard":{"public_key":"{{{Key}}}"},"metadata":{}}""");
    }

    [Fact]
    public void Plain_response_has_the_reference_shape_with_endpoint_and_sync_address()
    {
        var response = new PairingResponse("server", "10.188.0.2", "10.188.0.1", new PairingWireGuard(Key, "hub.example:51820"),
            new Dictionary<string, string> { ["sync_server_address"] = "http://10.188.0.1:8081" });
        var json = Encoding.UTF8.GetString(new PairingCodec(null).EncodeResponse(response));
        json.Should().Be($$$"""{"name":"server","assigned_ip":"10.188.0.2","internal_server_ip":"10.188.0.1","wireguard":{"public_key":"{{{Key}}}","endpoint":"hub.example:51820"},"metadata":{"sync_server_address":"http://10.188.0.1:8081"}}""");
    }

    [Fact]
    public void Encrypted_request_round_trips_and_a_reference_style_response_decodes()
    {
        var codec = new PairingCodec("supersecret");
        var decoded = codec.DecodeRequest(codec.EncodeRequest(new PairingRequest("client1", new PairingWireGuard(Key), [])), out var error);
        error.Should().BeNull();
        decoded!.Name.Should().Be("client1");
        decoded.WireGuard.PublicKey.Should().Be(Key);

        // What a Go hub sends: the same JSON sealed with the same key rule.
        var goJson = $$$"""{"name":"server","assigned_ip":"10.188.0.7","internal_server_ip":"10.188.0.1","wireguard":{"public_key":"{{{Key}}}","endpoint":"1.2.3.4:51820"},"metadata":{"sync_server_address":"http://10.188.0.1:8081"}}""";
        var response = codec.DecodeResponse(new PskCipher("supersecret").Seal(Encoding.UTF8.GetBytes(goJson)), out error);
        error.Should().BeNull();
        response!.AssignedIp.Should().Be("10.188.0.7");
        response.SyncServerAddress.Should().Be("http://10.188.0.1:8081");
    }

    [Fact]
    public void A_random_5_KB_body_is_rejected_with_a_reason()
    {
        var codec = new PairingCodec("supersecret");
        codec.DecodeRequest(RandomNumberGenerator.GetBytes(5 * 1024), out var error).Should().BeNull();
        error.Should().Contain("cannot decrypt");
    }

    [Fact]
    public void A_request_sealed_with_another_token_is_rejected()
    {
        var body = new PairingCodec("othersecret").EncodeRequest(new PairingRequest("client1", new PairingWireGuard(Key), []));
        new PairingCodec("supersecret").DecodeRequest(body, out var error).Should().BeNull();
        error.Should().Contain("invite tokens differ");
    }

    [Theory]
    [InlineData("""{"name":"","wireguard":{"public_key":"x"}}""")]
    [InlineData("""{"name":"a"}""")]
    [InlineData("""[1,2,3]""")]
    [InlineData("""not json""")]
    public void Malformed_plain_requests_are_rejected(string json)
    {
        new PairingCodec(null).DecodeRequest(Encoding.UTF8.GetBytes(json), out var error).Should().BeNull();
        error.Should().NotBeNullOrEmpty();
    }
}
