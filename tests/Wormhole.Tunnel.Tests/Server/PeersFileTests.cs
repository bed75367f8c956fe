using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging.Abstractions;
using Wormhole.Tunnel.Pairing;
using Wormhole.Tunnel.Runtime;
using Wormhole.Tunnel.Server;
using Wormhole.Tunnel.Sinks;
using Wormhole.Tunnel.Sources;
using Wormhole.Tunnel.State;
using Wormhole.Tunnel.Tests.WireGuard;
using Wormhole.Tunnel.WireGuard;

namespace Wormhole.Tunnel.Tests.Server;

/// <summary>A hub started over a peers.json with entries it cannot use: it starts, serves the others, shows the bad ones.</summary>
public sealed class PeersFileTests : IDisposable
{
    private const int SkippedEntryEvent = 2005;
    private readonly string _dir = HubFixture.NewTempDir();
    private readonly string _good = HubFixture.NewKey();

    private string PeersPath => new StateDirectory(_dir).Peers.Path;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task A_hub_over_one_bad_and_one_good_entry_starts_serves_the_good_one_and_shows_the_bad_one()
    {
        var bad = BadKeyEntry("evil", "127.0.0.2");
        WritePeers(bad, Entry("good", "127.0.0.3", _good));

        await using var hub = await HubFixture.StartAsync(stateDir: _dir);

        hub.Registry.List().Select(p => p.Name).Should().Equal("good");
        hub.WireGuard.Peers.Should().ContainSingle().Which.PublicKey.Should().Be(_good, "only the usable peer reaches WireGuard");
        var v1 = JsonNode.Parse(await hub.Admin.GetStringAsync(new Uri("/api/peers/v1", UriKind.Relative)))!.AsArray();
        v1.Should().ContainSingle().Which!["name"]!.GetValue<string>().Should().Be("good");
        var invalid = JsonNode.Parse(await hub.Admin.GetStringAsync(new Uri("/api/peers/v1/invalid", UriKind.Relative)))!.AsArray();
        var shown = invalid.Should().ContainSingle().Subject!;
        shown["name"]!.GetValue<string>().Should().Be("evil");
        shown["ip"]!.GetValue<string>().Should().Be("127.0.0.2");
        shown["public_key"]!.GetValue<string>().Should().Be(bad["public_key"]!.GetValue<string>());
        shown["reason"]!.GetValue<string>().Should().Contain("canonical base64");
        var log = hub.Logs.WithEvent(SkippedEntryEvent).Should().ContainSingle().Subject;
        log.Level.Should().Be(Microsoft.Extensions.Logging.LogLevel.Error);
        log.Message.Should().Contain("evil").And.Contain("#1").And.Contain(PeersPath).And.Contain("canonical base64");

        using (var sync = await hub.PostSyncAsync("127.0.0.3", "{\"Peer\":\"good\",\"Apps\":[]}"))
        {
            sync.StatusCode.Should().Be(HttpStatusCode.OK, "the good peer syncs as usual");
        }
    }

    public static TheoryData<string, string> BadEntries => new()
    {
        { "[1]", "not an object" },
        { "[null]", "not an object" },
        { "[{\"name\": \"x\", \"ip\": 5, \"public_key\": \"k\"}]", "not a peer" },
        { "[{\"name\": \"spoke1\\n\", \"ip\": \"127.0.0.2\", \"public_key\": \"" + HubFixture.NewKey() + "\"}]", "not a DNS label" },
        { "[{\"ip\": \"127.0.0.2\", \"public_key\": \"" + HubFixture.NewKey() + "\"}]", "not a DNS label" },
        { "[{\"name\": \"far\", \"ip\": \"10.9.9.9\", \"public_key\": \"" + HubFixture.NewKey() + "\"}]", "not an address of the pool" },
        { "[{\"name\": \"hubby\", \"ip\": \"127.0.0.1\", \"public_key\": \"" + HubFixture.NewKey() + "\"}]", "not an address of the pool" },
        { "[{\"name\": \"zero\", \"ip\": \"127.0.0.2\", \"public_key\": \"" + WgKeys.ZeroKey + "\"}]", "all zeros" },
        { "[{\"name\": \"good\", \"ip\": \"127.0.0.2\", \"public_key\": \"" + HubFixture.NewKey() + "\"}]", "same name" },
        { "[{\"name\": \"other\", \"ip\": \"127.0.0.3\", \"public_key\": \"" + HubFixture.NewKey() + "\"}]", "same address" },
    };

    [Theory]
    [MemberData(nameof(BadEntries))]
    public async Task Each_kind_of_bad_entry_is_skipped_with_a_reason_and_the_good_peer_is_served(string badEntries, string reason)
    {
        File.WriteAllText(PeersPath, "{\"peers\": [" + Entry("good", "127.0.0.3", _good).ToJsonString() + ", " + badEntries.Trim('[', ']') + "]}");

        await using var hub = await HubFixture.StartAsync(stateDir: _dir);

        hub.Registry.List().Select(p => p.Name).Should().Equal("good");
        hub.Registry.ListInvalid().Should().ContainSingle().Which.Reason.Should().Contain(reason);
        hub.Logs.WithEvent(SkippedEntryEvent).Should().ContainSingle().Which.Message.Should().NotContain("\n", "a name from the file is escaped in the log");
    }

    [Fact]
    public void The_hubs_own_key_in_the_file_is_skipped()
    {
        WritePeers(Entry("mirror", "127.0.0.3", _good));
        var signal = new ReconcileSignal();
        var remote = new RemoteAppStore(signal, TimeProvider.System);
        var tunnel = new TunnelSource(signal);
        var reconciler = new Reconciler(
            new ReconcilerOptions(HubFixture.HubName, TimeSpan.FromHours(1)), new MutableLocalApps(signal), remote, tunnel,
            [new ProxySink(new RecordingProxyTable())], signal, TimeProvider.System, NullLogger<Reconciler>.Instance);
        var registry = new PeerRegistry(
            new StateDirectory(_dir).Peers, new AddressPool(HubFixture.HubAddress, 24), hubPublicKey: _good,
            tunnel, remote, NullLogger<PeerRegistry>.Instance, reconciler);

        registry.Load();

        registry.List().Should().BeEmpty();
        registry.ListInvalid().Should().ContainSingle().Which.Reason.Should().Contain("the hub's own");
    }

    [Fact]
    public async Task A_skipped_entry_is_written_back_byte_for_byte_on_later_changes_and_found_again_after_a_restart()
    {
        var badText = "{ \"name\": \"evil\",   \"ip\": \"127.0.0.2\", \"public_key\": \"" + NonCanonicalKey() + "\", \"extra\": [1, 2] }";
        File.WriteAllText(PeersPath, "{\"peers\": [" + badText + ", " + Entry("good", "127.0.0.3", _good).ToJsonString() + "]}");

        await using (var hub = await HubFixture.StartAsync(stateDir: _dir))
        {
            var paired = await hub.PairAsync("newcomer");
            paired.AssignedIp.Should().Be("127.0.0.4", "the skipped entry's address stays taken");
            using (var sync = await hub.PostSyncAsync("127.0.0.3", "{\"Peer\":\"good\",\"Metadata\":{\"team\":\"a\"},\"Apps\":[]}"))
            {
                sync.StatusCode.Should().Be(HttpStatusCode.OK);
            }

            File.ReadAllText(PeersPath).Should().Contain(badText, "the entry the hub could not read is kept as it was");
        }

        await using var restarted = await HubFixture.StartAsync(stateDir: _dir);
        restarted.Registry.List().Select(p => p.Name).Should().BeEquivalentTo("good", "newcomer");
        restarted.Registry.ListInvalid().Should().ContainSingle().Which.Name.Should().Be("evil");
    }

    [Fact]
    public async Task Pairing_the_name_of_a_skipped_entry_is_a_conflict_that_names_the_way_out()
    {
        WritePeers(BadKeyEntry("evil", "127.0.0.2"));
        await using var hub = await HubFixture.StartAsync(stateDir: _dir);
        var fileBefore = File.ReadAllBytes(PeersPath);

        using var response = await hub.PostPairingAsync("evil", HubFixture.NewKey());

        response.StatusCode.Should().Be(HttpStatusCode.Conflict);
        (await response.Content.ReadAsStringAsync()).Should().Contain("DELETE /api/peers/v1/evil");
        File.ReadAllBytes(PeersPath).Should().Equal(fileBefore);
    }

    [Fact]
    public async Task Delete_clears_a_skipped_entry_from_the_file_and_the_list_and_leaves_the_rest()
    {
        WritePeers(BadKeyEntry("evil", "127.0.0.2"), Entry("good", "127.0.0.3", _good));
        await using var hub = await HubFixture.StartAsync(stateDir: _dir);

        using var response = await hub.DeletePeerAsync("evil");

        response.StatusCode.Should().Be(HttpStatusCode.NoContent);
        hub.Registry.ListInvalid().Should().BeEmpty();
        (await hub.Admin.GetStringAsync(new Uri("/api/peers/v1/invalid", UriKind.Relative))).Should().Be("[]");
        var stored = JsonSerializer.Deserialize(File.ReadAllText(PeersPath), StateJsonContext.Default.StoredPeers)!.Peers;
        stored.Select(p => p.Name).Should().Equal("good");
        hub.Registry.List().Select(p => p.Name).Should().Equal("good");
        (await hub.PairAsync("evil")).AssignedIp.Should().Be("127.0.0.2", "the name and its address are free again");
    }

    [Fact]
    public async Task Delete_clears_a_skipped_entry_whose_name_has_a_newline()
    {
        File.WriteAllText(PeersPath, "{\"peers\": [{\"name\": \"spoke1\\n\", \"ip\": \"127.0.0.2\", \"public_key\": \"" + HubFixture.NewKey() + "\"}]}");
        await using var hub = await HubFixture.StartAsync(stateDir: _dir);
        hub.Registry.ListInvalid().Should().ContainSingle().Which.Name.Should().Be("spoke1\n");

        using var response = await hub.DeletePeerAsync("spoke1\n");

        response.StatusCode.Should().Be(HttpStatusCode.NoContent);
        hub.Registry.ListInvalid().Should().BeEmpty();
        File.ReadAllText(PeersPath).Should().NotContain("spoke1");
    }

    [Fact]
    public async Task Stored_metadata_that_is_not_utf8_is_ignored_and_the_peer_served()
    {
        byte[] file = [.. Encoding.UTF8.GetBytes("{\"peers\": [{\"name\": \"good\", \"ip\": \"127.0.0.3\", \"public_key\": \"" + _good + "\", \"metadata\": {\"team\": \""), 0xC3, 0x28, .. "\"}}]}"u8];
        File.WriteAllBytes(PeersPath, file);

        await using var hub = await HubFixture.StartAsync(stateDir: _dir);

        hub.Registry.List().Should().ContainSingle().Which.Metadata.Should().BeNull();
        hub.Logs.WithEvent(2007).Should().ContainSingle().Which.Message.Should().Contain("good").And.Contain("UTF-8");
        using var v2 = await hub.Admin.GetAsync(new Uri("/api/peers/v2", UriKind.Relative));
        v2.StatusCode.Should().Be(HttpStatusCode.OK);
        using (var sync = await hub.PostSyncAsync("127.0.0.3", "{\"Peer\":\"good\",\"Metadata\":{\"team\":\"b\"},\"Apps\":[]}"))
        {
            sync.StatusCode.Should().Be(HttpStatusCode.OK);
        }

        System.Text.Unicode.Utf8.IsValid(File.ReadAllBytes(PeersPath)).Should().BeTrue("the next write stores the new metadata");
    }

    [Fact]
    public async Task A_peers_file_that_is_not_json_still_stops_the_hub_and_is_left_untouched()
    {
        var corrupt = Encoding.UTF8.GetBytes("{\"peers\": {\"name\": \"alpha\"}}");
        File.WriteAllBytes(PeersPath, corrupt);

        var start = () => HubFixture.StartAsync(stateDir: _dir);

        await start.Should().ThrowAsync<StateCorruptException>().Where(e => e.Message.Contains("'peers' is not a list"));
        File.ReadAllBytes(PeersPath).Should().Equal(corrupt);
    }

    private static string NonCanonicalKey() => WgKeysTests.NonCanonical(HubFixture.NewKey());

    private static JsonObject Entry(string name, string ip, string key) => new() { ["name"] = name, ["ip"] = ip, ["public_key"] = key };

    private static JsonObject BadKeyEntry(string name, string ip) => Entry(name, ip, NonCanonicalKey());

    private void WritePeers(params JsonObject[] entries) =>
        File.WriteAllText(PeersPath, new JsonObject { ["peers"] = new JsonArray(entries) }.ToJsonString());
}
