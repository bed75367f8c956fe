using System.CommandLine;
using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Api;
using Wormhole.Tunnel.Cli;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.Metrics;
using Wormhole.Tunnel.Pairing;
using Wormhole.Tunnel.Runtime;
using Wormhole.Tunnel.Server;
using Wormhole.Tunnel.Sources;
using Wormhole.Tunnel.State;
using Wormhole.Tunnel.Sync;
using Wormhole.Tunnel.WireGuard;

return await CliRunner.RunAsync(HubCli.Build(), args);

namespace Wormhole.Tunnel.Server
{
    internal sealed record HubSettings(
        CommonSettings Common,
        IPAddress InternalHost,
        int SubnetMask,
        string PublicHost,
        int WgPort,
        IPEndPoint PairingListen,
        int SyncPort,
        BasicAuthCredentials? BasicAuth)
    {
        /// <summary>The PSK accepted beside the invite token during a rotation (--previous-invite-token).</summary>
        public string? PreviousInviteToken { get; init; }

        /// <summary>False: the reference's PSK pairing is off, join tokens only (--pairing-psk=false).</summary>
        public bool PskPairing { get; init; } = true;

        /// <summary>The pairing URL join tokens carry (--pairing-public-url, else http://&lt;--wg-public-host&gt;:&lt;pairing port&gt;).</summary>
        public Uri PairingPublicUrl { get; init; } = new("http://localhost:8080/");

        public int PairingRatePerSecond { get; init; } = PairingRateLimit.DefaultPerSecond;

        public int PairingBurst { get; init; } = PairingRateLimit.DefaultBurst;

        public int MaxConnections { get; init; } = 1024;

        public int MaxConnectionsPerSource { get; init; } = 64;

        /// <summary>Never prints a secret.</summary>
        public override string ToString() => $"HubSettings {{ {Common}, PublicHost = {PublicHost}, PairingPublicUrl = {PairingPublicUrl}, PskPairing = {PskPairing} }}";
    }

    /// <summary>The hub's command line (design.md, "Command line").</summary>
    internal static class HubCli
    {
        public static RootCommand Build()
        {
            var common = new CommonCli("server");
            var internalHost = new Option<string>("--wg-internal-host") { Description = "The hub's tunnel address; the spokes' pool is its subnet", DefaultValueFactory = _ => "10.188.0.1" };
            var subnetMask = new Option<int>("--wg-subnet-mask") { Description = "Prefix length of the tunnel subnet", DefaultValueFactory = _ => 24 };
            var publicHost = new Option<string?>("--wg-public-host") { Description = "Host name or address spokes dial for WireGuard (required)" };
            var wgPort = new Option<int>("--wg-port") { Description = "WireGuard UDP port", DefaultValueFactory = _ => 51820 };
            var pairingListen = new Option<string>("--ext-server-listen-address") { Description = "Pairing API listen address", DefaultValueFactory = _ => "0.0.0.0:8080" };
            var syncPort = new Option<int>("--int-server-listen-port") { Description = "Sync API port, on the tunnel address", DefaultValueFactory = _ => 8081 };
            var basicUser = new Option<string?>("--basic-auth-username") { Description = "Enables DELETE /api/peers/v1/{name} with --basic-auth-password. Env: BASIC_AUTH_USERNAME" };
            var basicPassword = new Option<string?>("--basic-auth-password") { Description = "Env: BASIC_AUTH_PASSWORD" };
            var basicPasswordFile = new Option<string?>("--basic-auth-password-file") { Description = "File holding the basic-auth password. Env: BASIC_AUTH_PASSWORD_FILE" };
            var previousToken = new Option<string?>("--previous-invite-token") { Description = "During a PSK rotation, the old invite token: pairing accepts both. Env: PREVIOUS_INVITE_TOKEN" };
            var previousTokenFile = new Option<string?>("--previous-invite-token-file") { Description = "File holding the previous invite token. Env: PREVIOUS_INVITE_TOKEN_FILE" };
            var pskPairing = new Option<bool>("--pairing-psk") { Description = "Accept the reference's PSK pairing (POST /pairing); --pairing-psk=false leaves join tokens only", DefaultValueFactory = _ => true };
            var publicUrl = new Option<string?>("--pairing-public-url") { Description = "The pairing URL join tokens carry [default: http://<--wg-public-host>:<pairing port>]" };
            var rate = new Option<int>("--pairing-rate-limit") { Description = "Pairing requests per second per source address, after a burst of --pairing-burst; beyond: 429", DefaultValueFactory = _ => PairingRateLimit.DefaultPerSecond };
            var burst = new Option<int>("--pairing-burst") { Description = "Pairing requests a source address may send at once", DefaultValueFactory = _ => PairingRateLimit.DefaultBurst };
            var maxConnections = new Option<int>("--max-connections") { Description = "Open connections per public listener (pairing, admin API, metrics); more are closed at once", DefaultValueFactory = _ => 1024 };
            var maxPerSource = new Option<int>("--max-connections-per-source") { Description = "Open connections per source address per public listener", DefaultValueFactory = _ => 64 };

            var root = new RootCommand("Wormhole.Tunnel hub: pairs spokes, syncs apps and proxies them over WireGuard.");
            common.AddTo(root);
            foreach (var option in new Option[] { internalHost, subnetMask, publicHost, wgPort, pairingListen, syncPort, basicUser, basicPassword, basicPasswordFile, previousToken, previousTokenFile, pskPairing, publicUrl, rate, burst, maxConnections, maxPerSource })
            {
                root.Options.Add(option);
            }

            root.Subcommands.Add(TokenCli.Build());
            CliRunner.SetAction(
                root,
                common,
                result =>
                {
                    var settings = Read(common.Read(result), result, internalHost, subnetMask, publicHost, wgPort, pairingListen, syncPort, basicUser, basicPassword, basicPasswordFile);
                    var previous = Secrets.Read(result.GetValue(previousToken), result.GetValue(previousTokenFile), "PREVIOUS_INVITE_TOKEN");
                    if (previous is not null && (settings.Common.InviteToken is null || System.Text.Encoding.UTF8.GetByteCount(previous) < 6))
                    {
                        throw new OptionsException("--previous-invite-token needs an invite token too, and must be at least 6 characters.");
                    }

                    var urlText = result.GetValue(publicUrl);
                    Uri url;
                    if (urlText is null)
                    {
                        url = new Uri($"http://{FormatHost(settings.PublicHost)}:{settings.PairingListen.Port}/");
                    }
                    else if (!Uri.TryCreate(urlText.EndsWith('/') ? urlText : urlText + "/", UriKind.Absolute, out url!) || url.Scheme is not ("http" or "https") || !string.IsNullOrEmpty(url.Query) || !string.IsNullOrEmpty(url.Fragment))
                    {
                        throw new OptionsException($"--pairing-public-url '{urlText}' is not an http(s) URL such as https://hub.example.com/wormhole.");
                    }

                    int Positive(Option<int> option, int max)
                    {
                        var value = result.GetValue(option);
                        return value >= 1 && value <= max ? value : throw new OptionsException($"{option.Name} must be between 1 and {max}.");
                    }

                    return settings with
                    {
                        PreviousInviteToken = previous,
                        PskPairing = result.GetValue(pskPairing),
                        PairingPublicUrl = url,
                        PairingRatePerSecond = Positive(rate, 1_000_000),
                        PairingBurst = Positive(burst, 1_000_000),
                        MaxConnections = Positive(maxConnections, 1_000_000),
                        MaxConnectionsPerSource = Positive(maxPerSource, 1_000_000),
                    };
                },
                settings => settings.Common,
                Hub.RunAsync);
            return root;
        }

        private static string FormatHost(string host) =>
            IPAddress.TryParse(host.Trim('[', ']'), out var ip) && ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{ip}]" : host;

        private static HubSettings Read(
            CommonSettings common, ParseResult result, Option<string> internalHost, Option<int> subnetMask, Option<string?> publicHost, Option<int> wgPort,
            Option<string> pairingListen, Option<int> syncPort, Option<string?> basicUser, Option<string?> basicPassword, Option<string?> basicPasswordFile)
        {
            var hostText = result.GetValue(internalHost);
            if (!IPAddress.TryParse(hostText, out var host) || host.AddressFamily != System.Net.Sockets.AddressFamily.InterNetwork)
            {
                throw new OptionsException($"--wg-internal-host '{hostText}' is not an IPv4 address.");
            }

            var mask = result.GetValue(subnetMask);
            try
            {
                _ = new AddressPool(host, mask);
            }
            catch (ArgumentException ex)
            {
                throw new OptionsException(ex.Message.Split(" (Parameter")[0]);
            }

            var pub = result.GetValue(publicHost);
            if (string.IsNullOrWhiteSpace(pub))
            {
                throw new OptionsException("Option '--wg-public-host' is required: the host name or address spokes dial for WireGuard.");
            }

            if (Uri.CheckHostName(pub.Trim('[', ']')) == UriHostNameType.Unknown)
            {
                throw new OptionsException($"--wg-public-host '{pub}' is not a host name or address.");
            }

            var port = result.GetValue(wgPort);
            var sync = result.GetValue(syncPort);
            if (port is < 1 or > 65535 || sync is < 1 or > 65535)
            {
                throw new OptionsException("--wg-port and --int-server-listen-port must be between 1 and 65535.");
            }

            var pairingText = result.GetValue(pairingListen);
            if (!ListenAddress.TryParse(pairingText, out var pairing))
            {
                throw new OptionsException($"--ext-server-listen-address '{pairingText}' is not a listen address such as 0.0.0.0:8080.");
            }

            var user = result.GetValue(basicUser) ?? Environment.GetEnvironmentVariable("BASIC_AUTH_USERNAME");
            var password = Secrets.Read(result.GetValue(basicPassword), result.GetValue(basicPasswordFile), "BASIC_AUTH_PASSWORD");
            var auth = string.IsNullOrEmpty(user) || string.IsNullOrEmpty(password) ? null : new BasicAuthCredentials(user, password);
            return new HubSettings(common, host, mask, pub.Trim(), port, pairing, sync, auth);
        }
    }

    /// <summary>The hub's life: prepare, bring up WireGuard, serve pairing, sync and the admin API, tear down on SIGTERM.</summary>
    internal static partial class Hub
    {
        public static async Task<int> RunAsync(HubSettings settings, CancellationToken stop)
        {
            var c = settings.Common;
            using var loggerFactory = Logging.Create(c.JsonLogs, c.Debug);
            var logger = loggerFactory.CreateLogger("Wormhole.Tunnel.Server.Hub");
            var runner = new ProcessRunner();
            WebApplication? app = null;
            IWireGuardDevice? wireGuard = null;
            var wgUp = false;
            try
            {
                var keys = await Side.PrepareAsync(c, runner, logger, stop);
                var codec = new PairingCodec(c.InviteToken, settings.PreviousInviteToken);
                var pool = new AddressPool(settings.InternalHost, settings.SubnetMask);
                var tunnelPeers = pool.Network;
                var syncAddress = $"http://{settings.InternalHost}:{settings.SyncPort}";
                var identity = new HubIdentity(c.Name, settings.InternalHost, keys.PublicKey, FormatEndpoint(settings.PublicHost, settings.WgPort), syncAddress);
                var endpointLogger = loggerFactory.CreateLogger("Wormhole.Tunnel.Server.Endpoints");
                Listener[] listeners =
                [
                    new("sync API", new IPEndPoint(settings.InternalHost, settings.SyncPort), SyncCodec.MaxBodyBytes, (routes, sp) => routes.MapSync(
                        sp.GetRequiredService<PeerRegistry>(), sp.GetRequiredService<RemoteAppStore>(), sp.GetRequiredService<Reconciler>(), c.Name,
                        sp.GetRequiredService<WormholeMetrics>(), endpointLogger, sp.GetRequiredService<IHostApplicationLifetime>().ApplicationStopping,
                        tokens: sp.GetRequiredService<JoinTokenStore>(), maxMetadataBytes: c.Quotas.MaxMetadataBytes)),
                    new("pairing API", settings.PairingListen, 64 * 1024, (routes, sp) => routes.MapPairing(
                        codec, sp.GetRequiredService<PeerRegistry>(), identity, sp.GetRequiredService<WormholeMetrics>(), endpointLogger,
                        tokens: sp.GetRequiredService<JoinTokenStore>(), pskPairing: settings.PskPairing))
                    {
                        Guard = Guard("pairing API"),
                        Use = app => PairingRateLimit.Middleware(settings.PairingRatePerSecond, settings.PairingBurst, app.ApplicationServices.GetRequiredService<WormholeMetrics>(), endpointLogger)(app),
                    },
                    .. Side.ApiListeners(c, settings.BasicAuth).Select(l => l with { Guard = Guard(l.Name) }),
                ];

                ConnectionGuard Guard(string name) =>
                    new(name, settings.MaxConnections, settings.MaxConnectionsPerSource, () => tunnelPeers, loggerFactory.CreateLogger("Wormhole.Tunnel.Server.Connections"));

                // The composition root: the side's parts, the peer registry and the hub's endpoints.
                var builder = WebHost.CreateBuilder(listeners, loggerFactory);
                builder.Services.AddSide(c, TimeProvider.System, runner, sp => name => sp.GetRequiredService<PeerRegistry>().Find(name) is not null);
                builder.Services.AddSingleton(sp => new PeerRegistry(
                    sp.GetRequiredService<StateDirectory>().Peers, pool, keys.PublicKey,
                    sp.GetRequiredService<TunnelSource>(), sp.GetRequiredService<RemoteAppStore>(), sp.GetRequiredService<ILogger<PeerRegistry>>(), sp.GetRequiredService<Reconciler>(),
                    sp.GetRequiredService<StateDirectory>().Revocations));
                builder.Services.AddSingleton<IPeerDirectory>(sp => sp.GetRequiredService<PeerRegistry>());
                builder.Services.AddSingleton(sp => new JoinTokenStore(
                    new JsonStateFile<StoredTokens>(sp.GetRequiredService<StateDirectory>().Tokens, TokenJsonContext.Default.StoredTokens), TimeProvider.System, sp.GetRequiredService<ILogger<JoinTokenStore>>())
                {
                    PairingUrl = settings.PairingPublicUrl,
                    HubPublicKey = keys.PublicKey,
                });
                builder.Services.AddSingleton<IJoinTokenIssuer>(sp => sp.GetRequiredService<JoinTokenStore>());
                app = builder.Build();
                app.MapListeners(listeners);

                // The interface first; its peers (the stored ones) come with the first plan, as every later change does.
                var registry = app.Services.GetRequiredService<PeerRegistry>();
                registry.Load();
                app.Services.GetRequiredService<JoinTokenStore>().Load();
                wireGuard = app.Services.GetRequiredService<IWireGuardDevice>();
                await wireGuard.UpAsync(new WgInterfaceConfig(c.WgInterface, keys.PrivateKey, $"{settings.InternalHost}/{settings.SubnetMask}", settings.WgPort, []), stop);
                wgUp = true;
                LogWireGuardUp(logger, c.WgInterface, wireGuard.Backend ?? "?", $"{settings.InternalHost}/{settings.SubnetMask}", settings.WgPort, registry.List().Count);
                app.Services.GetRequiredService<TunnelSource>().SetAddress(settings.InternalHost, tunnelPeers);
                if (!settings.PskPairing)
                {
                    LogPskOff(logger);
                }
                else if (!codec.Encrypted)
                {
                    LogNoToken(logger);
                }

                app.Services.GetRequiredService<WormholeMetrics>().ObservePeers(registry);
                var code = await Side.RunAsync(app, listeners, logger, () => LogStarted(logger, c.Name), stop);
                if (app.Services.GetRequiredService<ExitStatus>().Failure is { } failure)
                {
                    LogFatal(logger, failure);
                }

                return code;
            }
            catch (Exception ex) when (ex is OptionsException or StateCorruptException or WireGuardCommandException or IOException or Kubernetes.KubeConfigException)
            {
                LogFatal(logger, ex.Message);
                return 1;
            }
            finally
            {
                // The host (listeners; long-polls end with the stop) and proxy listeners first, so spokes see the hub go
                // at once; WireGuard last.
                if (app is not null)
                {
                    await Side.StopAsync(app);
                }

                if (wgUp)
                {
                    await wireGuard!.DownAsync(CancellationToken.None);
                }

                if (app is not null)
                {
                    await app.DisposeAsync();
                }

                LogStopped(logger);
            }
        }

        private static string FormatEndpoint(string host, int port) =>
            IPAddress.TryParse(host.Trim('[', ']'), out var ip) && ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{ip}]:{port}" : $"{host}:{port}";

        [LoggerMessage(EventId = 2200, Level = LogLevel.Information, Message = "WireGuard interface {Interface} up ({Backend}), address {Address}, port {Port}, {Peers} peer(s)")]
        private static partial void LogWireGuardUp(ILogger logger, string @interface, string backend, string address, int port, int peers);

        [LoggerMessage(EventId = 2201, Level = LogLevel.Warning, Message = "No invite token set: pairing is NOT encrypted and anyone who reaches the pairing API can pair")]
        private static partial void LogNoToken(ILogger logger);

        [LoggerMessage(EventId = 2205, Level = LogLevel.Information, Message = "PSK pairing is off (--pairing-psk=false): spokes pair with join tokens only")]
        private static partial void LogPskOff(ILogger logger);

        [LoggerMessage(EventId = 2202, Level = LogLevel.Information, Message = "Hub {Name} started")]
        private static partial void LogStarted(ILogger logger, string name);

        [LoggerMessage(EventId = 2203, Level = LogLevel.Critical, Message = "Hub cannot run: {Reason}")]
        private static partial void LogFatal(ILogger logger, string reason);

        [LoggerMessage(EventId = 2204, Level = LogLevel.Information, Message = "Hub stopped; WireGuard interface removed")]
        private static partial void LogStopped(ILogger logger);
    }
}
