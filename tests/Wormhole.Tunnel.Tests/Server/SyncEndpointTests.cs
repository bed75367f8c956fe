using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Wormhole.Tunnel.Api;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Proxy;
using Wormhole.Tunnel.Server;
using Wormhole.Tunnel.Sync;

namespace Wormhole.Tunnel.Tests.Server;

/// <summary>POST /sync over real HTTP, sent from the peer's tunnel address (reference §3).</summary>
public sealed class SyncEndpointTests
{
    private const string Alpha = "127.0.0.2";
    private const string Beta = "127.0.0.3";
    private static readonly TimeSpan Prompt = TimeSpan.FromSeconds(5);

    [Fact]
    public async Task Before_its_first_plan_is_applied_the_hub_refuses_pairing_with_503_and_stores_nothing()
    {
        await using var hub = await HubFixture.StartAsync(startReconciler: false);

        using (var early = await hub.PostPairingAsync("alpha", HubFixture.NewKey()))
        {
            early.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable, "its WireGuard peer would only be set by the first plan");
            (await early.Content.ReadAsStringAsync()).Should().Contain("the hub is starting");
        }

        hub.Registry.List().Should().BeEmpty();
        File.Exists(hub.PeersFile.Path).Should().BeFalse("a refused pairing writes nothing");
        hub.StartReconciler();
        await Eventually.TrueAsync(() => hub.Reconciler.FirstPlanApplied, "the first plan is applied");
        (await hub.PairAsync("alpha")).AssignedIp.Should().Be(Alpha);
        hub.WireGuard.Peers.Should().ContainSingle().Which.AllowedIps.Should().Equal($"{Alpha}/32");
    }

    [Fact]
    public async Task Before_its_first_plan_is_applied_the_hub_answers_503_and_keeps_nothing_of_the_sync()
    {
        // A restarted hub: alpha paired with it before.
        var dir = HubFixture.NewTempDir();
        try
        {
            await using (var before = await HubFixture.StartAsync(stateDir: dir))
            {
                (await before.PairAsync("alpha")).AssignedIp.Should().Be(Alpha);
            }

            await BeforeTheFirstPlanAsync(dir);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static async Task BeforeTheFirstPlanAsync(string stateDir)
    {
        await using var hub = await HubFixture.StartAsync(stateDir: stateDir, startReconciler: false);
        hub.LocalApps.Set([HubFixture.App("db", 5432)]);
        var body = Sync("alpha", AppJson("web", $"{Alpha}:20000"));

        using (var early = await hub.PostSyncAsync(Alpha, body))
        {
            early.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable, "an answer now would tell the spoke the hub offers nothing");
            (await early.Content.ReadAsStringAsync()).Should().Contain("first plan");
        }

        hub.AppsOf("alpha").Should().BeNull("a refused sync changes nothing");
        hub.StartReconciler();
        await Eventually.TrueAsync(() => hub.Reconciler.FirstPlanApplied, "the first plan is applied");
        using var later = await hub.PostSyncAsync(Alpha, body);
        later.StatusCode.Should().Be(HttpStatusCode.OK);
        (await AppNamesIn(later)).Should().Equal("db");
        hub.AppsOf("alpha").Should().NotBeNull();
    }

    [Fact]
    public async Task A_sync_from_the_peers_own_address_is_accepted_and_answered_with_the_hubs_apps()
    {
        await using var hub = await HubFixture.StartAsync();
        await hub.SetLocalAppsAsync(HubFixture.App("db", 5432));
        (await hub.PairAsync("alpha")).AssignedIp.Should().Be(Alpha);
        var body = new JsonObject
        {
            ["Peer"] = "alpha",
            ["Metadata"] = new JsonObject { ["team"] = "payments", ["tier"] = 1 },
            ["Apps"] = new JsonArray(AppJson("web", $"{Alpha}:20000", originalPort: 80, peer: "someone-else", targetLabels: "app=web")),
        }.ToJsonString();

        using var response = await hub.PostSyncAsync(Alpha, body);

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        response.Content.Headers.ContentType!.MediaType.Should().Be("application/json");
        response.Headers.Contains(SyncHeaders.Version).Should().BeTrue();
        using var answer = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        var root = answer.RootElement;
        root.EnumerateObject().Select(p => p.Name).Should().Equal("Peer", "Metadata", "Apps");
        root.GetProperty("Peer").GetString().Should().Be(HubFixture.HubName);
        root.GetProperty("Metadata").ValueKind.Should().Be(JsonValueKind.Null);
        var app = root.GetProperty("Apps").EnumerateArray().Should().ContainSingle().Subject;
        app.EnumerateObject().Select(p => p.Name).Should().Equal("name", "address", "peer", "originalPort", "targetLabels");
        app.GetProperty("name").GetString().Should().Be("db");
        app.GetProperty("address").GetString().Should().Be("127.0.0.1:20000");
        app.GetProperty("peer").GetString().Should().Be(HubFixture.HubName);
        app.GetProperty("originalPort").GetInt32().Should().Be(5432);
        app.GetProperty("targetLabels").GetString().Should().BeEmpty();

        var stored = hub.AppsOf("alpha");
        stored.Should().NotBeNull();
        stored!.TunnelAddress.Should().Be(IPAddress.Parse(Alpha));
        stored.Apps.Should().Equal(new AppDescriptor("web", $"{Alpha}:20000", "alpha", 80, "app=web"));

        var metadata = hub.Registry.List().Single(p => p.Name == "alpha").Metadata;
        metadata.Should().NotBeNull();
        metadata!.Value.GetProperty("team").GetString().Should().Be("payments");
        metadata.Value.GetProperty("tier").GetInt32().Should().Be(1);
        File.ReadAllText(hub.PeersFile.Path).Should().Contain("payments", "the metadata is persisted with the peer");

        await Eventually.TrueAsync(
            () => hub.Proxy.Active.Any(s => s.Kind == ListenerKind.Remote && s.App == "web" && s.TargetHost == Alpha && s.TargetPort == 20000),
            "the hub exposes alpha's app web, forwarding to alpha's tunnel address");
    }

    [Fact]
    public async Task A_sync_from_another_peers_address_claiming_its_name_is_forbidden_and_changes_nothing()
    {
        await using var hub = await HubFixture.StartAsync();
        await hub.PairAsync("alpha");
        await hub.PairAsync("beta");
        using (var ok = await hub.PostSyncAsync(Alpha, Sync("alpha", AppJson("web", $"{Alpha}:20000"))))
        {
            ok.StatusCode.Should().Be(HttpStatusCode.OK);
        }

        var metadataBefore = hub.Registry.List().Single(p => p.Name == "alpha").Metadata?.GetRawText();

        using var spoofed = await hub.PostSyncAsync(
            Beta,
            new JsonObject { ["Peer"] = "alpha", ["Metadata"] = new JsonObject { ["owned"] = true }, ["Apps"] = new JsonArray(AppJson("evil", $"{Beta}:20000")) }.ToJsonString());

        spoofed.StatusCode.Should().Be(HttpStatusCode.Forbidden);
        hub.AppsOf("alpha")!.Apps.Select(a => a.Name).Should().Equal("web");
        hub.AppsOf("beta").Should().BeNull();
        hub.Registry.List().Single(p => p.Name == "alpha").Metadata?.GetRawText().Should().Be(metadataBefore);
    }

    [Fact]
    public async Task A_sync_from_an_address_that_is_no_peer_is_forbidden()
    {
        await using var hub = await HubFixture.StartAsync();
        await hub.PairAsync("alpha");

        using var response = await hub.PostSyncAsync("127.0.0.9", Sync("alpha", AppJson("web", "127.0.0.9:20000")));

        response.StatusCode.Should().Be(HttpStatusCode.Forbidden);
        hub.RemoteApps.Snapshot().Should().BeEmpty();
    }

    [Fact]
    public async Task A_sync_naming_an_unknown_peer_from_a_known_address_is_not_found()
    {
        await using var hub = await HubFixture.StartAsync();
        await hub.PairAsync("alpha");

        using var response = await hub.PostSyncAsync(Alpha, Sync("ghost", AppJson("web", $"{Alpha}:20000")));

        response.StatusCode.Should().Be(HttpStatusCode.NotFound);
        (await response.Content.ReadAsStringAsync()).Should().Be("peer does not exist");
        hub.RemoteApps.Snapshot().Should().BeEmpty();
    }

    [Theory]
    [InlineData("{\"Peer\":\"alpha\",\"Apps\":[")]
    [InlineData("not json at all")]
    [InlineData("{\"Peer\":\"alpha\",\"Apps\":[{\"name\":\"web\",\"address\":\"no-port\"}]}")]
    public async Task A_malformed_sync_is_a_bad_request_and_keeps_the_apps_synced_before(string malformed)
    {
        await using var hub = await HubFixture.StartAsync();
        await hub.PairAsync("alpha");
        using (var ok = await hub.PostSyncAsync(Alpha, Sync("alpha", AppJson("web", $"{Alpha}:20000"))))
        {
            ok.StatusCode.Should().Be(HttpStatusCode.OK);
        }

        using var response = await hub.PostSyncAsync(Alpha, malformed);

        response.StatusCode.Should().Be(HttpStatusCode.BadRequest);
        (await response.Content.ReadAsStringAsync()).Should().NotBeNullOrWhiteSpace();
        hub.AppsOf("alpha")!.Apps.Select(a => a.Name).Should().Equal("web");
    }

    public static TheoryData<string, string> BadMetadata => new()
    {
        // A JSON string holding the bytes 0xC3 0x28: not UTF-8.
        { "invalid UTF-8", "{\"Peer\":\"alpha\",\"Metadata\":{\"team\":\"\u00c3(\"},\"Apps\":[]}" },
        { "unpaired surrogate", "{\"Peer\":\"alpha\",\"Metadata\":{\"team\":\"\\ud800\"},\"Apps\":[]}" },
        { "too large", "{\"Peer\":\"alpha\",\"Metadata\":{\"pad\":\"" + new string('x', SyncCodec.MaxMetadataBytes) + "\"},\"Apps\":[]}" },
    };

    [Theory]
    [MemberData(nameof(BadMetadata))]
    public async Task A_sync_with_metadata_the_hub_cannot_store_is_a_bad_request_and_changes_nothing(string what, string body)
    {
        await using var hub = await HubFixture.StartAsync();
        await hub.PairAsync("alpha");
        using (var ok = await hub.PostSyncAsync(Alpha, Sync("alpha", AppJson("web", $"{Alpha}:20000"))))
        {
            ok.StatusCode.Should().Be(HttpStatusCode.OK);
        }

        var fileBefore = File.ReadAllBytes(hub.PeersFile.Path);
        var bytes = Encoding.Latin1.GetBytes(body);

        for (var attempt = 0; attempt < 2; attempt++)
        {
            using var refused = await hub.PostSyncBytesAsync(Alpha, bytes);
            refused.StatusCode.Should().Be(HttpStatusCode.BadRequest, what);
            (await refused.Content.ReadAsStringAsync()).Should().ContainAny("UTF-8", "Unicode", "metadata");
        }

        File.ReadAllBytes(hub.PeersFile.Path).Should().Equal(fileBefore, "no metadata update");
        hub.AppsOf("alpha")!.Apps.Select(a => a.Name).Should().Equal(["web"], "no app update");
        using var good = await hub.PostSyncAsync(Alpha, new JsonObject { ["Peer"] = "alpha", ["Metadata"] = new JsonObject { ["team"] = "ok" }, ["Apps"] = new JsonArray() }.ToJsonString());
        good.StatusCode.Should().Be(HttpStatusCode.OK, "the next good sync is taken");
        hub.Registry.Find("alpha")!.Metadata!.Value.GetProperty("team").GetString().Should().Be("ok");
    }

    [Theory]
    [InlineData("CONNECT")]
    [InlineData("GET")]
    [InlineData("DELETE")]
    [InlineData("FOO")]
    public async Task Another_method_than_post_is_a_405_even_from_the_peer_with_a_valid_body(string method)
    {
        await using var hub = await HubFixture.StartAsync();
        await hub.PairAsync("alpha");
        var body = Encoding.UTF8.GetBytes(Sync("alpha", AppJson("web", $"{Alpha}:20000")));

        var status = await RawHttp.StatusAsync(hub.SyncUrl, $"{method} /sync HTTP/1.1\r\nHost: hub\r\nContent-Length: {body.Length}\r\n\r\n", body, from: Alpha);

        status.Should().Be(405);
        hub.AppsOf("alpha").Should().BeNull("nothing was synced");
        using var ok = await hub.PostSyncAsync(Alpha, Sync("alpha", AppJson("web", $"{Alpha}:20000")));
        ok.StatusCode.Should().Be(HttpStatusCode.OK);
    }

    [Fact]
    public async Task A_sync_body_over_the_limit_is_refused_with_413_and_keeps_the_apps_synced_before()
    {
        await using var hub = await HubFixture.StartAsync();
        await hub.PairAsync("alpha");
        using (var ok = await hub.PostSyncAsync(Alpha, Sync("alpha", AppJson("web", $"{Alpha}:20000"))))
        {
            ok.StatusCode.Should().Be(HttpStatusCode.OK);
        }

        var huge = "{\"Peer\":\"alpha\",\"Apps\":[],\"Pad\":\"" + new string('x', 10 * 1024 * 1024) + "\"}";
        using var http = HubFixture.ClientFrom(Alpha);
        using var request = new HttpRequestMessage(HttpMethod.Post, hub.SyncUrl) { Content = new StringContent(huge) };

        // With 100-continue the client waits for the hub's verdict before sending 10 MB; without it, the hub's early
        // 413 races the upload and the client may only see the connection close.
        request.Headers.ExpectContinue = true;
        using var response = await http.SendAsync(request);

        response.StatusCode.Should().Be(HttpStatusCode.RequestEntityTooLarge);
        (await response.Content.ReadAsStringAsync()).Should().Contain("MiB");
        hub.AppsOf("alpha")!.Apps.Select(a => a.Name).Should().Equal("web");
        using var after = await hub.PostSyncAsync(Alpha, Sync("alpha", AppJson("web", $"{Alpha}:20000"), AppJson("api", $"{Alpha}:20001")));
        after.StatusCode.Should().Be(HttpStatusCode.OK, "the hub still takes normal syncs");
        hub.AppsOf("alpha")!.Apps.Select(a => a.Name).Should().Equal("web", "api");
    }

    [Fact]
    public async Task A_chunked_sync_with_5000_apps_is_read_whole()
    {
        await using var hub = await HubFixture.StartAsync();
        await hub.PairAsync("alpha");
        var apps = new JsonArray(Enumerable.Range(0, 5000).Select(i => (JsonNode)AppJson($"app-{i:D4}", $"{Alpha}:{20000 + i}", originalPort: 1000 + i)).ToArray());
        var json = Encoding.UTF8.GetBytes(Sync("alpha", apps));
        json.Length.Should().BeGreaterThan(64 * 1024, "the body must be far larger than one read");

        using var http = HubFixture.ClientFrom(Alpha);
        using var request = new HttpRequestMessage(HttpMethod.Post, hub.SyncUrl) { Content = new StreamContent(new NonSeekableStream(json)) };
        request.Headers.TransferEncodingChunked = true;
        using var response = await http.SendAsync(request);

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        request.Content.Headers.ContentLength.Should().BeNull("the body went out chunked, without Content-Length");
        var stored = hub.AppsOf("alpha")!.Apps;
        stored.Should().HaveCount(5000);
        stored.Select(a => a.Name).Should().OnlyHaveUniqueItems();
        stored.Should().Contain(new AppDescriptor("app-4999", $"{Alpha}:24999", "alpha", 5999, ""));
    }

    [Fact]
    public async Task Lowercase_keys_are_accepted_as_go_decodes_case_insensitively()
    {
        await using var hub = await HubFixture.StartAsync();
        await hub.PairAsync("alpha");
        var body = new JsonObject
        {
            ["peer"] = "alpha",
            ["metadata"] = new JsonObject { ["team"] = "lower" },
            ["apps"] = new JsonArray(AppJson("web", $"{Alpha}:20000")),
        }.ToJsonString();

        using var response = await hub.PostSyncAsync(Alpha, body);

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        hub.AppsOf("alpha")!.Apps.Select(a => a.Name).Should().Equal("web");
        hub.Registry.List().Single().Metadata!.Value.GetProperty("team").GetString().Should().Be("lower");
    }

    [Fact]
    public async Task Apps_null_means_the_peer_offers_no_apps()
    {
        await using var hub = await HubFixture.StartAsync();
        await hub.PairAsync("alpha");
        using (var ok = await hub.PostSyncAsync(Alpha, Sync("alpha", AppJson("web", $"{Alpha}:20000"))))
        {
            ok.StatusCode.Should().Be(HttpStatusCode.OK);
        }

        await Eventually.TrueAsync(() => hub.Proxy.Active.Any(s => s.App == "web"), "web is exposed");

        using var response = await hub.PostSyncAsync(Alpha, "{\"Peer\":\"alpha\",\"Metadata\":null,\"Apps\":null}");

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        hub.AppsOf("alpha")!.Apps.Should().BeEmpty();
        await Eventually.TrueAsync(() => !hub.Proxy.Active.Any(s => s.App == "web"), "web is withdrawn");
    }

    [Fact]
    public async Task A_long_poll_is_held_until_the_hubs_apps_change_and_then_answers_within_a_second()
    {
        await using var hub = await HubFixture.StartAsync();
        await hub.SetLocalAppsAsync(HubFixture.App("db", 5432));
        await hub.PairAsync("alpha");
        string version;
        using (var first = await hub.PostSyncAsync(Alpha, Sync("alpha")))
        {
            first.StatusCode.Should().Be(HttpStatusCode.OK);
            version = first.Headers.GetValues(SyncHeaders.Version).Single();
        }

        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var held = hub.PostSyncAsync(Alpha, Sync("alpha", AppJson("web", $"{Alpha}:20000")), waitFor: version, cancel.Token);
        await Eventually.TrueAsync(() => hub.AppsOf("alpha")?.Apps.Count == 1, "the hub has taken in the held sync's apps");
        (await Task.WhenAny(held, Task.Delay(TimeSpan.FromMilliseconds(300)))).Should().NotBeSameAs(held, "nothing the peer knows has changed, so the answer is held");

        var watch = Stopwatch.StartNew();
        hub.LocalApps.Set([HubFixture.App("db", 5432), HubFixture.App("cache", 6379)]);
        using var response = await held.WaitAsync(TimeSpan.FromSeconds(1));
        watch.Elapsed.Should().BeLessThan(TimeSpan.FromSeconds(1));

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        response.Headers.GetValues(SyncHeaders.Version).Single().Should().NotBe(version);
        (await AppNamesIn(response)).Should().BeEquivalentTo("db", "cache");
    }

    [Fact]
    public async Task A_sync_without_the_wait_header_is_answered_at_once()
    {
        await using var hub = await HubFixture.StartAsync();
        await hub.SetLocalAppsAsync(HubFixture.App("db", 5432));
        await hub.PairAsync("alpha");

        var watch = Stopwatch.StartNew();
        using (var first = await hub.PostSyncAsync(Alpha, Sync("alpha")).WaitAsync(Prompt))
        {
            first.StatusCode.Should().Be(HttpStatusCode.OK);
        }

        using (var second = await hub.PostSyncAsync(Alpha, Sync("alpha")).WaitAsync(Prompt))
        {
            second.StatusCode.Should().Be(HttpStatusCode.OK);
            (await AppNamesIn(second)).Should().Equal("db");
        }

        watch.Elapsed.Should().BeLessThan(Prompt);
    }

    [Theory]
    [InlineData("0000dead.0")]
    [InlineData("")]
    public async Task A_long_poll_with_a_stale_or_unknown_version_is_answered_at_once(string staleVersion)
    {
        await using var hub = await HubFixture.StartAsync();
        await hub.SetLocalAppsAsync(HubFixture.App("db", 5432));
        await hub.PairAsync("alpha");

        var watch = Stopwatch.StartNew();
        using var response = await hub.PostSyncAsync(Alpha, Sync("alpha"), waitFor: staleVersion).WaitAsync(Prompt);

        watch.Elapsed.Should().BeLessThan(Prompt).And.BeLessThan(HubEndpoints.MaxLongPoll);
        response.StatusCode.Should().Be(HttpStatusCode.OK);
        response.Headers.GetValues(SyncHeaders.Version).Single().Should().NotBe(staleVersion);
        (await AppNamesIn(response)).Should().Equal("db");
    }

    [Fact]
    public async Task Deleting_a_peer_withdraws_its_apps_and_refuses_its_later_syncs()
    {
        await using var hub = await HubFixture.StartAsync();
        await hub.PairAsync("alpha");
        using (var ok = await hub.PostSyncAsync(Alpha, Sync("alpha", AppJson("web", $"{Alpha}:20000"))))
        {
            ok.StatusCode.Should().Be(HttpStatusCode.OK);
        }

        await Eventually.TrueAsync(() => hub.Proxy.Active.Any(s => s.App == "web"), "web is exposed");

        (await hub.Registry.DeleteAsync("alpha", CancellationToken.None)).Should().Be(PeerDeletion.Deleted);

        hub.AppsOf("alpha").Should().BeNull();
        hub.WireGuard.Peers.Should().BeEmpty();
        await Eventually.TrueAsync(() => !hub.Proxy.Active.Any(s => s.App == "web"), "web is withdrawn");
        using var late = await hub.PostSyncAsync(Alpha, Sync("alpha", AppJson("web", $"{Alpha}:20000")));
        late.StatusCode.Should().Be(HttpStatusCode.Forbidden);
        hub.AppsOf("alpha").Should().BeNull();
    }

    private static JsonObject AppJson(string name, string address, int originalPort = 80, string? peer = null, string targetLabels = "") => new()
    {
        ["name"] = name,
        ["address"] = address,
        ["peer"] = peer ?? "spoke",
        ["originalPort"] = originalPort,
        ["targetLabels"] = targetLabels,
    };

    private static string Sync(string peer, params JsonNode[] apps) => Sync(peer, new JsonArray(apps));

    private static string Sync(string peer, JsonArray apps) =>
        new JsonObject { ["Peer"] = peer, ["Metadata"] = new JsonObject(), ["Apps"] = apps }.ToJsonString();

    private static async Task<List<string>> AppNamesIn(HttpResponseMessage response)
    {
        using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return json.RootElement.GetProperty("Apps").EnumerateArray().Select(a => a.GetProperty("name").GetString()!).ToList();
    }

    /// <summary>A body whose length HttpClient cannot know, so it goes out chunked.</summary>
    private sealed class NonSeekableStream(byte[] content) : Stream
    {
        private readonly MemoryStream _inner = new(content);

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => throw new NotSupportedException();

        public override long Position
        {
            get => throw new NotSupportedException();
            set => throw new NotSupportedException();
        }

        public override int Read(byte[] buffer, int offset, int count) => _inner.Read(buffer, offset, Math.Min(count, 4096));

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            _inner.ReadAsync(buffer, offset, Math.Min(count, 4096), cancellationToken);

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            _inner.ReadAsync(buffer[..Math.Min(buffer.Length, 4096)], cancellationToken);

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                _inner.Dispose();
            }

            base.Dispose(disposing);
        }
    }
}
