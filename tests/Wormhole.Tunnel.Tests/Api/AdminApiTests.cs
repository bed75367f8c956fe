using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Logging.Abstractions;
using Wormhole.Tunnel.Api;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.State;
using Wormhole.Tunnel.Tests.Server;

namespace Wormhole.Tunnel.Tests.Api;

/// <summary>The admin API (reference §6) over real HTTP: shapes, status codes, basic auth on DELETE.</summary>
public sealed class AdminApiTests
{
    private const string JsonUtf8 = "application/json; charset=utf-8";
    private const string HealthJson =
        "{\"message\":\"Wormholes are allowable within the laws of physics, but there's no observational evidence for them. If you find a wormhole, you're a very lucky person because they are extremely rare.\"}";

    private static readonly BasicAuthCredentials Admin = new("admin", "s3cret-pa55");

    [Fact]
    public async Task Health_answers_200_with_the_references_message_as_json()
    {
        await using var api = await AdminApiHost.StartAsync();

        using var response = await api.Http.GetAsync(new Uri("/health", UriKind.Relative));

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        response.Content.Headers.ContentType!.ToString().Should().Be(JsonUtf8);
        using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        json.RootElement.EnumerateObject().Select(p => p.Name).Should().Equal("message");
        json.RootElement.GetProperty("message").GetString().Should().Be(AdminApi.HealthText);
    }

    [Fact]
    public async Task Health_body_is_byte_for_byte_the_references()
    {
        await using var api = await AdminApiHost.StartAsync();

        using var response = await api.Http.GetAsync(new Uri("/health", UriKind.Relative));

        (await response.Content.ReadAsStringAsync()).Should().Be(HealthJson, "gin writes the apostrophes as they are, and scripts compare the text");
    }

    [Fact]
    public async Task Readyz_is_503_with_what_the_side_waits_for_until_it_has_started_then_200()
    {
        var listed = false;
        var clock = new Kubernetes.ManualTimeProvider();
        var health = new Wormhole.Tunnel.Runtime.Health(clock, TimeSpan.FromMinutes(5)).Require("the first list of Services is not in yet", () => listed);
        await using var api = await AdminApiHost.StartAsync(health: health);

        using (var starting = await api.Http.GetAsync(new Uri("/readyz", UriKind.Relative)))
        {
            starting.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable);
            starting.Content.Headers.ContentType!.ToString().Should().Be(JsonUtf8);
            (await starting.Content.ReadAsStringAsync()).Should().Be(
                "{\"status\":\"starting\",\"waiting\":[\"the first list of Services is not in yet\",\"the first plan with the tunnel address is not applied yet (by every sink: proxy, WireGuard, Kubernetes)\"]}");
        }

        listed = true;
        health.PlanApplied(withTunnelAddress: true);
        using var ready = await api.Http.GetAsync(new Uri("/readyz", UriKind.Relative));
        ready.StatusCode.Should().Be(HttpStatusCode.OK);
        (await ready.Content.ReadAsStringAsync()).Should().Be("{\"status\":\"ready\",\"waiting\":[]}");
        (await api.Http.GetAsync(new Uri("/health", UriKind.Relative))).StatusCode.Should().Be(HttpStatusCode.OK, "the reference's health check answers whatever the state");
    }

    [Fact]
    public async Task Livez_is_503_naming_the_step_that_runs_too_long()
    {
        var clock = new Kubernetes.ManualTimeProvider();
        var health = new Wormhole.Tunnel.Runtime.Health(clock, TimeSpan.FromSeconds(5));
        await using var api = await AdminApiHost.StartAsync(health: health);
        using var step = health.Begin("wg set wg0");

        (await api.Http.GetAsync(new Uri("/livez", UriKind.Relative))).StatusCode.Should().Be(HttpStatusCode.OK);
        clock.Advance(TimeSpan.FromSeconds(7.3));
        using var stuck = await api.Http.GetAsync(new Uri("/livez", UriKind.Relative));

        stuck.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable);
        (await stuck.Content.ReadAsStringAsync()).Should().Be("{\"status\":\"stuck\",\"stuck\":[{\"step\":\"wg set wg0\",\"seconds\":7.3}]}");
    }

    [Fact]
    public async Task Readyz_and_livez_are_not_served_without_a_health_model()
    {
        await using var api = await AdminApiHost.StartAsync();

        (await api.Http.GetAsync(new Uri("/readyz", UriKind.Relative))).StatusCode.Should().Be(HttpStatusCode.NotFound);
    }

    [Theory]
    [InlineData("/api/apps/v1")]
    [InlineData("/api/apps")]
    public async Task Apps_are_an_empty_array_when_nothing_is_exposed(string path)
    {
        await using var api = await AdminApiHost.StartAsync();

        using var response = await api.Http.GetAsync(new Uri(path, UriKind.Relative));

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        response.Content.Headers.ContentType!.ToString().Should().Be(JsonUtf8);
        (await response.Content.ReadAsStringAsync()).Should().Be("[]");
    }

    [Fact]
    public async Task Apps_v1_and_its_alias_list_the_exposed_apps_with_the_references_fields()
    {
        await using var api = await AdminApiHost.StartAsync();
        api.Apps =
        [
            new AppDescriptor("nginx-nginx", "localhost:25001", "alpha", 80, ""),
            new AppDescriptor("db", "localhost:25002", "beta", 5432, "tier=db"),
        ];

        var v1 = await api.Http.GetStringAsync(new Uri("/api/apps/v1", UriKind.Relative));
        var alias = await api.Http.GetStringAsync(new Uri("/api/apps", UriKind.Relative));

        alias.Should().Be(v1);
        using var json = JsonDocument.Parse(v1);
        var apps = json.RootElement.EnumerateArray().ToList();
        apps.Should().HaveCount(2);
        apps[0].EnumerateObject().Select(p => p.Name).Should().Equal("name", "address", "peer", "originalPort", "targetLabels");
        apps[0].GetProperty("name").GetString().Should().Be("nginx-nginx");
        apps[0].GetProperty("address").GetString().Should().Be("localhost:25001");
        apps[0].GetProperty("peer").GetString().Should().Be("alpha");
        apps[0].GetProperty("originalPort").GetInt32().Should().Be(80);
        apps[0].GetProperty("targetLabels").GetString().Should().BeEmpty();
        apps[1].GetProperty("name").GetString().Should().Be("db");
        apps[1].GetProperty("originalPort").GetInt32().Should().Be(5432);
        apps[1].GetProperty("targetLabels").GetString().Should().Be("tier=db");
    }

    [Theory]
    [InlineData("/api/peers/v1")]
    [InlineData("/api/peers")]
    [InlineData("/api/peers/v2")]
    public async Task Peers_are_an_empty_array_not_null_when_there_are_none(string path)
    {
        await using var api = await AdminApiHost.StartAsync();

        using var response = await api.Http.GetAsync(new Uri(path, UriKind.Relative));

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        response.Content.Headers.ContentType!.ToString().Should().Be(JsonUtf8);
        (await response.Content.ReadAsStringAsync()).Should().Be("[]");
    }

    [Theory]
    [InlineData("/api/peers/v1")]
    [InlineData("/api/peers")]
    public async Task Peers_v1_and_its_alias_list_name_ip_and_public_key_sorted_by_name(string path)
    {
        await using var api = await AdminApiHost.StartAsync();
        api.Peers.Set(
            new StoredPeer("zulu", "10.188.0.4", "zulu-key"),
            new StoredPeer("alpha", "10.188.0.2", "alpha-key", JsonDocument.Parse("{\"team\":\"a\"}").RootElement),
            new StoredPeer("mike", "10.188.0.3", "mike-key"));

        using var response = await api.Http.GetAsync(new Uri(path, UriKind.Relative));

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        (await response.Content.ReadAsStringAsync()).Should().Be(
            "[{\"name\":\"alpha\",\"ip\":\"10.188.0.2\",\"public_key\":\"alpha-key\"}," +
            "{\"name\":\"mike\",\"ip\":\"10.188.0.3\",\"public_key\":\"mike-key\"}," +
            "{\"name\":\"zulu\",\"ip\":\"10.188.0.4\",\"public_key\":\"zulu-key\"}]");
    }

    [Fact]
    public async Task Peers_v1_writes_public_keys_as_they_are_so_they_can_be_compared_with_wg_show()
    {
        await using var api = await AdminApiHost.StartAsync();
        const string key = "ab+cd/ef+gh/ijklmnopqrstuvwxyz0123456789ABC=";
        api.Peers.Set(new StoredPeer("alpha", "10.188.0.2", key));

        var body = await api.Http.GetStringAsync(new Uri("/api/peers/v1", UriKind.Relative));

        body.Should().Be("[{\"name\":\"alpha\",\"ip\":\"10.188.0.2\",\"public_key\":\"" + key + "\"}]", "Go's encoding/json does not escape '+' or '/'");
    }

    [Fact]
    public async Task Peers_v2_shows_metadata_and_null_for_a_peer_that_has_not_synced_yet()
    {
        await using var api = await AdminApiHost.StartAsync();
        api.Peers.Set(
            new StoredPeer("beta", "10.188.0.3", "beta-key"),
            new StoredPeer("alpha", "10.188.0.2", "alpha-key", JsonDocument.Parse("{\"team\":\"a\",\"tier\":1}").RootElement));

        using var response = await api.Http.GetAsync(new Uri("/api/peers/v2", UriKind.Relative));

        response.StatusCode.Should().Be(HttpStatusCode.OK, "a peer without metadata is no error (the reference answers 500 here)");
        using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        var peers = json.RootElement.EnumerateArray().ToList();
        peers.Select(p => p.GetProperty("name").GetString()).Should().Equal("alpha", "beta");
        peers[0].EnumerateObject().Select(p => p.Name).Should().Equal("name", "metadata");
        peers[0].GetProperty("metadata").GetProperty("team").GetString().Should().Be("a");
        peers[0].GetProperty("metadata").GetProperty("tier").GetInt32().Should().Be(1);
        peers[1].TryGetProperty("metadata", out var missing).Should().BeTrue("the field is present, as null");
        missing.ValueKind.Should().Be(JsonValueKind.Null);
    }

    [Fact]
    public async Task Skipped_peers_file_entries_are_listed_on_their_own_path_and_not_among_the_peers()
    {
        await using var api = await AdminApiHost.StartAsync();
        api.Peers.Set(new StoredPeer("good", "10.188.0.3", "good-key"));
        api.Peers.SetInvalid(
            new InvalidStoredPeer("evil", "10.188.0.2", "evil-key", "the WireGuard public key is not canonical"),
            new InvalidStoredPeer(null, null, null, "the entry is number, not an object"));

        using var response = await api.Http.GetAsync(new Uri("/api/peers/v1/invalid", UriKind.Relative));

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        response.Content.Headers.ContentType!.ToString().Should().Be(JsonUtf8);
        (await response.Content.ReadAsStringAsync()).Should().Be(
            "[{\"name\":\"evil\",\"ip\":\"10.188.0.2\",\"public_key\":\"evil-key\",\"reason\":\"the WireGuard public key is not canonical\"}," +
            "{\"name\":null,\"ip\":null,\"public_key\":null,\"reason\":\"the entry is number, not an object\"}]");
        (await api.Http.GetStringAsync(new Uri("/api/peers/v1", UriKind.Relative))).Should().Be("[{\"name\":\"good\",\"ip\":\"10.188.0.3\",\"public_key\":\"good-key\"}]");
    }

    [Fact]
    public async Task Delete_without_configured_credentials_is_forbidden_with_the_references_body()
    {
        await using var api = await AdminApiHost.StartAsync(basicAuth: null);
        api.Peers.Set(new StoredPeer("x", "10.188.0.2", "x-key"));

        using var request = Delete("/api/peers/v1/x", Admin);
        using var response = await api.Http.SendAsync(request);

        response.StatusCode.Should().Be(HttpStatusCode.Forbidden, "the reference answers 500; refusing by design is no server error");
        response.Content.Headers.ContentType!.ToString().Should().Be(JsonUtf8);
        (await response.Content.ReadAsStringAsync()).Should().Be("{\"error\":\"Server misconfiguration: Basic authentication is required but not enabled\"}");
        api.Peers.DeleteCalls.Should().BeEmpty();
    }

    public static TheoryData<string?> BadAuthorizations => new()
    {
        null,
        "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes("admin:wrong")),
        "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes("root:s3cret-pa55")),
        "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes("admin")),
        "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes("admin:s3cret-pa55x")),
        "Basic !!!not-base64!!!",
        "Bearer " + Convert.ToBase64String(Encoding.UTF8.GetBytes("admin:s3cret-pa55")),
    };

    [Theory]
    [MemberData(nameof(BadAuthorizations))]
    public async Task Delete_with_missing_or_wrong_credentials_is_unauthorized_and_deletes_nothing(string? authorization)
    {
        await using var api = await AdminApiHost.StartAsync(Admin);
        api.Peers.Set(new StoredPeer("x", "10.188.0.2", "x-key"));

        using var request = new HttpRequestMessage(HttpMethod.Delete, new Uri("/api/peers/v1/x", UriKind.Relative));
        if (authorization is not null)
        {
            request.Headers.TryAddWithoutValidation("Authorization", authorization).Should().BeTrue();
        }

        using var response = await api.Http.SendAsync(request);

        response.StatusCode.Should().Be(HttpStatusCode.Unauthorized);
        response.Headers.WwwAuthenticate.ToString().Should().Be("Basic realm=\"Restricted\"");
        (await response.Content.ReadAsStringAsync()).Should().Be("{\"error\":\"Unauthorized: Invalid credentials\"}");
        api.Peers.DeleteCalls.Should().BeEmpty();
        api.Peers.List().Should().ContainSingle();
    }

    [Fact]
    public async Task Delete_with_the_right_credentials_removes_the_peer_and_answers_204()
    {
        await using var api = await AdminApiHost.StartAsync(Admin);
        api.Peers.Set(new StoredPeer("x", "10.188.0.2", "x-key"), new StoredPeer("y", "10.188.0.3", "y-key"));

        using var request = Delete("/api/peers/v1/x", Admin);
        using var response = await api.Http.SendAsync(request);

        response.StatusCode.Should().Be(HttpStatusCode.NoContent);
        (await response.Content.ReadAsByteArrayAsync()).Should().BeEmpty();
        api.Peers.DeleteCalls.Should().Equal("x");
        (await api.Http.GetStringAsync(new Uri("/api/peers/v1", UriKind.Relative))).Should().Be("[{\"name\":\"y\",\"ip\":\"10.188.0.3\",\"public_key\":\"y-key\"}]");
    }

    [Fact]
    public async Task Delete_of_an_unknown_peer_is_not_found_and_says_the_peer_does_not_exist()
    {
        await using var api = await AdminApiHost.StartAsync(Admin);
        api.Peers.Set(new StoredPeer("x", "10.188.0.2", "x-key"));

        using var request = Delete("/api/peers/v1/ghost", Admin);
        using var response = await api.Http.SendAsync(request);

        response.StatusCode.Should().Be(HttpStatusCode.NotFound, "the reference answers 500; an unknown name is the caller's mistake");
        response.Content.Headers.ContentType!.ToString().Should().Be(JsonUtf8);
        (await response.Content.ReadAsStringAsync()).Should().Be("{\"error\":\"peer does not exist\"}");
        api.Peers.DeleteCalls.Should().Equal("ghost");
        api.Peers.List().Should().ContainSingle();
    }

    [Fact]
    public async Task Reads_need_no_credentials_even_when_basic_auth_is_configured()
    {
        await using var api = await AdminApiHost.StartAsync(Admin);
        api.Peers.Set(new StoredPeer("x", "10.188.0.2", "x-key"));

        using var peers = await api.Http.GetAsync(new Uri("/api/peers/v1", UriKind.Relative));
        using var apps = await api.Http.GetAsync(new Uri("/api/apps/v1", UriKind.Relative));

        peers.StatusCode.Should().Be(HttpStatusCode.OK);
        apps.StatusCode.Should().Be(HttpStatusCode.OK);
    }

    [Theory]
    [InlineData("GET", "/nope")]
    [InlineData("GET", "/api/apps/v3")]
    [InlineData("GET", "/api/peers/v1/x")]
    [InlineData("POST", "/health")]
    [InlineData("GET", "/favicon.ico")]
    public async Task An_unknown_route_is_404_page_not_found(string method, string path)
    {
        await using var api = await AdminApiHost.StartAsync(Admin);

        using var request = new HttpRequestMessage(new HttpMethod(method), new Uri(path, UriKind.Relative));
        using var response = await api.Http.SendAsync(request);

        response.StatusCode.Should().Be(HttpStatusCode.NotFound);
        (await response.Content.ReadAsStringAsync()).Should().Be("404 page not found");
    }

    [Theory]
    [InlineData("GET", "/api/peers/v1")]
    [InlineData("GET", "/api/peers")]
    [InlineData("GET", "/api/peers/v2")]
    [InlineData("DELETE", "/api/peers/v1/x")]
    public async Task A_spoke_has_no_peers_endpoints(string method, string path)
    {
        await using var api = await AdminApiHost.StartAsync(Admin, spoke: true);

        using var request = new HttpRequestMessage(new HttpMethod(method), new Uri(path, UriKind.Relative));
        request.Headers.Authorization = BasicHeader(Admin);
        using var response = await api.Http.SendAsync(request);

        response.StatusCode.Should().Be(HttpStatusCode.NotFound);
        (await response.Content.ReadAsStringAsync()).Should().Be("404 page not found");
    }

    [Fact]
    public async Task A_spoke_still_serves_health_and_apps()
    {
        await using var api = await AdminApiHost.StartAsync(spoke: true);
        api.Apps = [new AppDescriptor("web", "localhost:25001", "server", 80, "")];

        (await api.Http.GetStringAsync(new Uri("/health", UriKind.Relative))).Should().Contain("Wormholes are allowable");
        (await api.Http.GetStringAsync(new Uri("/api/apps/v1", UriKind.Relative))).Should().Contain("\"name\":\"web\"");
    }

    private static HttpRequestMessage Delete(string path, BasicAuthCredentials credentials) =>
        new(HttpMethod.Delete, new Uri(path, UriKind.Relative)) { Headers = { Authorization = BasicHeader(credentials) } };

    private static AuthenticationHeaderValue BasicHeader(BasicAuthCredentials credentials) =>
        new("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{credentials.Username}:{credentials.Password}")));
}

/// <summary>The admin API on a real Kestrel (127.0.0.1, OS-chosen port) over a fake peer directory and a settable app list.</summary>
internal sealed class AdminApiHost : IAsyncDisposable
{
    private readonly List<WebApplication> _servers = [];

    private AdminApiHost()
    {
    }

    public FakePeerDirectory Peers { get; } = new();

    public IReadOnlyList<AppDescriptor> Apps { get; set; } = [];

    public HttpClient Http { get; private set; } = null!;

    public static async Task<AdminApiHost> StartAsync(BasicAuthCredentials? basicAuth = null, bool spoke = false, Wormhole.Tunnel.Runtime.Health? health = null)
    {
        var host = new AdminApiHost();
        var app = WebHost.Create(new IPEndPoint(IPAddress.Loopback, 0), NullLoggerFactory.Instance, 64 * 1024, a =>
            a.MapAdminApi(() => host.Apps, spoke ? null : host.Peers, basicAuth, health: health));
        var address = await LoopbackHost.StartAsync(app, host._servers);
        host.Http = new HttpClient { BaseAddress = address, Timeout = TimeSpan.FromSeconds(30) };
        return host;
    }

    public async ValueTask DisposeAsync()
    {
        Http?.Dispose();
        foreach (var server in _servers)
        {
            await server.StopAsync(CancellationToken.None);
            await server.DisposeAsync();
        }
    }
}

/// <summary>Stands in for the hub's peer registry; records deletions.</summary>
internal sealed class FakePeerDirectory : IPeerDirectory
{
    private readonly Lock _lock = new();
    private readonly List<string> _deleteCalls = [];
    private List<StoredPeer> _peers = [];
    private List<InvalidStoredPeer> _invalid = [];

    /// <summary>Every name DeleteAsync was called with, found or not.</summary>
    public IReadOnlyList<string> DeleteCalls
    {
        get
        {
            lock (_lock)
            {
                return _deleteCalls.ToList();
            }
        }
    }

    public void Set(params StoredPeer[] peers)
    {
        lock (_lock)
        {
            _peers = [.. peers];
        }
    }

    public IReadOnlyList<StoredPeer> List()
    {
        lock (_lock)
        {
            return _peers.ToList();
        }
    }

    public IReadOnlyList<InvalidStoredPeer> ListInvalid()
    {
        lock (_lock)
        {
            return _invalid.ToList();
        }
    }

    public void SetInvalid(params InvalidStoredPeer[] entries)
    {
        lock (_lock)
        {
            _invalid = [.. entries];
        }
    }

    public Task<PeerDeletion> DeleteAsync(string name, bool revoke, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            _deleteCalls.Add(name);
            return Task.FromResult(_peers.RemoveAll(p => p.Name == name) > 0 ? PeerDeletion.Deleted : PeerDeletion.NotFound);
        }
    }

    public IReadOnlyList<RevocationInfo> Revocations() => [];

    public Task<bool> LiftRevocationAsync(string name, CancellationToken cancellationToken) => Task.FromResult(false);
}
