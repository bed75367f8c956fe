using System.CommandLine;
using System.Net;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Cli;
using Wormhole.Tunnel.Client;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.Metrics;
using Wormhole.Tunnel.Pairing;
using Wormhole.Tunnel.Resilience;
using Wormhole.Tunnel.Runtime;
using Wormhole.Tunnel.Sources;
using Wormhole.Tunnel.State;
using Wormhole.Tunnel.Sync;
using Wormhole.Tunnel.WireGuard;

return await CliRunner.RunAsync(SpokeCli.Build(), args);

namespace Wormhole.Tunnel.Client
{
    internal sealed record SpokeSettings(CommonSettings Common, Uri Server, JsonElement? Metadata)
    {
        /// <summary>Pair with this join token (--join-token) instead of the invite token at --server.</summary>
        public JoinToken? JoinToken { get; init; }

        /// <summary>Rotate the WireGuard key through the tunnel this often (--key-rotation-interval); null: never.</summary>
        public TimeSpan? KeyRotationInterval { get; init; }

        public override string ToString() => $"SpokeSettings {{ {Common}, Server = {Server}, JoinToken = {(JoinToken is null ? "none" : "(hidden)")} }}";
    }

    /// <summary>The spoke's command line (design.md, "Command line").</summary>
    internal static class SpokeCli
    {
        public static RootCommand Build()
        {
            var common = new CommonCli(defaultName: null);
            var server = new Option<string>("--server") { Description = "The hub's pairing API URL", DefaultValueFactory = _ => "http://localhost:8080" };
            var metadata = new Option<string?>("--client-metadata") { Description = "JSON object sent with every sync, shown in the hub's /api/peers/v2 [default: {}]. Env: CLIENT_METADATA" };
            var joinToken = new Option<string?>("--join-token") { Description = "A join token from `wormhole-server token create` (it holds the hub's URL; no --server or --invite-token needed). Env: JOIN_TOKEN" };
            var joinTokenFile = new Option<string?>("--join-token-file") { Description = "File holding the join token. Env: JOIN_TOKEN_FILE" };
            var rotation = new Option<string?>("--key-rotation-interval") { Description = "Rotate this spoke's WireGuard key through the tunnel this often (e.g. 24h); same address and apps, no re-pairing [default: never]" };
            var root = new RootCommand("Wormhole.Tunnel spoke: pairs with a hub, syncs apps and proxies them over WireGuard.");
            common.AddTo(root);
            root.Options.Add(server);
            root.Options.Add(metadata);
            root.Options.Add(joinToken);
            root.Options.Add(joinTokenFile);
            root.Options.Add(rotation);
            CliRunner.SetAction(
                root,
                common,
                result =>
                {
                    var c = common.Read(result);
                    if (!Names.IsValidPeerName(c.Name))
                    {
                        throw new OptionsException($"--name '{c.Name}' must be a DNS label: 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit.");
                    }

                    var serverText = result.GetValue(server)!;
                    if (!Uri.TryCreate(serverText.EndsWith('/') ? serverText : serverText + "/", UriKind.Absolute, out var serverUri) || serverUri.Scheme is not ("http" or "https"))
                    {
                        throw new OptionsException($"--server '{serverText}' is not an http(s) URL such as http://hub.example.com:8080.");
                    }

                    var json = ClientMetadata.Parse(result.GetValue(metadata) ?? Environment.GetEnvironmentVariable("CLIENT_METADATA") ?? "{}", out var error);
                    if (error is not null)
                    {
                        throw new OptionsException(error);
                    }

                    JoinToken? token = null;
                    if (Secrets.Read(result.GetValue(joinToken), result.GetValue(joinTokenFile), "JOIN_TOKEN") is { } tokenText)
                    {
                        token = JoinToken.TryParse(tokenText, out var tokenError) ?? throw new OptionsException($"--join-token: {tokenError}.");
                        serverUri = token.PairingUrl;
                    }

                    TimeSpan? interval = null;
                    if (result.GetValue(rotation) is { } rotationText)
                    {
                        interval = Durations.TryParse(rotationText, out var every) && every >= TimeSpan.FromSeconds(1)
                            ? every
                            : throw new OptionsException($"--key-rotation-interval '{rotationText}' is not a duration of at least 1s, such as 24h.");
                    }

                    return new SpokeSettings(c, serverUri, json) { JoinToken = token, KeyRotationInterval = interval };
                },
                settings => settings.Common,
                Spoke.RunAsync);
            return root;
        }
    }

    /// <summary>The spoke's life: pair (or reuse the cached pairing), bring up WireGuard, sync until stopped.</summary>
    internal sealed partial class Spoke
    {
        private readonly SpokeSettings _settings;
        private readonly StateDirectory _state;
        private readonly IWireGuardDevice _wireGuard;
        private readonly Reconciler _reconciler;
        private readonly TunnelSource _tunnel;
        private readonly RemoteAppStore _remoteApps;
        private readonly WormholeMetrics _metrics;
        private readonly RetryPipelines _retries;
        private readonly TimeProvider _time;
        private readonly IProcessRunner _runner;
        private readonly HubClient _hub;
        private volatile WgKeyPair _keys;
        private readonly ILogger _logger;
        private readonly PairingResponse? _cached;
        private volatile PairingResponse? _pairing;

        private Spoke(SpokeSettings settings, WgKeyPair keys, IServiceProvider services, ILogger logger)
        {
            _settings = settings;
            _keys = keys;
            _logger = logger;
            _state = services.GetRequiredService<StateDirectory>();
            _wireGuard = services.GetRequiredService<IWireGuardDevice>();
            _reconciler = services.GetRequiredService<Reconciler>();
            _tunnel = services.GetRequiredService<TunnelSource>();
            _remoteApps = services.GetRequiredService<RemoteAppStore>();
            _metrics = services.GetRequiredService<WormholeMetrics>();
            _retries = services.GetRequiredService<RetryPipelines>();
            _time = services.GetRequiredService<TimeProvider>();
            _runner = services.GetRequiredService<IProcessRunner>();
            _hub = new HubClient(settings.Server, new PairingCodec(settings.Common.InviteToken)) { JoinToken = settings.JoinToken, Time = _time };
            _cached = _state.PairingCache.Read();
        }

        /// <summary>
        /// The hub this spoke is paired with, from the cache until pairing is re-established: its generated objects
        /// survive a restart's grace (they are the hub's, not an unknown peer's).
        /// </summary>
        private string? HubName => (_pairing ?? _cached)?.Name;

        public static async Task<int> RunAsync(SpokeSettings settings, CancellationToken stop)
        {
            var c = settings.Common;
            using var loggerFactory = Logging.Create(c.JsonLogs, c.Debug);
            var logger = loggerFactory.CreateLogger("Wormhole.Tunnel.Client.Spoke");
            var runner = new ProcessRunner();
            WebApplication? app = null;
            Spoke? spoke = null;
            try
            {
                var keys = await Side.PrepareAsync(c, runner, logger, stop);
                // Through the tunnel the hub can reach every address of this side: these listeners refuse it.
                Func<System.Net.IPNetwork?> hubNetwork = () => app?.Services.GetService<TunnelSource>()?.Current.PeerNetwork;
                Listener[] listeners = [.. Side.ApiListeners(c, basicAuth: null).Select(l => l with
                {
                    Guard = new ConnectionGuard(l.Name, 1024, 64, hubNetwork, loggerFactory.CreateLogger("Wormhole.Tunnel.Client.Connections")),
                })];

                // The composition root: the side's parts and the spoke's pairing and sync loop.
                var builder = WebHost.CreateBuilder(listeners, loggerFactory);
                builder.Services.AddSide(c, TimeProvider.System, runner, sp => name => sp.GetRequiredService<Spoke>().HubName == name);
                builder.Services.AddSingleton(sp => new Spoke(settings, keys, sp, logger));
                builder.Services.AddSingleton(sp => new BackgroundLoop("sync", sp.GetRequiredService<Spoke>().PairAndSyncAsync));
                if (settings.KeyRotationInterval is { } every)
                {
                    builder.Services.AddSingleton(sp => new BackgroundLoop("key rotation", ct => sp.GetRequiredService<Spoke>().RotateEveryAsync(every, ct)));
                }
                app = builder.Build();
                app.MapListeners(listeners);
                spoke = app.Services.GetRequiredService<Spoke>();
                var paired = spoke;
                var metrics = app.Services.GetRequiredService<WormholeMetrics>();
                // Sync series of a hub we are no longer paired with (it changed its name) go.
                metrics.OnCollect(() => metrics.RetainPeers(paired._pairing is { } p ? [p.Name] : []));
                var code = await Side.RunAsync(app, listeners, logger, () => { }, stop);
                if (app.Services.GetRequiredService<ExitStatus>().Failure is { } failure)
                {
                    LogFatal(logger, failure);
                }

                return code;
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return 0;
            }
            catch (Exception ex) when (ex is OptionsException or StateCorruptException or WireGuardCommandException or IOException or Kubernetes.KubeConfigException)
            {
                LogFatal(logger, ex.Message);
                return 1;
            }
            finally
            {
                // The host and proxy listeners first, WireGuard last.
                if (app is not null)
                {
                    await Side.StopAsync(app);
                }

                spoke?._hub.Dispose();
                if (spoke?._pairing is not null)
                {
                    await spoke._wireGuard.DownAsync(CancellationToken.None);
                }

                if (app is not null)
                {
                    await app.DisposeAsync();
                }

                LogStopped(logger);
            }
        }

        private async Task PairAndSyncAsync(CancellationToken stop)
        {
            await EstablishAsync(stop);
            var loop = new SyncLoop(
                _hub, () => _pairing!, TryRepairAsync, RenewTunnelAsync, _reconciler, _remoteApps, _settings.Common.Name, _settings.Metadata,
                _metrics, _retries, _time, _logger);
            await loop.RunAsync(stop);
        }

        /// <summary>Reuses the cached pairing when the hub answers through the tunnel, otherwise pairs (retrying with backoff).</summary>
        private async Task EstablishAsync(CancellationToken stop)
        {
            var cached = _cached;
            if (cached is not null && cached.SyncServerAddress is not null)
            {
                await ApplyAsync(cached, stop);
                await ResolvePendingRotationAsync(cached, stop);
                cached = _pairing ?? cached;
                LogTryingCache(_logger, cached.InternalServerIp);
                if (await ProbeAsync(cached, stop))
                {
                    LogUsingCache(_logger, cached.InternalServerIp, cached.AssignedIp);
                    _metrics.Pairing("cached");
                    return;
                }

                LogCacheFailed(_logger, cached.InternalServerIp);
            }
            else
            {
                LogNoCache(_logger);
            }

            // Until it works: the spoke has nothing to do before it is paired.
            var retry = _retries.Build(
                RetrySchedule.Pairing,
                int.MaxValue,
                ex => ex is HubCallException or WireGuardCommandException,
                (notice, _) =>
                {
                    LogPairingFailed(_logger, notice.Attempt, notice.Problem?.Message ?? "?", notice.Delay.TotalSeconds);
                    return ValueTask.CompletedTask;
                });
            await retry.ExecuteAsync(token => new ValueTask(PairOnceAsync(token)), stop);
        }

        private async Task PairOnceAsync(CancellationToken cancellationToken)
        {
            var started = _time.GetTimestamp();
            PairingResponse response;
            try
            {
                response = await _hub.PairAsync(
                    new PairingRequest(_settings.Common.Name, new PairingWireGuard(_keys.PublicKey), new Dictionary<string, string> { [PairingRequest.WantsPresharedKeyKey] = "1" }),
                    cancellationToken);
                await ApplyAsync(response, cancellationToken);
                await _state.PairingCache.WriteAsync(response, cancellationToken);
            }
            catch (Exception ex) when (ex is HubCallException or WireGuardCommandException)
            {
                _metrics.Pairing("error", _time.GetElapsedTime(started));
                throw;
            }

            _metrics.Pairing("paired", _time.GetElapsedTime(started));
            LogPaired(_logger, response.AssignedIp);
        }

        private async Task<bool> ProbeAsync(PairingResponse pairing, CancellationToken stop)
        {
            var syncBase = new Uri(pairing.SyncServerAddress!.EndsWith('/') ? pairing.SyncServerAddress : pairing.SyncServerAddress + "/");
            for (var attempt = 0; attempt < 5; attempt++)
            {
                if (await _hub.ProbeAsync(syncBase, TimeSpan.FromSeconds(2), stop))
                {
                    return true;
                }
            }

            return false;
        }

        /// <summary>
        /// Configures WireGuard from a pairing response: the interface (address, route to the hub) here, the hub as the
        /// one peer through the tunnel source and the next plan. Returns once that plan is applied; throws when
        /// WireGuard refused it.
        /// </summary>
        private async Task ApplyAsync(PairingResponse pairing, CancellationToken cancellationToken)
        {
            if (_pairing is not null && _pairing == pairing)
            {
                return;
            }

            var c = _settings.Common;
            await _wireGuard.UpAsync(new WgInterfaceConfig(c.WgInterface, _keys.PrivateKey, $"{pairing.AssignedIp}/32", null, [$"{pairing.InternalServerIp}/32"]), cancellationToken);
            var hub = IPAddress.Parse(pairing.InternalServerIp);
            _tunnel.Set(new TunnelState(IPAddress.Parse(pairing.AssignedIp), [HubLink(pairing)]) { PeerNetwork = new System.Net.IPNetwork(hub, hub.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? 32 : 128) });
            if ((await _reconciler.ConvergeAsync(cancellationToken)).FailureOf("wireguard") is { } refused)
            {
                throw new WireGuardCommandException(refused);
            }

            _pairing = pairing;
            LogWireGuardUp(_logger, c.WgInterface, _wireGuard.Backend ?? "?", pairing.AssignedIp, pairing.WireGuard.Endpoint ?? "?");
        }

        /// <summary>The hub as this spoke's one peer: its tunnel address routed to it, dialled at its endpoint, kept alive.</summary>
        private static PeerLink HubLink(PairingResponse pairing) =>
            new(pairing.Name, pairing.WireGuard.PublicKey, IPAddress.Parse(pairing.InternalServerIp), pairing.WireGuard.Endpoint, 10,
                WgKeys.IsValidKey(pairing.PresharedKey) ? pairing.PresharedKey : null);

        private static WgPeer HubPeer(PairingResponse pairing)
        {
            var link = HubLink(pairing);
            return new(link.PublicKey, [$"{link.Address}/32"], link.Endpoint, link.KeepaliveSeconds, link.PresharedKey);
        }

        /// <summary>
        /// Drops the WireGuard session with the hub (the peer removed and set again), so the next packet starts a fresh
        /// handshake. A hub that restarted has a new interface that knows nothing of the old session and answers none
        /// of its packets; left alone, WireGuard gives up on that session only after about 15 s of silence — the length
        /// of the restarted hub's grace for our generated objects.
        /// </summary>
        private async Task RenewTunnelAsync(CancellationToken stop)
        {
            if (_pairing is not { } pairing)
            {
                return;
            }

            try
            {
                await _wireGuard.SetPeersAsync([], stop);
                await _wireGuard.SetPeersAsync([HubPeer(pairing)], stop);
                LogTunnelRenewed(_logger);
            }
            catch (WireGuardCommandException ex)
            {
                LogTunnelRenewFailed(_logger, ex.Message);
            }
        }

        /// <summary>Rotates the key every <paramref name="every"/> once paired; a rotation that fails is tried again at the next one.</summary>
        internal async Task RotateEveryAsync(TimeSpan every, CancellationToken stop)
        {
            while (!stop.IsCancellationRequested)
            {
                await Task.Delay(every, _time, stop);
                if (_pairing is null)
                {
                    continue;
                }

                try
                {
                    await RotateOnceAsync(stop);
                }
                catch (Exception ex) when (ex is HubCallException or WireGuardCommandException or IOException)
                {
                    LogRotationFailed(_logger, ex.Message);
                }
            }
        }

        /// <summary>
        /// One key rotation through the tunnel: a new key pair and preshared key are stored (keys-next.json) before the
        /// hub is asked, so a crash or a lost answer never leaves the spoke without the key the hub has. When the hub
        /// agreed, this side switches; when the answer was lost, whichever pair reaches the hub is kept.
        /// </summary>
        internal async Task RotateOnceAsync(CancellationToken stop)
        {
            var pairing = _pairing ?? throw new HubCallException("not paired yet");
            var next = await WgKeys.GenerateAsync(_runner, stop);
            var rotation = new StoredRotation(next.PrivateKey, next.PublicKey, Convert.ToBase64String(System.Security.Cryptography.RandomNumberGenerator.GetBytes(32)));
            await _state.NextKeys.WriteAsync(rotation, stop);
            try
            {
                await _hub.RotateAsync(SyncBaseOf(pairing), new KeyRotation(rotation.PublicKey, rotation.PresharedKey), stop);
            }
            catch (HubCallException ex) when (ex.Status is not null)
            {
                File.Delete(_state.NextKeys.Path); // refused: nothing changed on either side
                throw;
            }
            catch (HubCallException)
            {
                // No answer: the hub may or may not have switched. Whichever pair reaches it is the one it has.
                if (await TryKeysAsync(rotation, stop))
                {
                    return;
                }

                await ApplyKeysAsync(_keys, pairing, stop);
                File.Delete(_state.NextKeys.Path);
                throw;
            }

            await CommitRotationAsync(rotation, pairing, stop);
        }

        /// <summary>At start: a rotation left half done (keys-next.json) is finished when the hub has the new key, else dropped.</summary>
        private async Task ResolvePendingRotationAsync(PairingResponse cached, CancellationToken stop)
        {
            if (_state.NextKeys.Read() is not { } pending)
            {
                return;
            }

            _pairing = null;
            if (await TryKeysAsync(pending, stop))
            {
                return;
            }

            _pairing = null;
            File.Delete(_state.NextKeys.Path);
            await ApplyAsync(cached, stop);
        }

        /// <summary>Switches to the rotation's keys and probes the hub; on success commits them, else returns false (still switched).</summary>
        private async Task<bool> TryKeysAsync(StoredRotation rotation, CancellationToken stop)
        {
            var pairing = _pairing ?? _cached!;
            var moved = pairing with { Metadata = WithPresharedKey(pairing.Metadata, rotation.PresharedKey) };
            await ApplyKeysAsync(new WgKeyPair(rotation.PrivateKey, rotation.PublicKey), moved, stop);
            if (await ProbeAsync(moved, stop))
            {
                await CommitRotationAsync(rotation, pairing, stop);
                return true;
            }

            return false;
        }

        private async Task ApplyKeysAsync(WgKeyPair keys, PairingResponse pairing, CancellationToken stop)
        {
            _keys = keys;
            _pairing = null;
            await ApplyAsync(pairing, stop);
        }

        private async Task CommitRotationAsync(StoredRotation rotation, PairingResponse pairing, CancellationToken stop)
        {
            var keys = new WgKeyPair(rotation.PrivateKey, rotation.PublicKey);
            var moved = pairing with { Metadata = WithPresharedKey(pairing.Metadata, rotation.PresharedKey) };
            if (_keys.PublicKey != keys.PublicKey || _pairing != moved)
            {
                await ApplyKeysAsync(keys, moved, stop);
            }

            await _state.Keys.WriteAsync(new StoredKeys(keys.PrivateKey, keys.PublicKey), stop);
            await _state.PairingCache.WriteAsync(moved, stop);
            File.Delete(_state.NextKeys.Path);
            LogRotated(_logger, keys.PublicKey);
        }

        private static Dictionary<string, string> WithPresharedKey(Dictionary<string, string>? metadata, string presharedKey) =>
            new(metadata ?? [], StringComparer.Ordinal) { [PairingResponse.PresharedKeyKey] = presharedKey };

        private static Uri SyncBaseOf(PairingResponse pairing) =>
            new(pairing.SyncServerAddress!.EndsWith('/') ? pairing.SyncServerAddress : pairing.SyncServerAddress + "/");

        /// <summary>One pairing attempt from inside the sync loop (the hub forgot us, or the tunnel has been dead for a while).</summary>
        private async Task TryRepairAsync(CancellationToken stop)
        {
            try
            {
                await PairOnceAsync(stop);
            }
            catch (Exception ex) when (ex is HubCallException or WireGuardCommandException)
            {
                LogPairingFailed(_logger, 1, ex.Message, 0);
            }
        }

        [LoggerMessage(EventId = 3000, Level = LogLevel.Information, Message = "Paired with server, assigned IP: {Ip}")]
        private static partial void LogPaired(ILogger logger, string ip);

        [LoggerMessage(EventId = 3001, Level = LogLevel.Information, Message = "Trying to reach server {Ip} through the tunnel with the config from the cache")]
        private static partial void LogTryingCache(ILogger logger, string ip);

        [LoggerMessage(EventId = 3002, Level = LogLevel.Information, Message = "Successfully reached server {Ip} through the tunnel, using IP from the cache: {Assigned}")]
        private static partial void LogUsingCache(ILogger logger, string ip, string assigned);

        [LoggerMessage(EventId = 3003, Level = LogLevel.Warning, Message = "Server {Ip} did not answer through the tunnel with the cached config; pairing again")]
        private static partial void LogCacheFailed(ILogger logger, string ip);

        [LoggerMessage(EventId = 3004, Level = LogLevel.Information, Message = "No cached pairing response found, pairing with server")]
        private static partial void LogNoCache(ILogger logger);

        [LoggerMessage(EventId = 3005, Level = LogLevel.Warning, Message = "Pairing attempt {Attempt} failed: {Reason}; retrying in {Seconds:0.0} s")]
        private static partial void LogPairingFailed(ILogger logger, int attempt, string reason, double seconds);

        [LoggerMessage(EventId = 3006, Level = LogLevel.Information, Message = "WireGuard interface {Interface} up ({Backend}), address {Address}, hub endpoint {Endpoint}")]
        private static partial void LogWireGuardUp(ILogger logger, string @interface, string backend, string address, string endpoint);

        [LoggerMessage(EventId = 3011, Level = LogLevel.Information, Message = "Renewed the WireGuard session with the hub (the next packet starts a new handshake)")]
        private static partial void LogTunnelRenewed(ILogger logger);

        [LoggerMessage(EventId = 3012, Level = LogLevel.Warning, Message = "Could not renew the WireGuard session with the hub: {Reason}")]
        private static partial void LogTunnelRenewFailed(ILogger logger, string reason);

        [LoggerMessage(EventId = 3013, Level = LogLevel.Information, Message = "Rotated the WireGuard key through the tunnel: new public key {PublicKey} (same address, same apps)")]
        private static partial void LogRotated(ILogger logger, string publicKey);

        [LoggerMessage(EventId = 3014, Level = LogLevel.Warning, Message = "Key rotation failed: {Reason}; the current key stays and it is tried again at the next interval")]
        private static partial void LogRotationFailed(ILogger logger, string reason);

        [LoggerMessage(EventId = 3009, Level = LogLevel.Critical, Message = "Spoke cannot run: {Reason}")]
        private static partial void LogFatal(ILogger logger, string reason);

        [LoggerMessage(EventId = 3010, Level = LogLevel.Information, Message = "Spoke stopped; WireGuard interface removed")]
        private static partial void LogStopped(ILogger logger);
    }
}
