using System.Diagnostics.Metrics;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Api;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Cli;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.Kubernetes;
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

    /// <summary>Nothing to watch: waits for the stop, as every background loop does.</summary>
    public Task RunAsync(CancellationToken cancellationToken) => Task.Delay(Timeout.Infinite, cancellationToken);
}

/// <summary>
/// Everything hub and spoke share: state directory and keys, the WireGuard device, the reconcile loop with its proxy
/// table, the local app source, the admin API and metrics. The executables add pairing and sync on top.
/// </summary>
public sealed partial class SideHost : IAsyncDisposable
{
    /// <summary>How long a stopping HTTP server waits for requests in flight (long-polls end at once on stop).</summary>
    private static readonly TimeSpan ServerStopTimeout = TimeSpan.FromSeconds(3);
    private readonly List<WebApplication> _servers = [];
    private int _disposed;
    private readonly ILogger<SideHost> _logger;
    private readonly KubeApi? _kubernetes;
    private PrometheusExporter? _exporter;

    /// <param name="isKnownPeer">Whether a peer name is still paired (generated objects of known peers survive a restart's grace).</param>
    public SideHost(CommonSettings settings, ILoggerFactory loggerFactory, TimeProvider time, IProcessRunner runner, Func<string, bool>? isKnownPeer = null)
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
        var sinks = new List<IPlanSink>();
        if (settings.Kubernetes)
        {
            var connection = KubeConnection.Load(new KubeConfigSources { Kubeconfig = settings.Kubeconfig, Context = settings.KubeContext });
            LogKubernetes(connection.ToString());
            _kubernetes = new KubeApi(connection, time, loggerFactory.CreateLogger<KubeApi>());
            var events = new EventRecorder(_kubernetes, "wormhole-" + settings.Name, time, loggerFactory.CreateLogger<EventRecorder>());
            LocalApps = new KubernetesAppSource(_kubernetes, settings.Name, Signal, events, time, loggerFactory);
            var podLabels = KubeNames.ParseLabels(settings.KubernetesLabels!, out _)!;
            SinkOptions = new KubernetesSinkOptions(settings.KubernetesNamespace!, podLabels, settings.NetworkPolicies, settings.Name);
            sinks.Add(new KubernetesSink(_kubernetes, SinkOptions, time, settings.GcGrace, isKnownPeer ?? (_ => true), events, loggerFactory.CreateLogger<KubernetesSink>()));
        }
        else
        {
            LocalApps = settings.AppsFile is null
                ? new NoLocalApps()
                : new AppsFileSource(settings.AppsFile, Signal, loggerFactory.CreateLogger<AppsFileSource>(), time);
        }

        Proxy = new ProxyTable(new ProxyOptions { Engine = settings.ProxyEngine }, Metrics, loggerFactory.CreateLogger<ProxyTable>(), time);
        Reconciler = new Reconciler(
            new ReconcilerOptions(settings.Name, settings.PeerTtl), LocalApps, RemoteApps, Proxy, Signal, time, loggerFactory.CreateLogger<Reconciler>(), sinks);
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

    /// <summary>Set with --kubernetes: where generated objects go.</summary>
    public KubernetesSinkOptions? SinkOptions { get; }

    /// <summary>Remote apps as /api/apps/v1 shows them: the generated Service with Kubernetes, the local listener without.</summary>
    public IEnumerable<AppDescriptor> ExposedApps() =>
        SinkOptions is null ? Reconciler.Current.Exposed : GeneratedObjects.Exposed(Reconciler.Current, SinkOptions.Namespace);

    /// <summary>Checks the tools, makes the state directory, loads the key pair or creates and stores one.</summary>
    public async Task<WgKeyPair> PrepareAsync(CancellationToken cancellationToken)
    {
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
            app.MapAdminApi(ExposedApps, peers, basicAuth)), "admin API", cancellationToken);
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

    /// <summary>
    /// The background loops — reconcile, the local app source and the executable's own (<paramref name="more"/>) —
    /// until <paramref name="cancellationToken"/> is cancelled. A loop that dies first stops the others and throws
    /// <see cref="LoopFailedException"/>.
    /// </summary>
    public Task RunLoopsAsync(CancellationToken cancellationToken, params BackgroundLoop[] more) =>
        Loops.RunAsync([new("reconcile", ReconcileWhenReadyAsync), new("local apps", LocalApps.RunAsync), .. more], _logger, cancellationToken);

    /// <summary>
    /// Stops in the order that lets peers notice at once: HTTP servers first (no new requests; long-polls already ended
    /// by the stop), then the proxy listeners. The caller takes WireGuard down after this. Safe to call twice.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }

        using (var timeout = new CancellationTokenSource(ServerStopTimeout))
        {
            await Task.WhenAll(_servers.Select(server => StopServerAsync(server, timeout.Token)));
        }

        await Proxy.DisposeAsync();
        _kubernetes?.Dispose();
        _exporter?.Dispose();
        Metrics.Dispose();
    }

    private static async Task StopServerAsync(WebApplication server, CancellationToken timeout)
    {
        try
        {
            await server.StopAsync(timeout);
            await server.DisposeAsync();
        }
        catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException)
        {
        }
    }

    /// <summary>The first plan waits for the local app source's first real answer (no start-up withdraw-all).</summary>
    private async Task ReconcileWhenReadyAsync(CancellationToken cancellationToken)
    {
        if (LocalApps is KubernetesAppSource)
        {
            LogWaitingForKubernetes();
        }

        await LocalApps.ReadyAsync(cancellationToken);
        await Reconciler.RunAsync(cancellationToken);
    }

    [LoggerMessage(EventId = 1400, Level = LogLevel.Information, Message = "Generated a new WireGuard key pair (public key {PublicKey}), stored in {Path}")]
    private partial void LogNewKeys(string publicKey, string path);

    [LoggerMessage(EventId = 1402, Level = LogLevel.Information, Message = "Waiting for the first list of Services from the Kubernetes API")]
    private partial void LogWaitingForKubernetes();

    [LoggerMessage(EventId = 1403, Level = LogLevel.Information, Message = "Kubernetes API: {Connection}")]
    private partial void LogKubernetes(string connection);

    [LoggerMessage(EventId = 1401, Level = LogLevel.Information, Message = "{What} listening on {Urls}")]
    private partial void LogListening(string what, string urls);
}
