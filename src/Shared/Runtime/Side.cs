using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Api;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Cli;
using Wormhole.Tunnel.Global;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.HttpProxy;
using Wormhole.Tunnel.Kubernetes;
using Wormhole.Tunnel.Metrics;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Proxy;
using Wormhole.Tunnel.Resilience;
using Wormhole.Tunnel.Sinks;
using Wormhole.Tunnel.Sources;
using Wormhole.Tunnel.State;
using Wormhole.Tunnel.WireGuard;

namespace Wormhole.Tunnel.Runtime;

/// <summary>How the process ends: 0 unless a background loop died (then 1, with the reason).</summary>
public sealed class ExitStatus
{
    private volatile string? _failure;

    public int Code => _failure is null ? 0 : 1;

    public string? Failure => _failure;

    public void Fail(string reason) => _failure ??= reason;
}

/// <summary>
/// The side's background loops as one hosted service: the first loop that dies stops the others and the host, and the
/// process exits 1 (a side that keeps serving with a dead loop looks healthy and is wrong).
/// </summary>
public sealed class LoopsService(IEnumerable<BackgroundLoop> loops, IHostApplicationLifetime lifetime, ExitStatus exit, ILogger<LoopsService> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        try
        {
            await Loops.RunAsync([.. loops], logger, stoppingToken);
        }
        catch (LoopFailedException ex)
        {
            exit.Fail(ex.Message);
            lifetime.StopApplication();
        }
    }
}

/// <summary>
/// The composition of everything hub and spoke share: state directory, metrics and retry pipelines, the local app
/// source (an apps file or Kubernetes), the reconcile loop with its proxy table and sinks, the WireGuard device, the
/// admin API and metrics listeners. Each executable adds pairing and sync on top, in its own composition root.
/// </summary>
public static partial class Side
{
    /// <summary>How long a stopping host waits for requests in flight (long-polls end at once on stop).</summary>
    public static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(3);

    /// <param name="isKnownPeer">Given the services, whether a peer name is still paired (generated objects of known peers survive a restart's grace).</param>
    public static IServiceCollection AddSide(
        this IServiceCollection services, CommonSettings settings, TimeProvider time, IProcessRunner runner, Func<IServiceProvider, Func<string, bool>> isKnownPeer)
    {
        services.Configure<HostOptions>(o => o.ShutdownTimeout = StopTimeout);
        services.AddSingleton(settings);
        services.AddSingleton(time);
        services.AddSingleton(runner);
        services.AddSingleton(new StateDirectory(settings.StateDir));
        services.AddSingleton<ExitStatus>();
        services.AddSingleton(_ => new WormholeMetrics());
        services.AddSingleton(sp => new RetryPipelines(
            sp.GetRequiredService<ILogger<RetryPipelines>>(),
            time,
            notice => sp.GetRequiredService<WormholeMetrics>().Retried(notice.Operation)));
        services.AddSingleton<ReconcileSignal>();
        services.AddSingleton(sp => Health.ForSide(sp, settings.StuckAfter));
        services.AddSingleton(sp => new RemoteAppStore(sp.GetRequiredService<ReconcileSignal>(), time, settings.Quotas.MaxAppsPerPeer));
        services.AddSingleton(sp => new TunnelSource(sp.GetRequiredService<ReconcileSignal>()));
        if (settings.Kubernetes)
        {
            services.AddSingleton(sp =>
            {
                var connection = KubeConnection.Load(new KubeConfigSources { Kubeconfig = settings.Kubeconfig, Context = settings.KubeContext });
                LogKubernetes(sp.GetRequiredService<ILogger<KubeApi>>(), connection.ToString());
                var metrics = sp.GetRequiredService<WormholeMetrics>();
                return new KubeApi(connection, time, sp.GetRequiredService<ILogger<KubeApi>>()) { OnRetry = notice => metrics.Retried(notice.Operation) };
            });
            services.AddSingleton(sp => new EventRecorder(sp.GetRequiredService<KubeApi>(), "wormhole-" + settings.Name, time, sp.GetRequiredService<ILogger<EventRecorder>>()));
            services.AddSingleton<ILocalAppSource>(sp => new KubernetesAppSource(
                sp.GetRequiredService<KubeApi>(), settings.Name, sp.GetRequiredService<ReconcileSignal>(), sp.GetRequiredService<EventRecorder>(), time, sp.GetRequiredService<ILoggerFactory>()));
            services.AddSingleton(new KubernetesSinkOptions(
                settings.KubernetesNamespace!, KubeNames.ParseLabels(settings.KubernetesLabels!, out _)!, settings.NetworkPolicies, settings.Name));
            services.AddSingleton(sp => new KubernetesSink(
                sp.GetRequiredService<KubeApi>(), sp.GetRequiredService<KubernetesSinkOptions>(), time, settings.GcGrace, isKnownPeer(sp),
                sp.GetRequiredService<EventRecorder>(), sp.GetRequiredService<ILogger<KubernetesSink>>(), sp.GetRequiredService<ReconcileSignal>())
            {
                GlobalSites = sp.GetService<GlobalSites>() is { } sites ? sites.Describe : null,
            });
            services.AddSingleton<IPlanSink>(sp => sp.GetRequiredService<KubernetesSink>());
            services.AddSingleton(sp => new BackgroundLoop("generated objects informer", sp.GetRequiredService<KubernetesSink>().RunAsync));
        }
        else if (settings.AppsFile is { } appsFile)
        {
            services.AddSingleton<ILocalAppSource>(sp => new AppsFileSource(appsFile, sp.GetRequiredService<ReconcileSignal>(), sp.GetRequiredService<ILogger<AppsFileSource>>(), time));
        }
        else
        {
            services.AddSingleton<ILocalAppSource, NoLocalApps>();
        }

        services.AddSingleton(sp => new ProxyTable(
            new ProxyOptions { Engine = settings.ProxyEngine }, sp.GetRequiredService<WormholeMetrics>(), sp.GetRequiredService<ILogger<ProxyTable>>(), time));
        services.AddSingleton(sp => new HttpProxyServer(
            sp.GetRequiredService<WormholeMetrics>(), sp.GetService<GlobalSites>(), sp.GetRequiredService<ILoggerFactory>(), time));
        services.AddSingleton<IWireGuardDevice>(sp => new WgToolsDevice(new HealthWatchedRunner(runner, sp.GetRequiredService<Health>()), sp.GetRequiredService<ILogger<WgToolsDevice>>(), sp.GetRequiredService<RetryPipelines>().WireGuard));
        services.AddSingleton(sp =>
        {
            // The sinks in the order a plan is applied: listeners first (what they cannot open is replanned before
            // anything else sees it), then the WireGuard peers, then the Kubernetes objects pointing at the listeners.
            // Global apps' sites come first: the proxy's global listeners pick among them.
            List<IPlanSink> sinks = [];
            var global = sp.GetService<GlobalSites>();
            if (global is not null)
            {
                sinks.Add(global);
            }

            sinks.Add(new ProxySink(sp.GetRequiredService<ProxyTable>(), global is null ? null : global.Find, sp.GetRequiredService<HttpProxyServer>()));
            sinks.Add(new WireGuardSink(sp.GetRequiredService<IWireGuardDevice>(), time));
            if (sp.GetService<KubernetesSink>() is { } kubernetes)
            {
                sinks.Add(kubernetes);
            }

            var reconciler = new Reconciler(
                new ReconcilerOptions(settings.Name, settings.PeerTtl) { GlobalServices = settings.GlobalServices, Quotas = settings.Quotas },
                sp.GetRequiredService<ILocalAppSource>(),
                sp.GetRequiredService<RemoteAppStore>(),
                sp.GetRequiredService<TunnelSource>(),
                sinks,
                sp.GetRequiredService<ReconcileSignal>(),
                time,
                sp.GetRequiredService<ILogger<Reconciler>>(),
                sp.GetRequiredService<WormholeMetrics>())
            {
                Retries = sp.GetRequiredService<RetryPipelines>(),
                Health = sp.GetRequiredService<Health>(),
            };
            var metrics = sp.GetRequiredService<WormholeMetrics>();
            metrics.OnCollect(() => metrics.SetApps(reconciler.Current.LocalListeners.Length, reconciler.Current.RemoteListeners.Length));
            if (sp.GetService<GlobalSites>() is { } globalSites)
            {
                metrics.OnCollect(() => metrics.SetGlobalSites(
                    [.. globalSites.Apps.SelectMany(a => a.Sites.Select(s => (a.Name, s.Site.Peer, s.Healthy, s.ActiveConnections)))]));
            }

            return reconciler;
        });
        services.AddSingleton(sp => new BackgroundLoop("reconcile", ct => ReconcileWhenReadyAsync(sp, ct)));
        services.AddSingleton(sp => new BackgroundLoop("local apps", sp.GetRequiredService<ILocalAppSource>().RunAsync));
        if (settings.GlobalServices.Enabled)
        {
            // A health change is a pass: the generated Service's annotation shows the sites' health.
            services.AddSingleton(sp => new GlobalSites(time, sp.GetRequiredService<ILogger<GlobalSites>>())
            {
                OnHealthChanged = settings.Kubernetes ? (_, _, _, _) => sp.GetRequiredService<ReconcileSignal>().Request() : null,
            });
            services.AddSingleton(sp => new BackgroundLoop("global health", new GlobalHealthProbe(sp.GetRequiredService<GlobalSites>(), time).RunAsync));
        }

        services.AddHostedService<LoopsService>();
        return services;
    }

    /// <summary>The admin API's listener and, with --metrics, the metrics listener.</summary>
    public static IEnumerable<Listener> ApiListeners(CommonSettings settings, BasicAuthCredentials? basicAuth)
    {
        yield return new Listener("admin API", settings.ApiListen, 64 * 1024, (routes, sp) =>
        {
            routes.MapAdminApi(() => ExposedApps(sp), sp.GetService<IPeerDirectory>(), basicAuth, sp.GetService<IJoinTokenIssuer>(), sp.GetService<Health>());
            routes.MapGlobalApps(sp.GetService<GlobalSites>(), settings.Kubernetes ? settings.KubernetesNamespace : null);
        });
        if (settings.Metrics)
        {
            yield return new Listener("metrics", settings.MetricsListen, 1024, (routes, sp) => routes.MapPrometheus(sp.GetRequiredService<WormholeMetrics>()));
        }
    }

    /// <summary>Remote apps as /api/apps/v1 shows them: the generated Service with Kubernetes, the local listener without.</summary>
    public static IEnumerable<AppDescriptor> ExposedApps(IServiceProvider services)
    {
        var plan = services.GetRequiredService<Reconciler>().Current;
        return services.GetService<KubernetesSinkOptions>() is { } sink ? GeneratedObjects.Exposed(plan, sink.Namespace) : plan.Exposed;
    }

    /// <summary>Checks the tools, makes the state directory, loads the key pair or creates and stores one.</summary>
    public static async Task<WgKeyPair> PrepareAsync(CommonSettings settings, IProcessRunner runner, ILogger logger, CancellationToken cancellationToken)
    {
        var missing = await WgPreflight.CheckAsync(runner, cancellationToken);
        if (missing is not null)
        {
            throw new OptionsException(missing);
        }

        Directory.CreateDirectory(settings.StateDir);
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(settings.StateDir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }

        var state = new StateDirectory(settings.StateDir);
        var stored = state.Keys.Read();
        if (stored is not null && WgKeys.IsValidKey(stored.PrivateKey) && WgKeys.IsValidKey(stored.PublicKey))
        {
            return new WgKeyPair(stored.PrivateKey, stored.PublicKey);
        }

        if (stored is not null)
        {
            throw new StateCorruptException(state.Keys.Path, "it does not hold a valid WireGuard key pair");
        }

        var keys = await WgKeys.GenerateAsync(runner, cancellationToken);
        await state.Keys.WriteAsync(new StoredKeys(keys.PrivateKey, keys.PublicKey), cancellationToken);
        LogNewKeys(logger, keys.PublicKey, state.Keys.Path);
        return keys;
    }

    /// <summary>
    /// Starts the host (Kestrel binds every listener, the loops start) and runs until <paramref name="stop"/> (SIGTERM)
    /// or a dying loop stops it. Returns the exit code.
    /// </summary>
    public static async Task<int> RunAsync(Microsoft.AspNetCore.Builder.WebApplication app, IReadOnlyList<Listener> listeners, ILogger logger, Action started, CancellationToken stop)
    {
        var lifetime = app.Services.GetRequiredService<IHostApplicationLifetime>();
        try
        {
            await app.StartAsync(stop);
        }
        catch (OperationCanceledException) when (lifetime.ApplicationStopping.IsCancellationRequested && !stop.IsCancellationRequested)
        {
            // A loop died while the host was still starting: its stop cancelled the start.
            return app.Services.GetRequiredService<ExitStatus>().Code;
        }

        foreach (var listener in listeners)
        {
            LogListening(logger, listener.Name, $"http://{listener.Endpoint}");
        }

        started();
        using (stop.Register(lifetime.StopApplication))
        {
            await Task.Delay(Timeout.Infinite, lifetime.ApplicationStopping).ContinueWith(static _ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
        }

        return app.Services.GetRequiredService<ExitStatus>().Code;
    }

    /// <summary>
    /// Stops in the order that lets peers notice at once: the host first (listeners close, long-polls already ended by
    /// the stop, loops end), then the proxy listeners. The caller takes WireGuard down after this, then disposes the host.
    /// </summary>
    public static async Task StopAsync(Microsoft.AspNetCore.Builder.WebApplication app)
    {
        try
        {
            await app.StopAsync(CancellationToken.None);
        }
        catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or AggregateException)
        {
        }

        await app.Services.GetRequiredService<ProxyTable>().DisposeAsync();
    }

    /// <summary>The first plan waits for the local app source's first real answer (no start-up withdraw-all).</summary>
    private static async Task ReconcileWhenReadyAsync(IServiceProvider services, CancellationToken cancellationToken)
    {
        var localApps = services.GetRequiredService<ILocalAppSource>();
        if (localApps is KubernetesAppSource)
        {
            LogWaitingForKubernetes(services.GetRequiredService<ILogger<Reconciler>>());
        }

        await localApps.ReadyAsync(cancellationToken);
        await services.GetRequiredService<Reconciler>().RunAsync(cancellationToken);
    }

    [LoggerMessage(EventId = 1400, Level = LogLevel.Information, Message = "Generated a new WireGuard key pair (public key {PublicKey}), stored in {Path}")]
    private static partial void LogNewKeys(ILogger logger, string publicKey, string path);

    [LoggerMessage(EventId = 1402, Level = LogLevel.Information, Message = "Waiting for the first list of Services from the Kubernetes API")]
    private static partial void LogWaitingForKubernetes(ILogger logger);

    [LoggerMessage(EventId = 1403, Level = LogLevel.Information, Message = "Kubernetes API: {Connection}")]
    private static partial void LogKubernetes(ILogger logger, string connection);

    [LoggerMessage(EventId = 1401, Level = LogLevel.Information, Message = "{What} listening on {Urls}")]
    private static partial void LogListening(ILogger logger, string what, string urls);
}
