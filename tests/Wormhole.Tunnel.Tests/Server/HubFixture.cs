using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Wormhole.Tunnel.Api;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.Metrics;
using Wormhole.Tunnel.Pairing;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Proxy;
using Wormhole.Tunnel.Runtime;
using Wormhole.Tunnel.Server;
using Wormhole.Tunnel.Sinks;
using Wormhole.Tunnel.Sources;
using Wormhole.Tunnel.State;
using Wormhole.Tunnel.Sync;
using Wormhole.Tunnel.Tests.Hosting;
using Wormhole.Tunnel.WireGuard;

namespace Wormhole.Tunnel.Tests.Server;

/// <summary>
/// A hub without WireGuard or listening proxies: the real peer registry over a temp state directory, the real
/// reconciler, the real pairing and sync endpoints on Kestrel (127.0.0.1, OS-chosen ports). The pool is 127.0.0.1/prefix,
/// so peers get 127.0.0.2, 127.0.0.3, … which are real loopback addresses: <see cref="ClientFrom"/> sends "from" them.
/// </summary>
internal sealed class HubFixture : IAsyncDisposable
{
    public const string InviteToken = "supersecret-token";
    public const string HubName = "server";
    public const string HubEndpoint = "hub.example.test:51820";

    public static readonly IPAddress HubAddress = IPAddress.Loopback;

    /// <summary>The admin API's basic-auth credentials (DELETE /api/peers/v1/{name}).</summary>
    public static readonly BasicAuthCredentials AdminCredentials = new("admin", "fixture-password");

    private readonly CancellationTokenSource _stop = new();
    private readonly List<WebApplication> _servers = [];
    private readonly bool _ownsStateDir;
    private Task _reconcileLoop = Task.CompletedTask;

    private HubFixture(string stateDir, bool ownsStateDir, int prefixLength, TimeProvider logClock, HubOptions options)
    {
        LogClock = logClock;
        Options = options;
        StateDir = stateDir;
        _ownsStateDir = ownsStateDir;
        PeersFile = new StateDirectory(stateDir).Peers;
        WireGuard = new RecordingWireGuard(PeersFile.Path);
        Pool = new AddressPool(HubAddress, prefixLength);
        Signal = new ReconcileSignal();
        RemoteApps = new RemoteAppStore(Signal, TimeProvider.System);
        LocalApps = new MutableLocalApps(Signal);
        Proxy = new RecordingProxyTable();
        Metrics = new WormholeMetrics();
        Tunnel = new TunnelSource(Signal);
        Reconciler = new Reconciler(
            new ReconcilerOptions(HubName, TimeSpan.FromHours(1)), LocalApps, RemoteApps, Tunnel,
            [new ProxySink(Proxy), new WireGuardSink(WireGuard, TimeProvider.System)], Signal, TimeProvider.System, Logs.For<Reconciler>(), metrics: Metrics);
        HubPublicKey = NewKey();
        Registry = new PeerRegistry(PeersFile, Pool, HubPublicKey, Tunnel, RemoteApps, Logs.For<PeerRegistry>(), Reconciler, new StateDirectory(stateDir).Revocations);
        Codec = new PairingCodec(InviteToken);
        HubCodec = new PairingCodec(InviteToken, options.PreviousInviteToken);
        Tokens = new JoinTokenStore(
            new JsonStateFile<StoredTokens>(new StateDirectory(stateDir).Tokens, TokenJsonContext.Default.StoredTokens), options.TokenClock ?? TimeProvider.System, Logs.For<JoinTokenStore>())
        {
            HubPublicKey = HubPublicKey,
        };
    }

    /// <summary>What this hub was started with beyond the defaults.</summary>
    public HubOptions Options { get; }

    /// <summary>The hub's join tokens (tokens.json in the state directory).</summary>
    public JoinTokenStore Tokens { get; }

    /// <summary>The hub's own codec (with <see cref="HubOptions.PreviousInviteToken"/>).</summary>
    public PairingCodec HubCodec { get; }

    public string StateDir { get; }

    /// <summary>What the registry, the reconciler and the pairing and sync endpoints logged.</summary>
    public RecordingLog Logs { get; } = new();

    /// <summary>The clock of the endpoints' refusal-log rate limiters.</summary>
    public TimeProvider LogClock { get; }

    public JsonStateFile<StoredPeers> PeersFile { get; }

    public RecordingWireGuard WireGuard { get; }

    public AddressPool Pool { get; }

    public ReconcileSignal Signal { get; }

    /// <summary>The hub's tunnel: its address and the registry's peers, as the hub's composition sets them.</summary>
    public TunnelSource Tunnel { get; }

    public RemoteAppStore RemoteApps { get; }

    public MutableLocalApps LocalApps { get; }

    public RecordingProxyTable Proxy { get; }

    public Reconciler Reconciler { get; }

    public PeerRegistry Registry { get; }

    public WormholeMetrics Metrics { get; }

    /// <summary>The codec a spoke with the right invite token uses.</summary>
    public PairingCodec Codec { get; }

    public string HubPublicKey { get; }

    public HubIdentity Identity { get; private set; } = null!;

    public Uri PairingUrl { get; private set; } = null!;

    public Uri SyncUrl { get; private set; } = null!;

    /// <summary>The admin API over the real registry, with <see cref="AdminCredentials"/>.</summary>
    public HttpClient Admin { get; private set; } = null!;

    /// <summary>What the pairing response must name as the sync server.</summary>
    public string SyncServerAddress { get; private set; } = "";

    /// <param name="prefixLength">The pool is 127.0.0.1/prefixLength (30 leaves room for exactly one spoke).</param>
    /// <param name="stateDir">An existing state directory (a "restart"); by default a fresh temp one, deleted on dispose.</param>
    /// <param name="startReconciler">False leaves the reconcile loop stopped (no plan applied yet) until <see cref="StartReconciler"/>.</param>
    /// <param name="logClock">The clock of the refusal-log rate limiters (a manual one to test them); the system's by default.</param>
    public static async Task<HubFixture> StartAsync(int prefixLength = 24, string? stateDir = null, bool startReconciler = true, TimeProvider? logClock = null, HubOptions? options = null)
    {
        var owns = stateDir is null;
        var hub = new HubFixture(stateDir ?? NewTempDir(), owns, prefixLength, logClock ?? TimeProvider.System, options ?? new HubOptions());
        try
        {
            await hub.StartCoreAsync(startReconciler);
            return hub;
        }
        catch
        {
            await hub.DisposeAsync();
            throw;
        }
    }

    public static string NewTempDir()
    {
        var dir = Path.Combine(Path.GetTempPath(), "wormhole-hub-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }

    /// <summary>A valid WireGuard public key: 32 random bytes, base64 (44 characters).</summary>
    public static string NewKey() => Convert.ToBase64String(RandomNumberGenerator.GetBytes(32));

    public static LocalApp App(string name, int port = 8080) => new(name, "127.0.0.1", port, port);

    /// <summary>An HTTP client whose connections leave from <paramref name="localAddress"/> (a peer's tunnel address).</summary>
    public static HttpClient ClientFrom(IPAddress localAddress) =>
        new(new SocketsHttpHandler
        {
            UseProxy = false,
            ConnectCallback = async (context, cancellationToken) =>
            {
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                try
                {
                    socket.Bind(new IPEndPoint(localAddress, 0));
                    await socket.ConnectAsync(context.DnsEndPoint, cancellationToken);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
        })
        {
            Timeout = TimeSpan.FromSeconds(60),
        };

    public static HttpClient ClientFrom(string localAddress) => ClientFrom(IPAddress.Parse(localAddress));

    /// <summary>Posts a pairing request encrypted with <paramref name="codec"/> (the hub's own by default).</summary>
    public async Task<HttpResponseMessage> PostPairingAsync(string name, string publicKey, PairingCodec? codec = null)
    {
        var body = (codec ?? Codec).EncodeRequest(new PairingRequest(name, new PairingWireGuard(publicKey), []));
        return await PostPairingBytesAsync(body);
    }

    public async Task<HttpResponseMessage> PostPairingBytesAsync(byte[] body)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
        using var content = new ByteArrayContent(body);
        content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/octet-stream");
        return await http.PostAsync(PairingUrl, content);
    }

    /// <summary>Pairs over HTTP and returns the decrypted response; fails the test on any other status.</summary>
    public async Task<PairingResponse> PairAsync(string name, string? publicKey = null)
    {
        using var response = await PostPairingAsync(name, publicKey ?? NewKey());
        var bytes = await response.Content.ReadAsByteArrayAsync();
        response.StatusCode.Should().Be(HttpStatusCode.OK, "pairing {0} should succeed, body: {1}", name, Encoding.UTF8.GetString(bytes));
        var decoded = Codec.DecodeResponse(bytes, out var error);
        decoded.Should().NotBeNull(error);
        return decoded!;
    }

    /// <summary>Posts a sync body from <paramref name="from"/>; <paramref name="waitFor"/> sets the long-poll header.</summary>
    public async Task<HttpResponseMessage> PostSyncAsync(string from, string json, string? waitFor = null, CancellationToken cancellationToken = default)
    {
        using var http = ClientFrom(from);
        using var request = new HttpRequestMessage(HttpMethod.Post, SyncUrl) { Content = new StringContent(json, Encoding.UTF8, "application/octet-stream") };
        if (waitFor is not null)
        {
            request.Headers.Add(SyncHeaders.Wait, waitFor);
        }

        return await http.SendAsync(request, cancellationToken);
    }

    /// <summary>Posts raw sync bytes from <paramref name="from"/> (for bodies a string cannot hold, such as invalid UTF-8).</summary>
    public async Task<HttpResponseMessage> PostSyncBytesAsync(string from, byte[] body)
    {
        using var http = ClientFrom(from);
        using var content = new ByteArrayContent(body);
        content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/octet-stream");
        return await http.PostAsync(SyncUrl, content);
    }

    /// <summary>Sets what the hub offers and waits until the reconciler advertises exactly that.</summary>
    public async Task SetLocalAppsAsync(params LocalApp[] apps)
    {
        LocalApps.Set(apps);
        var names = apps.Select(a => a.Name).Order(StringComparer.Ordinal).ToList();
        await Eventually.TrueAsync(
            () => Reconciler.Current.Advertised.Select(a => a.Name).Order(StringComparer.Ordinal).SequenceEqual(names),
            "the hub advertises [" + string.Join(", ", names) + "]");
    }

    /// <summary>The apps the hub holds for <paramref name="peer"/>, or null when it holds none.</summary>
    public PeerApps? AppsOf(string peer) => RemoteApps.Snapshot().SingleOrDefault(p => p.Peer == peer);

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        try
        {
            await _reconcileLoop;
        }
        catch (OperationCanceledException)
        {
        }

        foreach (var server in _servers)
        {
            await server.StopAsync(CancellationToken.None);
            await server.DisposeAsync();
        }

        Admin?.Dispose();
        _stop.Dispose();
        if (_ownsStateDir)
        {
            try
            {
                Directory.Delete(StateDir, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    /// <summary>Starts the reconcile loop (when <see cref="StartAsync"/> was told not to).</summary>
    public void StartReconciler() => _reconcileLoop = Task.Run(() => Reconciler.RunAsync(_stop.Token));

    private async Task StartCoreAsync(bool startReconciler)
    {
        Registry.Load();
        Tokens.Load();
        Metrics.ObservePeers(Registry);
        Tunnel.SetAddress(HubAddress);
        if (startReconciler)
        {
            StartReconciler();

            // What the first plan applies (the stored peers on WireGuard) is there when a test starts looking.
            await Reconciler.WaitForFirstPlanAsync(CancellationToken.None).WaitAsync(Eventually.Patience);
        }

        var endpointLogger = Logs.For("Endpoints");
        var sync = WebHost.Create(new IPEndPoint(HubAddress, 0), NullLoggerFactory.Instance, SyncCodec.MaxBodyBytes, app =>
            app.MapSync(Registry, RemoteApps, Reconciler, HubName, Metrics, endpointLogger, _stop.Token, LogClock, Tokens));
        SyncUrl = new Uri(await LoopbackHost.StartAsync(sync, _servers), "/sync");
        SyncServerAddress = $"http://{HubAddress}:{SyncUrl.Port}";

        Identity = new HubIdentity(HubName, HubAddress, HubPublicKey, HubEndpoint, SyncServerAddress);
        var pairing = WebHost.Create(
            new IPEndPoint(HubAddress, 0), NullLoggerFactory.Instance, 64 * 1024,
            app => app.MapPairing(HubCodec, Registry, Identity, Metrics, endpointLogger, LogClock, Tokens, Options.PskPairing),
            Options.RateLimit is { } limit ? PairingRateLimit.Middleware(limit.PerSecond, limit.Burst, Metrics, endpointLogger, LogClock) : null,
            Options.Guard);
        PairingUrl = new Uri(await LoopbackHost.StartAsync(pairing, _servers), "/pairing");
        Tokens.PairingUrl = new Uri(PairingUrl, "/");

        var admin = WebHost.Create(new IPEndPoint(HubAddress, 0), NullLoggerFactory.Instance, 64 * 1024, app =>
            app.MapAdminApi(() => [], Registry, AdminCredentials, Tokens));
        Admin = new HttpClient { BaseAddress = await LoopbackHost.StartAsync(admin, _servers), Timeout = TimeSpan.FromSeconds(30) };
    }

    /// <summary>DELETE /api/peers/v1/{name} on the admin API with the right credentials.</summary>
    public async Task<HttpResponseMessage> DeletePeerAsync(string name)
    {
        using var request = new HttpRequestMessage(HttpMethod.Delete, new Uri("/api/peers/v1/" + Uri.EscapeDataString(name), UriKind.Relative));
        request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue(
            "Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{AdminCredentials.Username}:{AdminCredentials.Password}")));
        return await Admin.SendAsync(request);
    }
}

/// <summary>How a <see cref="HubFixture"/> differs from the defaults.</summary>
internal sealed record HubOptions
{
    public string? PreviousInviteToken { get; init; }

    public bool PskPairing { get; init; } = true;

    /// <summary>The pairing rate limit per source (none by default, so other tests may pair freely).</summary>
    public (int PerSecond, int Burst)? RateLimit { get; init; }

    /// <summary>The pairing listener's connection guard (none by default).</summary>
    public ConnectionGuard? Guard { get; init; }

    /// <summary>The clock of token expiry and request timestamps.</summary>
    public TimeProvider? TokenClock { get; init; }
}

/// <summary>Starts a Kestrel app built by <see cref="WebHost.Create"/> on port 0 and tells the port it got.</summary>
internal static class LoopbackHost
{
    public static async Task<Uri> StartAsync(WebApplication app, List<WebApplication> started)
    {
        await app.StartAsync();
        started.Add(app);
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        return new Uri(address.Replace("://[::]", "://127.0.0.1", StringComparison.Ordinal));
    }
}

/// <summary>Awaits a condition with a deadline (polling; never a fixed sleep standing in for synchronisation).</summary>
internal static class Eventually
{
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(10);

    public static async Task TrueAsync(Func<bool> condition, string what, TimeSpan? timeout = null)
    {
        var watch = Stopwatch.StartNew();
        while (!condition())
        {
            if (watch.Elapsed > (timeout ?? Patience))
            {
                throw new Xunit.Sdk.XunitException($"Timed out after {watch.Elapsed.TotalSeconds:0.0} s waiting until {what}.");
            }

            await Task.Delay(10);
        }
    }
}

/// <summary>What the hub offers, changed by the test; every change requests a recompute as a real source does.</summary>
internal sealed class MutableLocalApps(ReconcileSignal signal) : ILocalAppSource
{
    private volatile IReadOnlyList<LocalApp> _apps = [];

    public IReadOnlyList<LocalApp> Current => _apps;

    public void Set(IReadOnlyList<LocalApp> apps)
    {
        _apps = apps;
        signal.Request();
    }

    public Task RunAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}

/// <summary>Records the listener specs the reconciler asks for; binds nothing, never fails.</summary>
internal sealed class RecordingProxyTable : IProxyTable
{
    private volatile IReadOnlyCollection<ListenerSpec> _active = [];

    public IReadOnlyCollection<ListenerSpec> Active => _active;

    public Task<IReadOnlyList<ListenerFailure>> ApplyAsync(IReadOnlyCollection<ListenerSpec> desired, CancellationToken cancellationToken)
    {
        _active = desired.ToList();
        return Task.FromResult<IReadOnlyList<ListenerFailure>>([]);
    }

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}

/// <summary>
/// Records the peer set the registry gives WireGuard, and what the peers file held at that moment (the hub must store
/// a peer before WireGuard hears of it). WireGuard itself is covered by the end-to-end tests.
/// </summary>
internal sealed class RecordingWireGuard(string peersFilePath) : IWireGuardDevice
{
    private readonly Lock _lock = new();
    private IReadOnlyList<WgPeer> _peers = [];
    private string? _peersFileAtLastCall;
    private int _calls;

    public string? Backend => "recording";

    public IReadOnlyList<WgPeer> Peers
    {
        get
        {
            lock (_lock)
            {
                return _peers;
            }
        }
    }

    /// <summary>The text of peers.json when the last peer set was applied (null: no file yet).</summary>
    public string? PeersFileAtLastCall
    {
        get
        {
            lock (_lock)
            {
                return _peersFileAtLastCall;
            }
        }
    }

    public int Calls
    {
        get
        {
            lock (_lock)
            {
                return _calls;
            }
        }
    }

    public Task UpAsync(WgInterfaceConfig config, CancellationToken ct) => Task.CompletedTask;

    /// <summary>While set, every SetPeersAsync throws as `wg set` does when it refuses the peer list (and applies nothing).</summary>
    public string? Refuse { get; set; }

    public Task SetPeersAsync(IReadOnlyCollection<WgPeer> peers, CancellationToken ct)
    {
        var file = File.Exists(peersFilePath) ? File.ReadAllText(peersFilePath) : null;
        lock (_lock)
        {
            _calls++;
            if (Refuse is { } reason)
            {
                throw new WireGuardCommandException("wg set", 1, reason);
            }

            _peers = peers.ToList();
            _peersFileAtLastCall = file;
        }

        return Task.CompletedTask;
    }

    public Task DownAsync(CancellationToken ct) => Task.CompletedTask;

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
