using System.Diagnostics;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using Wormhole.Tunnel.Api;
using Wormhole.Tunnel.Pairing;
using Wormhole.Tunnel.Runtime;
using Wormhole.Tunnel.Server;
using Wormhole.Tunnel.Sinks;
using Wormhole.Tunnel.Sources;
using Wormhole.Tunnel.State;
using Wormhole.Tunnel.WireGuard;

namespace Wormhole.Tunnel.Tests.Server;

/// <summary>POST /pairing over real HTTP, encrypted as a spoke encrypts it (reference §2).</summary>
public sealed class PairingEndpointTests
{
    private static readonly TimeSpan Prompt = TimeSpan.FromSeconds(5);

    [Fact]
    public async Task First_pairing_gets_the_first_pool_address_and_the_hub_details()
    {
        await using var hub = await HubFixture.StartAsync();
        var key = HubFixture.NewKey();

        using var response = await hub.PostPairingAsync("alpha", key);
        var peersFileWhenAnswered = File.ReadAllText(hub.PeersFile.Path);

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        var plain = new PskCipher(HubFixture.InviteToken).Open(await response.Content.ReadAsByteArrayAsync());
        plain.Should().NotBeNull("the response is sealed with the invite token");
        using var json = JsonDocument.Parse(plain);
        var root = json.RootElement;
        root.GetProperty("name").GetString().Should().Be(HubFixture.HubName);
        root.GetProperty("assigned_ip").GetString().Should().Be("127.0.0.2");
        root.GetProperty("internal_server_ip").GetString().Should().Be("127.0.0.1");
        root.GetProperty("wireguard").GetProperty("public_key").GetString().Should().Be(hub.HubPublicKey);
        root.GetProperty("wireguard").GetProperty("endpoint").GetString().Should().Be(HubFixture.HubEndpoint);
        root.GetProperty("metadata").GetProperty("sync_server_address").GetString().Should().Be(hub.SyncServerAddress);

        StoredPeersIn(peersFileWhenAnswered).Should().ContainSingle()
            .Which.Should().BeEquivalentTo(new { Name = "alpha", Ip = "127.0.0.2", PublicKey = key });
        hub.WireGuard.Peers.Should().ContainSingle()
            .Which.Should().BeEquivalentTo(new WgPeer(key, ["127.0.0.2/32"]));
        hub.WireGuard.PeersFileAtLastCall.Should().NotBeNull("the peer is stored before WireGuard hears of it");
        StoredPeersIn(hub.WireGuard.PeersFileAtLastCall!).Should().ContainSingle(p => p.Name == "alpha" && p.PublicKey == key);
        hub.Registry.List().Should().ContainSingle(p => p.Name == "alpha" && p.Ip == "127.0.0.2");
    }

    [Fact]
    public async Task Pairing_again_with_the_same_name_and_key_returns_the_same_address()
    {
        await using var hub = await HubFixture.StartAsync();
        var key = HubFixture.NewKey();

        var first = await hub.PairAsync("alpha", key);
        var second = await hub.PairAsync("alpha", key);

        second.AssignedIp.Should().Be(first.AssignedIp).And.Be("127.0.0.2");
        hub.Registry.List().Should().ContainSingle();
        StoredPeersIn(File.ReadAllText(hub.PeersFile.Path)).Should().ContainSingle();
        hub.WireGuard.Peers.Should().ContainSingle().Which.PublicKey.Should().Be(key);
    }

    [Fact]
    public async Task Pairing_with_known_name_and_other_key_is_rejected_at_once_and_changes_nothing()
    {
        await using var hub = await HubFixture.StartAsync();
        var key = HubFixture.NewKey();
        await hub.PairAsync("alpha", key);
        var fileBefore = File.ReadAllBytes(hub.PeersFile.Path);

        var watch = Stopwatch.StartNew();
        using var response = await hub.PostPairingAsync("alpha", HubFixture.NewKey()).WaitAsync(Prompt);
        watch.Elapsed.Should().BeLessThan(Prompt);

        response.StatusCode.Should().Be(HttpStatusCode.Conflict);
        var body = await response.Content.ReadAsStringAsync();
        body.Should().Contain("alpha").And.Contain("another public key");
        File.ReadAllBytes(hub.PeersFile.Path).Should().Equal(fileBefore);
        hub.Registry.List().Should().ContainSingle().Which.PublicKey.Should().Be(key);
        hub.WireGuard.Peers.Should().ContainSingle().Which.PublicKey.Should().Be(key);
    }

    [Fact]
    public async Task Pairing_a_new_name_with_a_key_already_paired_under_another_name_is_rejected()
    {
        await using var hub = await HubFixture.StartAsync();
        var key = HubFixture.NewKey();
        await hub.PairAsync("alpha", key);

        using var response = await hub.PostPairingAsync("beta", key).WaitAsync(Prompt);

        response.StatusCode.Should().Be(HttpStatusCode.Conflict);
        (await response.Content.ReadAsStringAsync()).Should().Contain("alpha");
        hub.Registry.List().Select(p => p.Name).Should().Equal("alpha");
    }

    [Fact]
    public async Task Pairing_with_a_wrong_invite_token_is_refused_and_stores_nothing()
    {
        await using var hub = await HubFixture.StartAsync();

        using var response = await hub.PostPairingAsync("alpha", HubFixture.NewKey(), new PairingCodec("another-token-entirely")).WaitAsync(Prompt);

        ((int)response.StatusCode).Should().BeInRange(400, 499);
        (await response.Content.ReadAsStringAsync()).Should().Contain("decrypt");
        hub.Registry.List().Should().BeEmpty();
        File.Exists(hub.PeersFile.Path).Should().BeFalse();
        hub.WireGuard.Peers.Should().BeEmpty();
    }

    [Fact]
    public async Task Pairing_in_plain_json_is_refused_when_the_hub_has_an_invite_token()
    {
        await using var hub = await HubFixture.StartAsync();

        using var response = await hub.PostPairingAsync("alpha", HubFixture.NewKey(), new PairingCodec(null)).WaitAsync(Prompt);

        ((int)response.StatusCode).Should().BeInRange(400, 499);
        hub.Registry.List().Should().BeEmpty();
    }

    [Fact]
    public async Task A_garbage_body_is_refused_and_the_hub_still_pairs_afterwards()
    {
        await using var hub = await HubFixture.StartAsync();

        using (var response = await hub.PostPairingBytesAsync(RandomNumberGenerator.GetBytes(5 * 1024)).WaitAsync(Prompt))
        {
            ((int)response.StatusCode).Should().BeInRange(400, 499);
        }

        using (var empty = await hub.PostPairingBytesAsync([]).WaitAsync(Prompt))
        {
            ((int)empty.StatusCode).Should().BeInRange(400, 499);
        }

        hub.Registry.List().Should().BeEmpty();
        (await hub.PairAsync("alpha")).AssignedIp.Should().Be("127.0.0.2");
    }

    [Fact]
    public async Task A_pairing_body_over_the_limit_is_refused_and_the_hub_still_pairs_afterwards()
    {
        await using var hub = await HubFixture.StartAsync();

        using (var response = await hub.PostPairingBytesAsync(RandomNumberGenerator.GetBytes(100 * 1024)).WaitAsync(Prompt))
        {
            response.StatusCode.Should().Be(HttpStatusCode.RequestEntityTooLarge);
        }

        (await hub.PairAsync("alpha")).AssignedIp.Should().Be("127.0.0.2");
    }

    [Theory]
    [InlineData("Bad_Name")]
    [InlineData("UPPER")]
    [InlineData("-leading-dash")]
    [InlineData("has.dot")]
    public async Task Pairing_with_a_name_that_is_not_a_dns_label_is_a_bad_request(string name)
    {
        await using var hub = await HubFixture.StartAsync();

        using var response = await hub.PostPairingAsync(name, HubFixture.NewKey()).WaitAsync(Prompt);

        response.StatusCode.Should().Be(HttpStatusCode.BadRequest);
        (await response.Content.ReadAsStringAsync()).Should().Contain("DNS label");
        hub.Registry.List().Should().BeEmpty();
    }

    [Fact]
    public async Task A_name_with_a_final_newline_is_refused_next_to_the_plain_name_and_stores_nothing()
    {
        await using var hub = await HubFixture.StartAsync();
        await hub.PairAsync("spoke1");
        var fileBefore = File.ReadAllBytes(hub.PeersFile.Path);

        using var response = await hub.PostPairingAsync("spoke1\n", HubFixture.NewKey()).WaitAsync(Prompt);

        response.StatusCode.Should().Be(HttpStatusCode.BadRequest);
        (await response.Content.ReadAsStringAsync()).Should().Contain("DNS label");
        hub.Registry.List().Select(p => p.Name).Should().Equal("spoke1");
        File.ReadAllBytes(hub.PeersFile.Path).Should().Equal(fileBefore);
        hub.WireGuard.Peers.Should().ContainSingle();
    }

    [Fact]
    public async Task Pairing_with_a_public_key_that_is_not_a_wireguard_key_is_a_bad_request()
    {
        await using var hub = await HubFixture.StartAsync();

        using var response = await hub.PostPairingAsync("alpha", "not-a-key").WaitAsync(Prompt);

        response.StatusCode.Should().Be(HttpStatusCode.BadRequest);
        (await response.Content.ReadAsStringAsync()).Should().Contain("public key");
        hub.Registry.List().Should().BeEmpty();
    }

    [Fact]
    public async Task A_key_spelled_non_canonically_is_a_bad_request_stores_nothing_and_never_reaches_wireguard()
    {
        await using var hub = await HubFixture.StartAsync();
        var callsBefore = hub.WireGuard.Calls;

        using var response = await hub.PostPairingAsync("evil", WireGuard.WgKeysTests.NonCanonical(HubFixture.NewKey())).WaitAsync(Prompt);

        response.StatusCode.Should().Be(HttpStatusCode.BadRequest);
        (await response.Content.ReadAsStringAsync()).Should().Contain("canonical base64");
        hub.Registry.List().Should().BeEmpty();
        File.Exists(hub.PeersFile.Path).Should().BeFalse();
        hub.WireGuard.Calls.Should().Be(callsBefore, "WireGuard is not asked about a key the registry refuses");
        (await hub.PairAsync("honest")).AssignedIp.Should().Be("127.0.0.2", "the hub keeps pairing");
    }

    [Theory]
    [InlineData("hub", "the hub's own")]
    [InlineData("zero", "all zeros")]
    public async Task The_hubs_own_key_or_the_zero_key_is_a_bad_request(string which, string reason)
    {
        await using var hub = await HubFixture.StartAsync();
        var key = which == "hub" ? hub.HubPublicKey : WgKeys.ZeroKey;

        using var response = await hub.PostPairingAsync("alpha", key).WaitAsync(Prompt);

        response.StatusCode.Should().Be(HttpStatusCode.BadRequest);
        (await response.Content.ReadAsStringAsync()).Should().Contain(reason);
        hub.Registry.List().Should().BeEmpty();
        File.Exists(hub.PeersFile.Path).Should().BeFalse();
    }

    [Fact]
    public async Task When_wireguard_refuses_a_new_peer_the_answer_is_503_and_the_stored_peers_are_as_before()
    {
        await using var hub = await HubFixture.StartAsync();
        var alpha = HubFixture.NewKey();
        await hub.PairAsync("alpha", alpha);
        var fileBefore = File.ReadAllBytes(hub.PeersFile.Path);
        var apiBefore = await hub.Admin.GetStringAsync(new Uri("/api/peers", UriKind.Relative));
        hub.WireGuard.Refuse = "Invalid argument";

        using var response = await hub.PostPairingAsync("beta", HubFixture.NewKey()).WaitAsync(Prompt);

        response.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable);
        (await response.Content.ReadAsStringAsync()).Should().Contain("beta").And.Contain("WireGuard").And.Contain("Invalid argument");
        File.ReadAllBytes(hub.PeersFile.Path).Should().Equal(fileBefore, "the peers file is put back as it was");
        (await hub.Admin.GetStringAsync(new Uri("/api/peers", UriKind.Relative))).Should().Be(apiBefore);
        hub.Registry.List().Select(p => p.Name).Should().Equal("alpha");

        hub.WireGuard.Refuse = null;
        (await hub.PairAsync("beta")).AssignedIp.Should().Be("127.0.0.3", "the refused attempt took no address");
        hub.WireGuard.Peers.Select(p => p.PublicKey).Should().Contain(alpha);
    }

    [Fact]
    public async Task When_wireguard_refuses_the_first_peer_no_peers_file_is_left_behind()
    {
        await using var hub = await HubFixture.StartAsync();
        hub.WireGuard.Refuse = "Invalid argument";

        using var response = await hub.PostPairingAsync("alpha", HubFixture.NewKey()).WaitAsync(Prompt);

        response.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable);
        File.Exists(hub.PeersFile.Path).Should().BeFalse();
        hub.Registry.List().Should().BeEmpty();
    }

    [Fact]
    public async Task When_wireguard_refuses_a_deletion_the_answer_is_503_and_the_peer_stays()
    {
        await using var hub = await HubFixture.StartAsync();
        await hub.PairAsync("alpha");
        var fileBefore = File.ReadAllBytes(hub.PeersFile.Path);
        hub.WireGuard.Refuse = "Operation not permitted";

        using var response = await hub.DeletePeerAsync("alpha");

        response.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable);
        (await response.Content.ReadAsStringAsync()).Should().Contain("alpha").And.Contain("Operation not permitted");
        File.ReadAllBytes(hub.PeersFile.Path).Should().Equal(fileBefore);
        hub.Registry.List().Select(p => p.Name).Should().Equal("alpha");

        hub.WireGuard.Refuse = null;
        using var retry = await hub.DeletePeerAsync("alpha");
        retry.StatusCode.Should().Be(HttpStatusCode.NoContent);
        hub.Registry.List().Should().BeEmpty();
    }

    [Theory]
    [InlineData("CONNECT")]
    [InlineData("GET")]
    [InlineData("PUT")]
    [InlineData("TRACE")]
    [InlineData("FOO")]
    public async Task Another_method_than_post_is_a_405_even_with_a_valid_pairing_body(string method)
    {
        await using var hub = await HubFixture.StartAsync();
        var body = hub.Codec.EncodeRequest(new PairingRequest("alpha", new PairingWireGuard(HubFixture.NewKey()), []));

        var status = await RawHttp.StatusAsync(hub.PairingUrl, $"{method} /pairing HTTP/1.1\r\nHost: hub\r\nContent-Length: {body.Length}\r\n\r\n", body);

        status.Should().Be(405);
        hub.Registry.List().Should().BeEmpty();
        (await hub.PairAsync("alpha")).AssignedIp.Should().Be("127.0.0.2");
    }

    [Fact]
    public async Task When_the_pool_is_exhausted_another_peer_gets_503_with_a_clear_message()
    {
        await using var hub = await HubFixture.StartAsync(prefixLength: 30);
        (await hub.PairAsync("alpha")).AssignedIp.Should().Be("127.0.0.2");

        using var response = await hub.PostPairingAsync("beta", HubFixture.NewKey()).WaitAsync(Prompt);

        response.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable);
        (await response.Content.ReadAsStringAsync()).Should().Contain("exhausted").And.Contain("127.0.0.1/30");
        hub.Registry.List().Select(p => p.Name).Should().Equal("alpha");
    }

    [Fact]
    public async Task The_address_of_a_deleted_peer_is_given_to_the_next_new_peer()
    {
        await using var hub = await HubFixture.StartAsync();
        var a = await hub.PairAsync("a");
        var b = await hub.PairAsync("b");
        a.AssignedIp.Should().Be("127.0.0.2");
        b.AssignedIp.Should().Be("127.0.0.3");

        (await hub.Registry.DeleteAsync("a", CancellationToken.None)).Should().Be(PeerDeletion.Deleted);
        var c = await hub.PairAsync("c");

        c.AssignedIp.Should().Be("127.0.0.2");
        hub.WireGuard.Peers.SelectMany(p => p.AllowedIps).Should().BeEquivalentTo("127.0.0.2/32", "127.0.0.3/32");
        StoredPeersIn(File.ReadAllText(hub.PeersFile.Path)).Select(p => p.Name).Should().BeEquivalentTo("b", "c");
    }

    [Fact]
    public async Task Concurrent_pairings_of_different_peers_never_share_an_address()
    {
        await using var hub = await HubFixture.StartAsync();

        var responses = await Task.WhenAll(Enumerable.Range(0, 12).Select(i => hub.PairAsync($"peer-{i}")));

        responses.Select(r => r.AssignedIp).Should().OnlyHaveUniqueItems().And.HaveCount(12);
        StoredPeersIn(File.ReadAllText(hub.PeersFile.Path)).Should().HaveCount(12);
        hub.WireGuard.Peers.Should().HaveCount(12);
    }

    [Fact]
    public async Task Peers_survive_a_hub_restart_and_keep_their_address()
    {
        var dir = HubFixture.NewTempDir();
        try
        {
            var key = HubFixture.NewKey();
            await using (var hub = await HubFixture.StartAsync(stateDir: dir))
            {
                await hub.PairAsync("alpha", key);
                await hub.PairAsync("beta");
            }

            await using var restarted = await HubFixture.StartAsync(stateDir: dir);

            restarted.Registry.List().Select(p => p.Name).Should().BeEquivalentTo("alpha", "beta");
            restarted.WireGuard.Peers.Should().HaveCount(2, "the stored peers are given to WireGuard at start");
            (await restarted.PairAsync("alpha", key)).AssignedIp.Should().Be("127.0.0.2");
            (await restarted.PairAsync("gamma")).AssignedIp.Should().Be("127.0.0.4");
            using var other = await restarted.PostPairingAsync("alpha", HubFixture.NewKey());
            other.StatusCode.Should().Be(HttpStatusCode.Conflict);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task A_corrupt_peers_file_stops_the_registry_from_loading_and_is_left_untouched()
    {
        var dir = HubFixture.NewTempDir();
        try
        {
            var file = new StateDirectory(dir).Peers;
            var corrupt = Encoding.UTF8.GetBytes("{\"peers\": [ {\"name\": \"alpha\", \"ip\": ");
            await File.WriteAllBytesAsync(file.Path, corrupt);
            var registry = NewRegistry(file);

            var load = registry.Invoking(r => r.Load());

            load.Should().Throw<StateCorruptException>()
                .Where(e => e.Path == file.Path && e.Message.Contains(file.Path));
            File.ReadAllBytes(file.Path).Should().Equal(corrupt);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static PeerRegistry NewRegistry(JsonStateFile<StoredPeers> file)
    {
        var signal = new ReconcileSignal();
        var remote = new RemoteAppStore(signal, TimeProvider.System);
        var tunnel = new TunnelSource(signal);
        var reconciler = new Reconciler(
            new ReconcilerOptions(HubFixture.HubName, TimeSpan.FromHours(1)), new MutableLocalApps(signal), remote, tunnel,
            [new ProxySink(new RecordingProxyTable()), new WireGuardSink(new RecordingWireGuard(file.Path), TimeProvider.System)], signal, TimeProvider.System, NullLogger<Reconciler>.Instance);
        return new PeerRegistry(file, new AddressPool(HubFixture.HubAddress, 24), HubFixture.NewKey(), tunnel, remote, NullLogger<PeerRegistry>.Instance, reconciler);
    }

    private static List<StoredPeer> StoredPeersIn(string peersJson) =>
        JsonSerializer.Deserialize(peersJson, StateJsonContext.Default.StoredPeers)!.Peers;
}
