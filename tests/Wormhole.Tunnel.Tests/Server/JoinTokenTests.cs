using System.Buffers.Text;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Wormhole.Tunnel.Client;
using Wormhole.Tunnel.Pairing;
using Wormhole.Tunnel.Tests.Hosting;
using Wormhole.Tunnel.WireGuard;

namespace Wormhole.Tunnel.Tests.Server;

/// <summary>Join tokens end to end over HTTP: issued by the admin API, redeemed by the spoke's real client code.</summary>
public sealed class JoinTokenTests
{
    [Fact]
    public async Task A_spoke_pairs_with_a_pasted_token_and_gets_its_own_preshared_key_while_the_hub_keeps_only_a_hash()
    {
        await using var hub = await HubFixture.StartAsync();
        var issued = await CreateTokenAsync(hub, """{"ttl":"1h","uses":1,"name":"site-b"}""");
        var token = JoinToken.TryParse(issued.GetProperty("token").GetString(), out var error)!;
        token.Should().NotBeNull(error);
        token.PairingUrl.Should().Be(new Uri(hub.PairingUrl, "/"));
        JoinToken.FormatFingerprint(token.Fingerprint).Should().Be(issued.GetProperty("fingerprint").GetString());

        var key = HubFixture.NewKey();
        using var client = new HubClient(new Uri("http://unused.invalid/"), new PairingCodec(null)) { JoinToken = token };
        var response = await client.PairAsync(Request("site-b", key), CancellationToken.None);

        response.AssignedIp.Should().Be("127.0.0.2");
        response.WireGuard.PublicKey.Should().Be(hub.HubPublicKey);
        WgKeys.IsValidKey(response.PresharedKey).Should().BeTrue("a token spoke gets its own WireGuard preshared key");
        hub.WireGuard.Peers.Should().ContainSingle().Which.PresharedKey.Should().Be(response.PresharedKey);
        var tokensFile = File.ReadAllText(Path.Combine(hub.StateDir, "tokens.json"));
        tokensFile.Should().NotContain(issued.GetProperty("token").GetString()!).And.NotContain(Base64Url.EncodeToString(token.Secret))
            .And.NotContain(Convert.ToBase64String(token.Secret).Replace("+", "\\u002B", StringComparison.Ordinal));
        JsonDocument.Parse(tokensFile).RootElement.GetProperty("tokens")[0].GetProperty("verifier").GetString().Should().Be(Convert.ToBase64String(token.Verifier));
        var list = await hub.Admin.SendAsync(Authorized(HttpMethod.Get, "/api/tokens/v1"));
        var listed = JsonDocument.Parse(await list.Content.ReadAsStringAsync()).RootElement.EnumerateArray().Single();
        listed.GetProperty("used").GetInt32().Should().Be(1);
        listed.TryGetProperty("token", out _).Should().BeFalse("the list never shows a secret");
        listed.TryGetProperty("verifier", out _).Should().BeFalse();

        // The same spoke asking again (its answer was lost) is answered without another use; another spoke is not.
        (await client.PairAsync(Request("site-b", key), CancellationToken.None)).AssignedIp.Should().Be("127.0.0.2");
        var other = await client.Invoking(c => c.PairAsync(Request("site-b", HubFixture.NewKey()), CancellationToken.None)).Should().ThrowAsync<HubCallException>();
        other.Which.Status.Should().Be(HttpStatusCode.Forbidden);
    }

    [Fact]
    public async Task A_token_pairs_exactly_as_many_spokes_as_it_allows_when_they_all_ask_at_once()
    {
        await using var hub = await HubFixture.StartAsync();
        var token = JoinToken.TryParse((await CreateTokenAsync(hub, """{"uses":3}""")).GetProperty("token").GetString(), out _)!;

        var attempts = Enumerable.Range(0, 24).Select(async i =>
        {
            using var client = new HubClient(new Uri("http://unused.invalid/"), new PairingCodec(null)) { JoinToken = token };
            try
            {
                await client.PairAsync(Request($"spoke-{i}", HubFixture.NewKey()), CancellationToken.None);
                return HttpStatusCode.OK;
            }
            catch (HubCallException ex)
            {
                return ex.Status ?? HttpStatusCode.InternalServerError;
            }
        }).ToList();
        var statuses = await Task.WhenAll(attempts);

        statuses.Count(s => s == HttpStatusCode.OK).Should().Be(3);
        statuses.Count(s => s == HttpStatusCode.Forbidden).Should().Be(21);
        hub.Registry.List().Should().HaveCount(3);
        hub.Tokens.List().Single().Used.Should().Be(3);
    }

    [Fact]
    public async Task A_captured_token_request_sent_again_is_refused_even_after_the_peer_is_deleted()
    {
        await using var hub = await HubFixture.StartAsync();
        var token = JoinToken.TryParse((await CreateTokenAsync(hub, """{"uses":5}""")).GetProperty("token").GetString(), out _)!;
        var captured = JoinPairing.SealRequest(token, Request("alpha", HubFixture.NewKey()), DateTimeOffset.UtcNow, out _);

        using (var first = await PostTokenAsync(hub, captured))
        {
            first.StatusCode.Should().Be(HttpStatusCode.OK);
        }

        (await hub.DeletePeerAsync("alpha")).StatusCode.Should().Be(HttpStatusCode.NoContent);
        using var replay = await PostTokenAsync(hub, captured);
        replay.StatusCode.Should().Be(HttpStatusCode.Forbidden);
        (await replay.Content.ReadAsStringAsync()).Should().Contain("replay");
        hub.Registry.List().Should().BeEmpty();
    }

    [Fact]
    public async Task Stale_expired_revoked_and_other_name_tokens_are_refused_and_pair_no_one()
    {
        var clock = new SteppedClock(DateTimeOffset.UtcNow);
        await using var hub = await HubFixture.StartAsync(options: new HubOptions { TokenClock = clock });
        var named = JoinToken.TryParse((await CreateTokenAsync(hub, """{"name":"alpha"}""")).GetProperty("token").GetString(), out _)!;
        var revoked = await CreateTokenAsync(hub, "{}");
        var shortLived = JoinToken.TryParse((await CreateTokenAsync(hub, """{"ttl":"1m"}""")).GetProperty("token").GetString(), out _)!;
        (await hub.Admin.SendAsync(Authorized(HttpMethod.Delete, "/api/tokens/v1/" + revoked.GetProperty("id").GetString()))).StatusCode.Should().Be(HttpStatusCode.NoContent);

        var otherName = await PostTokenAsync(hub, JoinPairing.SealRequest(named, Request("beta", HubFixture.NewKey()), clock.GetUtcNow(), out _));
        var stale = await PostTokenAsync(hub, JoinPairing.SealRequest(named, Request("alpha", HubFixture.NewKey()), clock.GetUtcNow() - TimeSpan.FromMinutes(6), out _));
        var revokedToken = JoinToken.TryParse(revoked.GetProperty("token").GetString(), out _)!;
        var afterRevoke = await PostTokenAsync(hub, JoinPairing.SealRequest(revokedToken, Request("gamma", HubFixture.NewKey()), clock.GetUtcNow(), out _));
        clock.Advance(TimeSpan.FromMinutes(2));
        var expired = await PostTokenAsync(hub, JoinPairing.SealRequest(shortLived, Request("delta", HubFixture.NewKey()), clock.GetUtcNow(), out _));
        var forged = await PostTokenAsync(hub, JoinPairing.SealRequest(
            new JoinToken(named.PairingUrl, named.Id, new byte[32], named.Fingerprint), Request("alpha", HubFixture.NewKey()), clock.GetUtcNow(), out _));

        (await otherName.Content.ReadAsStringAsync()).Should().Contain("another peer name");
        (await stale.Content.ReadAsStringAsync()).Should().Contain("timestamp");
        (await afterRevoke.Content.ReadAsStringAsync()).Should().Contain("revoked");
        (await expired.Content.ReadAsStringAsync()).Should().Contain("expired");
        (await forged.Content.ReadAsStringAsync()).Should().Contain("not authenticated");
        foreach (var response in new[] { otherName, stale, afterRevoke, expired, forged })
        {
            response.StatusCode.Should().Be(HttpStatusCode.Forbidden);
            response.Dispose();
        }

        hub.Registry.List().Should().BeEmpty();
        hub.Tokens.List().Should().OnlyContain(t => t.Used == 0);
    }

    [Fact]
    public async Task A_spoke_refuses_a_hub_whose_key_does_not_match_the_tokens_fingerprint_and_an_answer_changed_on_the_way()
    {
        await using var hub = await HubFixture.StartAsync();
        var real = JoinToken.TryParse((await CreateTokenAsync(hub, """{"uses":3}""")).GetProperty("token").GetString(), out _)!;

        // The same id and secret, but the fingerprint of another hub's key: this hub answers, the spoke must refuse it.
        var pinnedElsewhere = new JoinToken(real.PairingUrl, real.Id, real.Secret, JoinToken.FingerprintOf(HubFixture.NewKey()));
        using var client = new HubClient(new Uri("http://unused.invalid/"), new PairingCodec(null)) { JoinToken = pinnedElsewhere };
        var refused = await client.Invoking(c => c.PairAsync(Request("alpha", HubFixture.NewKey()), CancellationToken.None)).Should().ThrowAsync<HubCallException>();
        refused.Which.Message.Should().Contain("does not match the join token's fingerprint");

        // An answer with one bit flipped does not open.
        var body = JoinPairing.SealRequest(real, Request("beta", HubFixture.NewKey()), DateTimeOffset.UtcNow, out var nonce);
        using var answer = await PostTokenAsync(hub, body);
        var bytes = await answer.Content.ReadAsByteArrayAsync();
        JoinPairing.OpenResponse(real, nonce, bytes, out var error).Should().NotBeNull(error);
        var envelope = JsonSerializer.Deserialize<JsonElement>(bytes);
        var box = Base64Url.DecodeFromChars(envelope.GetProperty("box").GetString());
        box[3] ^= 1;
        var tampered = Encoding.UTF8.GetBytes($"{{\"nonce\":\"{envelope.GetProperty("nonce").GetString()}\",\"box\":\"{Base64Url.EncodeToString(box)}\"}}");
        JoinPairing.OpenResponse(real, nonce, tampered, out error).Should().BeNull();
        error.Should().Contain("not authenticated");
    }

    [Theory]
    [InlineData("""{"ttl":"forever"}""", HttpStatusCode.BadRequest)]
    [InlineData("""{"uses":0}""", HttpStatusCode.BadRequest)]
    [InlineData("""{"name":"Not A Label"}""", HttpStatusCode.BadRequest)]
    [InlineData("""not json""", HttpStatusCode.BadRequest)]
    [InlineData("""{"ttl":"15m","uses":2}""", HttpStatusCode.Created)]
    public async Task The_token_api_checks_what_it_is_given(string body, HttpStatusCode expected)
    {
        await using var hub = await HubFixture.StartAsync();
        var request = Authorized(HttpMethod.Post, "/api/tokens/v1");
        request.Content = new StringContent(body, Encoding.UTF8, "application/json");
        using var response = await hub.Admin.SendAsync(request);
        response.StatusCode.Should().Be(expected);
        hub.Tokens.List().Should().HaveCount(expected == HttpStatusCode.Created ? 1 : 0);
    }

    [Fact]
    public async Task The_token_api_needs_credentials_and_a_revoked_id_is_gone_for_good()
    {
        await using var hub = await HubFixture.StartAsync();
        using (var anonymous = await hub.Admin.PostAsync(new Uri("/api/tokens/v1", UriKind.Relative), new StringContent("{}")))
        {
            anonymous.StatusCode.Should().Be(HttpStatusCode.Unauthorized);
        }

        using (var listAnonymous = await hub.Admin.GetAsync(new Uri("/api/tokens/v1", UriKind.Relative)))
        {
            listAnonymous.StatusCode.Should().Be(HttpStatusCode.Unauthorized);
        }

        hub.Tokens.List().Should().BeEmpty();
        var id = (await CreateTokenAsync(hub, "{}")).GetProperty("id").GetString();
        (await hub.Admin.SendAsync(Authorized(HttpMethod.Delete, "/api/tokens/v1/" + id))).StatusCode.Should().Be(HttpStatusCode.NoContent);
        (await hub.Admin.SendAsync(Authorized(HttpMethod.Delete, "/api/tokens/v1/0123456789abcdef"))).StatusCode.Should().Be(HttpStatusCode.NotFound);
        hub.Tokens.List().Single().Revoked.Should().BeTrue();
    }

    [Theory]
    [InlineData("")]
    [InlineData("whj1.nothex.a.b.c")]
    [InlineData("whj1.0123456789abcdef.short.AAAA.aHR0cDovL3g")]
    [InlineData("some-invite-token")]
    public void A_pasted_string_that_is_not_a_token_is_refused_with_a_sentence(string text)
    {
        JoinToken.TryParse(text, out var error).Should().BeNull();
        error.Should().NotBeNullOrEmpty();
    }

    [Fact]
    public void A_token_survives_the_paste_and_never_prints_its_secret()
    {
        var token = JoinToken.Create(new Uri("https://hub.example.com:8443/wormhole/"), HubFixture.NewKey());
        var parsed = JoinToken.TryParse("  " + token.Encode() + "\n", out var error)!;
        parsed.Should().NotBeNull(error);
        parsed.Id.Should().Be(token.Id);
        parsed.Secret.Should().Equal(token.Secret);
        parsed.Fingerprint.Should().Equal(token.Fingerprint);
        parsed.PairingUrl.Should().Be(token.PairingUrl);
        token.Secret.Length.Should().BeGreaterThanOrEqualTo(16, "at least 128 bits");
        token.ToString().Should().NotContain(Base64Url.EncodeToString(token.Secret));
    }

    internal static PairingRequest Request(string name, string key) =>
        new(name, new PairingWireGuard(key), new Dictionary<string, string> { [PairingRequest.WantsPresharedKeyKey] = "1" });

    internal static async Task<JsonElement> CreateTokenAsync(HubFixture hub, string body)
    {
        var request = Authorized(HttpMethod.Post, "/api/tokens/v1");
        request.Content = new StringContent(body, Encoding.UTF8, "application/json");
        using var response = await hub.Admin.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        response.StatusCode.Should().Be(HttpStatusCode.Created, text);
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    internal static async Task<HttpResponseMessage> PostTokenAsync(HubFixture hub, byte[] body)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
        using var content = new ByteArrayContent(body);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        return await http.PostAsync(new Uri(hub.PairingUrl, JoinPairing.Path), content);
    }

    internal static HttpRequestMessage Authorized(HttpMethod method, string path)
    {
        var request = new HttpRequestMessage(method, new Uri(path, UriKind.Relative));
        request.Headers.Authorization = new AuthenticationHeaderValue(
            "Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{HubFixture.AdminCredentials.Username}:{HubFixture.AdminCredentials.Password}")));
        return request;
    }
}
