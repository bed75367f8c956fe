using System.Text;
using System.Text.Json;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Sync;

namespace Wormhole.Tunnel.Tests.Sync;

public class SyncCodecTests
{
    [Fact]
    public void Encodes_exactly_the_reference_shape()
    {
        var json = Encoding.UTF8.GetString(SyncCodec.Encode("server", null, [new AppDescriptor("nginx-nginx", "10.188.0.1:20000", "server", 80)]));
        json.Should().Be("""{"Peer":"server","Metadata":null,"Apps":[{"name":"nginx-nginx","address":"10.188.0.1:20000","peer":"server","originalPort":80,"targetLabels":""}]}""");
    }

    [Fact]
    public void Empty_app_list_is_sent_as_an_array_never_null()
    {
        Encoding.UTF8.GetString(SyncCodec.Encode("client1", null, [])).Should().Contain("\"Apps\":[]");
    }

    [Fact]
    public void Decodes_keys_case_insensitively_and_null_apps_as_empty()
    {
        var message = SyncCodec.Decode("""{"peer":"client1","metadata":{"team":"a"},"apps":null}"""u8, out var error);
        error.Should().BeNull();
        message!.Peer.Should().Be("client1");
        message.Apps.Should().BeEmpty();
        message.Metadata!.Value.GetProperty("team").GetString().Should().Be("a");
    }

    [Fact]
    public void Metadata_round_trips_as_given()
    {
        using var doc = JsonDocument.Parse("""{"testFoo":"testBar","n":1}""");
        var bytes = SyncCodec.Encode("client1", doc.RootElement, []);
        Encoding.UTF8.GetString(bytes).Should().Contain("""
            "Metadata":{"testFoo":"testBar","n":1}
            """.Trim());
    }

    [Theory]
    [InlineData("""{"Peer":"a","Apps":[{"name":"x","address":"nope","originalPort":1}]}""", "invalid address")]
    [InlineData("""{"Peer":"a","Apps":[{"name":"x","address":"1.2.3.4:99999","originalPort":1}]}""", "invalid address")]
    [InlineData("""{"Peer":"a","Apps":[{"name":"","address":"1.2.3.4:80"}]}""", "no name")]
    [InlineData("""{"Peer":"a","Apps":[{"name":"x","address":"1.2.3.4:80","originalPort":-4}]}""", "originalPort")]
    [InlineData("""{"Peer":""", "not valid JSON")]
    [InlineData("""null""", "empty")]
    public void Malformed_messages_get_one_clear_reason(string json, string reason)
    {
        SyncCodec.Decode(Encoding.UTF8.GetBytes(json), out var error).Should().BeNull();
        error.Should().Contain(reason);
    }

    [Fact]
    public void Five_thousand_apps_round_trip()
    {
        var apps = Enumerable.Range(0, 5000).Select(i => new AppDescriptor($"app-{i}", $"10.188.0.2:{20000 + (i % 5000)}", "client1", 80)).ToList();
        var bytes = SyncCodec.Encode("client1", null, apps);
        var decoded = SyncCodec.Decode(bytes, out var error);
        error.Should().BeNull();
        decoded!.Apps!.Select(a => a.Name).Should().Equal(apps.Select(a => a.Name));
    }

    [Fact]
    public void A_body_that_is_not_utf8_is_refused()
    {
        byte[] body = [.. "{\"Peer\":\"a\",\"Metadata\":{\"k\":\""u8, 0xC3, 0x28, .. "\"},\"Apps\":[]}"u8];

        SyncCodec.Decode(body, out var error).Should().BeNull();
        error.Should().Contain("UTF-8");
    }

    [Fact]
    public void Metadata_up_to_the_cap_is_accepted_and_over_it_refused()
    {
        // {"p":"…"} is 8 bytes plus the padding.
        var fits = "{\"Peer\":\"a\",\"Metadata\":{\"p\":\"" + new string('x', SyncCodec.MaxMetadataBytes - 8) + "\"}}";
        var over = "{\"Peer\":\"a\",\"Metadata\":{\"p\":\"" + new string('x', SyncCodec.MaxMetadataBytes - 7) + "\"}}";

        SyncCodec.Decode(Encoding.UTF8.GetBytes(fits), out var none).Should().NotBeNull(none);
        SyncCodec.Decode(Encoding.UTF8.GetBytes(over), out var error).Should().BeNull();
        error.Should().Contain("metadata").And.Contain(SyncCodec.MaxMetadataBytes.ToString(System.Globalization.CultureInfo.InvariantCulture));
    }
}
