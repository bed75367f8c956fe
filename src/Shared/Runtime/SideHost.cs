using System.Diagnostics.Metrics;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Api;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Cli;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.Metrics;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Proxy;
using Wormhole.Tunnel.State;
using Wormhole.Tunnel.WireGuard;

namespace Wormhole.Tunnel.Runtime;

/// <summary>A side that offers no apps of its own (no --apps-file): it still consumes the peers' apps.</summary>
public sealed class NoLocalApps : ILocalAppSource
{
    public IReadOnlyList<LocalApp> Current => [];

    public Task RunAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}

/// <summary>
/// Everything hub and spoke share: state directory and keys, the WireGuard device, the reconcile loop with its proxy
/// table, the local app source, the admin API and metrics. The executables add pairing and sync on top.
/// </summary>
public sealed partial class SideHost : IAsyncDisposable
{
    private readonly List<WebApplication> _servers = [];
    private readonly ILogger<SideHost> _logger;
    private PrometheusExporter? _exporter;

    public SideHost(CommonSettings settings, ILoggerFactory loggerFactory, TimeProvider time, IProcessRunner runner)
    {
        Settings = settings;
        LoggerFactory = loggerFactory;
        Time = time;
        Runner = runner;
        _logger = loggerFactory.CreateLogger<SideHost>();
        State = new StateDirectory(settings.StateDir);
        Metrics = new WormholeMetrics();
        Signal = new ReconcileSignal();
        RemoteApps = new RemoteAppStore(Signal, time);
        LocalApps = settings.AppsFile is null
            ? new NoLocalApps()
            : new AppsFileSource(settings.AppsFile, Signal, loggerFactory.CreateLogger<AppsFileSource>(), time);
        Proxy = new ProxyTable(new ProxyOptions(), Metrics, loggerFactory.CreateLogger<ProxyTable>(), time);
        Reconciler = new Reconciler(
            new ReconcilerOptions(settings.Name, settings.PeerTtl), LocalApps, RemoteApps, Proxy, Signal, time, loggerFactory.CreateLogger<Reconciler>());
        WireGuard = new WgToolsDevice(runner, loggerFactory.CreateLogger<WgToolsDevice>());
        Metrics.ObserveGauge("wormhole_apps", "Apps by kind: local (offered here) and remote (exposed here).", () =>
        [
            new Measurement<long>(Reconciler.Current.LocalListeners.Length, new KeyValuePair<string, object?>("kind", "local")),
            new Measurement<long>(Reconciler.Current.RemoteListeners.Length, new KeyValuePair<string, object?>("kind", "remote")),
        ]);
    }

    public CommonSettings Settings { get; }

    public ILoggerFactory LoggerFactory { get; }

    public TimeProvider Time { get; }

    public IProcessRunner Runner { get; }

    public StateDirectory State { get; }

    public WormholeMetrics Metrics { get; }

    public ReconcileSignal Signal { get; }

    public RemoteAppStore RemoteApps { get; }

    public ILocalAppSource LocalApps { get; }

    public ProxyTable Proxy { get; }

    public Reconciler Reconciler { get; }

    public IWireGuardDevice WireGuard { get; }

    /// <summary>Checks the tools, makes the state directory, loads the key pair or creates and stores one.</summary>
    public async Task<WgKeyPair> PrepareAsync(CancellationToken cancellationToken)
    {
        if (Settings.Kubernetes)
        {
            throw new OptionsException("--kubernetes is not available in this build yet; use --apps-file.");
        }

        var missing = await WgPreflight.CheckAsync(Runner, cancellationToken);
        if (missing is not null)
        {
            throw new OptionsException(missing);
        }

        Directory.CreateDirectory(Settings.StateDir);
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(Settings.StateDir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }

        var stored = State.Keys.Read();
        if (stored is not null && WgKeys.IsValidKey(stored.PrivateKey) && WgKeys.IsValidKey(stored.PublicKey))
        {
            return new WgKeyPair(stored.PrivateKey, stored.PublicKey);
        }

        if (stored is not null)
        {
            throw new StateCorruptException(State.Keys.Path, "it does not hold a valid WireGuard key pair");
        }

        var keys = await WgKeys.GenerateAsync(Runner, cancellationToken);
        await State.Keys.WriteAsync(new StoredKeys(keys.PrivateKey, keys.PublicKey), cancellationToken);
        LogNewKeys(keys.PublicKey, State.Keys.Path);
        return keys;
    }

    /// <summary>Starts the admin API and, with --metrics, the metrics endpoint.</summary>
    public async Task StartApisAsync(IPeerDirectory? peers, BasicAuthCredentials? basicAuth, CancellationToken cancellationToken)
    {
        await StartServerAsync(WebHost.Create(Settings.ApiListen, LoggerFactory, 64 * 1024, app =>
            app.MapAdminApi(() => Reconciler.Current.Exposed, peers, basicAuth)), "admin API", cancellationToken);
        if (Settings.Metrics)
        {
            _exporter = new PrometheusExporter(WormholeMetrics.MeterName);
            var exporter = _exporter;
            await StartServerAsync(WebHost.Create(Settings.MetricsListen, LoggerFactory, 1024, app => app.MapPrometheus(exporter)), "metrics", cancellationToken);
        }
    }

    /// <summary>Starts one more HTTP server, stopped with the host.</summary>
    public async Task StartServerAsync(WebApplication server, string what, CancellationToken cancellationToken)
    {
        await server.StartAsync(cancellationToken);
        _servers.Add(server);
        LogListening(what, string.Join(", ", server.Urls));
    }

    /// <summary>The background loops: reconcile and the local app source. Completes when stopped; a loop that dies throws.</summary>
    public Task RunLoopsAsync(CancellationToken cancellationToken) =>
        Task.WhenAll(Guard(Reconciler.RunAsync(cancellationToken)), Guard(LocalApps.RunAsync(cancellationToken)));

    public async ValueTask DisposeAsync()
    {
        foreach (var server in _servers)
        {
            try
            {
                await server.StopAsync(CancellationToken.None);
                await server.DisposeAsync();
            }
            catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException)
            {
            }
        }

        await Proxy.DisposeAsync();
        _exporter?.Dispose();
        Metrics.Dispose();
    }

    private static async Task Guard(Task loop)
    {
        try
        {
            await loop;
        }
        catch (OperationCanceledException)
        {
        }
    }

    [LoggerMessage(EventId = 1400, Level = LogLevel.Information, Message = "Generated a new WireGuard key pair (public key {PublicKey}), stored in {Path}")]
    private partial void LogNewKeys(string publicKey, string path);

    [LoggerMessage(EventId = 1401, Level = LogLevel.Information, Message = "{What} listening on {Urls}")]
    private partial void LogListening(string what, string urls);
}
