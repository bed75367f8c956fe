using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Client;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.Pairing;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Proxy;
using Wormhole.Tunnel.Runtime;
using Wormhole.Tunnel.Sources;
using Wormhole.Tunnel.Tests.Hosting;

namespace Wormhole.Tunnel.Tests.Server;

/// <summary>Revocation, the hardened PSK path, rate and connection limits, quotas and key rotation, over HTTP.</summary>
public sealed class RevocationAndLimitsTests
{
    [Fact]
    public async Task A_revoked_peer_cannot_pair_again_with_the_psk_a_token_or_a_replayed_message_until_the_revocation_is_lifted()
    {
        await using var hub = await HubFixture.StartAsync();
        var key = HubFixture.NewKey();
        var captured = hub.Codec.EncodeRequest(new PairingRequest("alpha", new PairingWireGuard(key), []));
        using (var first = await hub.PostPairingBytesAsync(captured))
        {
            first.StatusCode.Should().Be(HttpStatusCode.OK);
        }

        using (var revoke = await hub.Admin.SendAsync(JoinTokenTests.Authorized(HttpMethod.Delete, "/api/peers/v1/alpha?revoke=true")))
        {
            revoke.StatusCode.Should().Be(HttpStatusCode.NoContent);
        }

        var token = JoinToken.TryParse((await JoinTokenTests.CreateTokenAsync(hub, """{"uses":5}""")).GetProperty("token").GetString(), out _)!;
        using var replayed = await hub.PostPairingBytesAsync(captured);
        using var newKey = await hub.PostPairingAsync("alpha", HubFixture.NewKey());
        using var oldKeyOtherName = await hub.PostPairingAsync("alpha2", key);
        using var withToken = await JoinTokenTests.PostTokenAsync(hub, JoinPairing.SealRequest(token, JoinTokenTests.Request("alpha", HubFixture.NewKey()), DateTimeOffset.UtcNow, out _));
        foreach (var refused in new[] { replayed, newKey, oldKeyOtherName, withToken })
        {
            refused.StatusCode.Should().Be(HttpStatusCode.Forbidden);
            (await refused.Content.ReadAsStringAsync()).Should().Contain("revoked");
        }

        hub.Registry.List().Should().BeEmpty();
        var stored = JsonDocument.Parse(File.ReadAllText(Path.Combine(hub.StateDir, "revocations.json"))).RootElement.GetProperty("revocations")[0];
        stored.GetProperty("name").GetString().Should().Be("alpha");
        stored.GetProperty("public_key").GetString().Should().Be(key);
        using (var list = await hub.Admin.SendAsync(JoinTokenTests.Authorized(HttpMethod.Get, "/api/revocations/v1")))
        {
            var entry = JsonDocument.Parse(await list.Content.ReadAsStringAsync()).RootElement.EnumerateArray().Single();
            entry.GetProperty("name").GetString().Should().Be("alpha");
            entry.GetProperty("public_key").GetString().Should().Be(key);
        }

        (await hub.Admin.SendAsync(JoinTokenTests.Authorized(HttpMethod.Delete, "/api/revocations/v1/alpha"))).StatusCode.Should().Be(HttpStatusCode.NoContent);
        (await hub.Admin.SendAsync(JoinTokenTests.Authorized(HttpMethod.Delete, "/api/revocations/v1/alpha"))).StatusCode.Should().Be(HttpStatusCode.NotFound);
        using var again = await hub.PostPairingBytesAsync(captured);
        again.StatusCode.Should().Be(HttpStatusCode.OK);
    }

    [Fact]
    public async Task A_plain_delete_keeps_the_references_meaning_and_the_revocations_survive_a_restart()
    {
        var dir = HubFixture.NewTempDir();
        try
        {
            await using (var hub = await HubFixture.StartAsync(stateDir: dir))
            {
                await hub.PairAsync("alpha");
                await hub.PairAsync("beta");
                (await hub.DeletePeerAsync("alpha")).StatusCode.Should().Be(HttpStatusCode.NoContent);
                (await hub.PairAsync("alpha")).AssignedIp.Should().NotBeNullOrEmpty("a plain delete lets the spoke pair again");
                (await hub.Admin.SendAsync(JoinTokenTests.Authorized(HttpMethod.Delete, "/api/peers/v1/beta?revoke=true"))).StatusCode.Should().Be(HttpStatusCode.NoContent);
                (await hub.Admin.SendAsync(JoinTokenTests.Authorized(HttpMethod.Delete, "/api/peers/v1/alpha?revoke=maybe"))).StatusCode.Should().Be(HttpStatusCode.BadRequest);
                hub.Registry.Find("alpha").Should().NotBeNull("a bad revoke value changes nothing");
            }

            await using var restarted = await HubFixture.StartAsync(stateDir: dir);
            using var refused = await restarted.PostPairingAsync("beta", HubFixture.NewKey());
            refused.StatusCode.Should().Be(HttpStatusCode.Forbidden);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task With_psk_pairing_off_only_tokens_pair_and_during_a_psk_rotation_both_psks_do()
    {
        await using (var tokensOnly = await HubFixture.StartAsync(options: new HubOptions { PskPairing = false }))
        {
            using var psk = await tokensOnly.PostPairingAsync("alpha", HubFixture.NewKey());
            psk.StatusCode.Should().Be(HttpStatusCode.Forbidden);
            (await psk.Content.ReadAsStringAsync()).Should().Contain("join token");
            var token = JoinToken.TryParse((await JoinTokenTests.CreateTokenAsync(tokensOnly, "{}")).GetProperty("token").GetString(), out _)!;
            using var client = new HubClient(new Uri("http://unused.invalid/"), new PairingCodec(null)) { JoinToken = token };
            (await client.PairAsync(JoinTokenTests.Request("alpha", HubFixture.NewKey()), CancellationToken.None)).AssignedIp.Should().Be("127.0.0.2");
        }

        await using var rotating = await HubFixture.StartAsync(options: new HubOptions { PreviousInviteToken = "the-old-invite-token" });
        var old = new PairingCodec("the-old-invite-token");
        using var withOld = await rotating.PostPairingAsync("old-spoke", HubFixture.NewKey(), old);
        withOld.StatusCode.Should().Be(HttpStatusCode.OK);
        old.DecodeResponse(await withOld.Content.ReadAsByteArrayAsync(), out var error).Should().NotBeNull("the answer is sealed with the PSK the spoke used: {0}", error);
        (await rotating.PairAsync("new-spoke")).AssignedIp.Should().NotBeNullOrEmpty();
        using var wrong = await rotating.PostPairingAsync("stranger", HubFixture.NewKey(), new PairingCodec("a-third-invite-token"));
        wrong.StatusCode.Should().Be(HttpStatusCode.BadRequest);
    }

    [Fact]
    public async Task A_reference_spoke_pairing_with_the_psk_gets_the_references_answer_and_no_preshared_key()
    {
        await using var hub = await HubFixture.StartAsync();
        using var response = await hub.PostPairingAsync("reference-spoke", HubFixture.NewKey());
        var plain = new PskCipher(HubFixture.InviteToken).Open(await response.Content.ReadAsByteArrayAsync());
        using var json = JsonDocument.Parse(plain);
        json.RootElement.GetProperty("metadata").EnumerateObject().Select(p => p.Name).Should().Equal("sync_server_address");
        hub.WireGuard.Peers.Should().ContainSingle().Which.PresharedKey.Should().BeNull("a reference spoke could not configure one");
    }

    [Fact]
    public async Task Pairing_beyond_the_rate_limit_gets_429_with_retry_after_and_one_log_line_per_interval()
    {
        var clock = new SteppedClock(DateTimeOffset.UtcNow);
        await using var hub = await HubFixture.StartAsync(logClock: clock, options: new HubOptions { RateLimit = (1, 3) });
        var statuses = new List<HttpStatusCode>();
        string? retryAfter = null;
        for (var i = 0; i < 40; i++)
        {
            using var response = await hub.PostPairingBytesAsync([1, 2, 3]);
            statuses.Add(response.StatusCode);
            if (response.StatusCode == HttpStatusCode.TooManyRequests)
            {
                retryAfter ??= response.Headers.RetryAfter?.ToString();
            }
        }

        statuses.Take(3).Should().OnlyContain(s => s == HttpStatusCode.BadRequest, "the burst reaches the handler");
        statuses.Count(s => s == HttpStatusCode.TooManyRequests).Should().BeGreaterThanOrEqualTo(35);
        int.Parse(retryAfter!, System.Globalization.CultureInfo.InvariantCulture).Should().BeGreaterThanOrEqualTo(1);
        hub.Logs.WithEvent(2106).Should().ContainSingle("refusals are logged once per interval");
        clock.Advance(LogRateLimiter.DefaultInterval);
        await Eventually.TrueAsync(() => hub.Logs.WithEvent(2107).Count == 1, "the interval's summary is logged");
        hub.Logs.WithEvent(2107).Single().Message.Should().MatchRegex(@"…and \d+ more");
    }

    [Fact]
    public async Task The_pairing_listener_closes_connections_from_the_tunnel_and_beyond_its_per_source_cap()
    {
        var logs = new RecordingLog();
        var guard = new ConnectionGuard("pairing API", 100, 2, () => null, logs.For("guard"));
        await using var hub = await HubFixture.StartAsync(options: new HubOptions { Guard = guard });
        var port = hub.PairingUrl.Port;
        using var a = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        using var b = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await a.ConnectAsync(IPAddress.Loopback, port);
        await b.ConnectAsync(IPAddress.Loopback, port);
        await Eventually.TrueAsync(() => guard.Open == 2, "two connections are open");
        (await ClosedWithoutAnswerAsync(port, IPAddress.Loopback)).Should().BeTrue("a third from the same source is closed at once");
        (await ClosedWithoutAnswerAsync(port, IPAddress.Parse("127.0.0.9"))).Should().BeFalse("another source still gets in");

        var fromTunnel = new ConnectionGuard("admin API", 100, 100, () => new IPNetwork(IPAddress.Parse("127.0.0.0"), 24), logs.For("guard"));
        await using var tunnelHub = await HubFixture.StartAsync(options: new HubOptions { Guard = fromTunnel });
        (await ClosedWithoutAnswerAsync(tunnelHub.PairingUrl.Port, IPAddress.Parse("127.0.0.5"))).Should().BeTrue("a tunnel peer's address gets nothing");
        logs.Lines.Should().Contain(l => l.Message.Contains("from the tunnel", StringComparison.Ordinal));
    }

    [Fact]
    public void A_remote_listener_refuses_the_tunnels_peers_at_every_address_of_this_side()
    {
        var spec = new ListenerSpec(ListenerKind.Remote, "web", IPAddress.Any, 25001, "10.188.0.2", 20000, IPAddress.Parse("10.188.0.1"), new IPNetwork(IPAddress.Parse("10.188.0.0"), 24));
        spec.Refuses(IPAddress.Parse("192.168.1.5"), IPAddress.Parse("10.188.0.7")).Should().BeTrue("a spoke sending to the hub's LAN address through the tunnel");
        spec.Refuses(IPAddress.Parse("::ffff:192.168.1.5"), IPAddress.Parse("::ffff:10.188.0.7")).Should().BeTrue();
        spec.Refuses(IPAddress.Parse("10.188.0.1"), IPAddress.Parse("192.168.1.9")).Should().BeTrue("the tunnel address itself");
        spec.Refuses(IPAddress.Parse("192.168.1.5"), IPAddress.Parse("192.168.1.9")).Should().BeFalse("a consumer on the LAN");
    }

    [Fact]
    public void A_peers_huge_sync_is_kept_only_up_to_its_quota_and_the_rest_is_counted()
    {
        var store = new RemoteAppStore(new ReconcileSignal(), TimeProvider.System, maxAppsPerPeer: 1000);
        var apps = Enumerable.Range(0, 100_000).Select(i => new AppDescriptor($"app-{i:D6}", $"10.188.0.2:{20000 + (i % 5000)}", "hog", 80, "")).ToList();
        store.Update("hog", IPAddress.Parse("10.188.0.2"), apps);
        var kept = store.Snapshot().Single();
        kept.Apps.Should().HaveCount(1000);
        kept.Dropped.Should().Be(99_000);
        kept.Apps[0].Name.Should().Be("app-000000");
    }

    [Fact]
    public async Task A_spoke_rotates_its_key_through_the_tunnel_and_keeps_its_address_and_apps()
    {
        await using var hub = await HubFixture.StartAsync();
        var oldKey = HubFixture.NewKey();
        using (var paired = await hub.PostPairingAsync("alpha", oldKey, hub.Codec))
        {
            paired.StatusCode.Should().Be(HttpStatusCode.OK);
        }

        (await hub.PostSyncAsync("127.0.0.2", """{"Peer":"alpha","Apps":[{"name":"web","address":"127.0.0.2:20000","originalPort":80}]}""")).StatusCode.Should().Be(HttpStatusCode.OK);
        var newKey = HubFixture.NewKey();
        var psk = Wormhole.Tunnel.Server.PeerRegistry.NewPresharedKey();

        using var stranger = await PostRotateAsync(hub, "127.0.0.77", newKey, psk);
        stranger.StatusCode.Should().Be(HttpStatusCode.Forbidden);
        using var bad = await PostRotateAsync(hub, "127.0.0.2", "not-a-key", psk);
        bad.StatusCode.Should().Be(HttpStatusCode.Conflict);
        hub.Registry.Find("alpha")!.PublicKey.Should().Be(oldKey);

        using var rotated = await PostRotateAsync(hub, "127.0.0.2", newKey, psk);
        rotated.StatusCode.Should().Be(HttpStatusCode.OK);
        await Eventually.TrueAsync(() => hub.WireGuard.Peers.SingleOrDefault()?.PublicKey == newKey, "WireGuard has the new key");
        var peer = hub.WireGuard.Peers.Single();
        peer.PresharedKey.Should().Be(psk);
        peer.AllowedIps.Should().Equal("127.0.0.2/32");
        hub.Registry.Find("alpha")!.Ip.Should().Be("127.0.0.2");
        hub.AppsOf("alpha")!.Apps.Should().ContainSingle(a => a.Name == "web");
        var storedPeer = JsonDocument.Parse(File.ReadAllText(hub.PeersFile.Path)).RootElement.GetProperty("peers")[0];
        storedPeer.GetProperty("public_key").GetString().Should().Be(newKey);
        using var oldAgain = await hub.PostPairingAsync("alpha", oldKey);
        oldAgain.StatusCode.Should().Be(HttpStatusCode.Conflict, "the old key is no longer the peer's");
    }

    private static async Task<HttpResponseMessage> PostRotateAsync(HubFixture hub, string from, string key, string psk)
    {
        using var http = HubFixture.ClientFrom(from);
        var body = JsonSerializer.Serialize(new KeyRotation(key, psk), KeyRotationJsonContext.Default.KeyRotation);
        return await http.PostAsync(new Uri(hub.SyncUrl, KeyRotation.Path), new StringContent(body, Encoding.UTF8, "application/json"));
    }

    /// <summary>True when the server closes a new connection from <paramref name="source"/> without answering a request.</summary>
    private static async Task<bool> ClosedWithoutAnswerAsync(int port, IPAddress source)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(source, 0));
        await socket.ConnectAsync(IPAddress.Loopback, port);
        try
        {
            await socket.SendAsync("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"u8.ToArray());
            var buffer = new byte[256];
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            return await socket.ReceiveAsync(buffer, SocketFlags.None, timeout.Token) == 0;
        }
        catch (SocketException)
        {
            return true;
        }
    }
}
