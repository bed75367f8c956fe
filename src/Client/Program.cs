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
    internal sealed record SpokeSettings(CommonSettings Common, Uri Server, JsonElement? Metadata);

    /// <summary>The spoke's command line (design.md, "Command line").</summary>
    internal static class SpokeCli
    {
        public static RootCommand Build()
        {
            var common = new CommonCli(defaultName: null);
            var server = new Option<string>("--server") { Description = "The hub's pairing API URL", DefaultValueFactory = _ => "http://localhost:8080" };
            var metadata = new Option<string?>("--client-metadata") { Description = "JSON object sent with every sync, shown in the hub's /api/peers/v2 [default: {}]. Env: CLIENT_METADATA" };
            var root = new RootCommand("Wormhole.Tunnel spoke: pairs with a hub, syncs apps and proxies them over WireGuard.");
            common.AddTo(root);
            root.Options.Add(server);
            root.Options.Add(metadata);
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
                    return error is not null ? throw new OptionsException(error) : new SpokeSettings(c, serverUri, json);
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
        private readonly HubClient _hub;
        private readonly WgKeyPair _keys;
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
            _hub = new HubClient(settings.Server, new PairingCodec(settings.Common.InviteToken));
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
                Listener[] listeners = [.. Side.ApiListeners(c, basicAuth: null)];

                // The composition root: the side's parts and the spoke's pairing and sync loop.
                var builder = WebHost.CreateBuilder(listeners, loggerFactory);
                builder.Services.AddSide(c, TimeProvider.System, runner, sp => name => sp.GetRequiredService<Spoke>().HubName == name);
                builder.Services.AddSingleton(sp => new Spoke(settings, keys, sp, logger));
                builder.Services.AddSingleton(sp => new BackgroundLoop("sync", sp.GetRequiredService<Spoke>().PairAndSyncAsync));
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
                response = await _hub.PairAsync(new PairingRequest(_settings.Common.Name, new PairingWireGuard(_keys.PublicKey), []), cancellationToken);
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
            _tunnel.Set(new TunnelState(IPAddress.Parse(pairing.AssignedIp), [HubLink(pairing)]));
            if ((await _reconciler.ConvergeAsync(cancellationToken)).FailureOf("wireguard") is { } refused)
            {
                throw new WireGuardCommandException(refused);
            }

            _pairing = pairing;
            LogWireGuardUp(_logger, c.WgInterface, _wireGuard.Backend ?? "?", pairing.AssignedIp, pairing.WireGuard.Endpoint ?? "?");
        }

        /// <summary>The hub as this spoke's one peer: its tunnel address routed to it, dialled at its endpoint, kept alive.</summary>
        private static PeerLink HubLink(PairingResponse pairing) =>
            new(pairing.Name, pairing.WireGuard.PublicKey, IPAddress.Parse(pairing.InternalServerIp), pairing.WireGuard.Endpoint, 10);

        private static WgPeer HubPeer(PairingResponse pairing)
        {
            var link = HubLink(pairing);
            return new(link.PublicKey, [$"{link.Address}/32"], link.Endpoint, link.KeepaliveSeconds);
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

        [LoggerMessage(EventId = 3009, Level = LogLevel.Critical, Message = "Spoke cannot run: {Reason}")]
        private static partial void LogFatal(ILogger logger, string reason);

        [LoggerMessage(EventId = 3010, Level = LogLevel.Information, Message = "Spoke stopped; WireGuard interface removed")]
        private static partial void LogStopped(ILogger logger);
    }
}
