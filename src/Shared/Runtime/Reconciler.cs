using System.Net;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Proxy;
using Wormhole.Tunnel.Resilience;
using Wormhole.Tunnel.Sinks;
using Wormhole.Tunnel.Sources;

namespace Wormhole.Tunnel.Runtime;

/// <summary>What <see cref="Reconciler.ConvergeAsync"/> found: null <see cref="SinkFailure"/> when every sink applied the plan.</summary>
public sealed record ConvergeResult(string? SinkFailure)
{
    public bool Succeeded => SinkFailure is null;
}

/// <summary>Reconciler settings that differ between hub and spoke.</summary>
public sealed record ReconcilerOptions(string SelfName, TimeSpan PeerTtl)
{
    public PortRange LocalPorts { get; init; } = PortRange.Local;

    public PortRange RemotePorts { get; init; } = PortRange.Remote;
}

/// <summary>
/// The one loop of a side: every change (apps file, a sync, pairing, expiry) requests a recompute; one worker
/// rebuilds the whole plan with <see cref="Planner"/> and applies it to the proxy table. Readers (admin API, sync)
/// see the last applied plan through <see cref="Current"/>.
/// </summary>
public sealed partial class Reconciler(
    ReconcilerOptions options,
    ILocalAppSource localApps,
    RemoteAppStore remoteApps,
    IProxyTable proxy,
    ReconcileSignal signal,
    TimeProvider time,
    ILogger<Reconciler> logger,
    IReadOnlyList<IPlanSink>? sinks = null,
    Metrics.WormholeMetrics? metrics = null)
{
    private static readonly TimeSpan Tick = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan Resync = TimeSpan.FromSeconds(30);
    private readonly string _instance = Convert.ToHexStringLower(BitConverter.GetBytes(Random.Shared.NextInt64()))[..8];
    private readonly HashSet<int> _unusablePorts = [];
    private Plan _current = Plan.Empty;
    private long _advertisedCounter;
    private TaskCompletionSource _advertisedChanged = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile IPAddress? _tunnelAddress;
    private int _sinkFailures;
    private long _requested;
    private long _applied;
    private TaskCompletionSource _appliedChanged = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _firstApplied = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile string? _lastSinkFailure;
    private int _advertisedWaiters;

    /// <summary>Where a re-scheduled pass after a sink failure is counted and logged at Debug.</summary>
    public RetryPipelines? Retries { get; init; }

    public Plan Current => Volatile.Read(ref _current);

    /// <summary>
    /// True once the first plan has been built and applied. Until then <see cref="Current"/> is empty, not the truth:
    /// a side must not tell its peers "no apps" from it (the hub answers /sync with 503, the spoke does not sync yet).
    /// </summary>
    public bool FirstPlanApplied => _firstApplied.Task.IsCompleted;

    /// <summary>Callers waiting in <see cref="WaitForAdvertisedChangeAsync"/> right now (a leak shows here first).</summary>
    internal int AdvertisedWaiters => Volatile.Read(ref _advertisedWaiters);

    /// <summary>Changes whenever the list of apps this side advertises changes (used by the long-poll sync).</summary>
    public string AdvertisedVersion => $"{_instance}.{Interlocked.Read(ref _advertisedCounter)}";

    /// <summary>This side's tunnel address; local listeners bind to it. The spoke learns it at pairing.</summary>
    public IPAddress? TunnelAddress
    {
        get => _tunnelAddress;
        set
        {
            _tunnelAddress = value;
            signal.Request();
        }
    }

    /// <summary>Completes when the advertised list differs from <paramref name="knownVersion"/>, or after <paramref name="maxWait"/>.</summary>
    public async Task WaitForAdvertisedChangeAsync(string? knownVersion, TimeSpan maxWait, CancellationToken cancellationToken)
    {
        var changed = Volatile.Read(ref _advertisedChanged).Task;
        if (knownVersion != AdvertisedVersion)
        {
            return;
        }

        Interlocked.Increment(ref _advertisedWaiters);
        try
        {
            await changed.WaitAsync(maxWait, time, cancellationToken);
        }
        catch (TimeoutException)
        {
        }
        finally
        {
            Interlocked.Decrement(ref _advertisedWaiters);
        }
    }

    /// <summary>
    /// Requests a recompute and completes once a plan built after this call has been applied — to the proxy at least;
    /// the result says whether every sink applied it too (a failing Kubernetes API makes it a failure with the reason).
    /// </summary>
    public async Task<ConvergeResult> ConvergeAsync(CancellationToken cancellationToken)
    {
        var wanted = Interlocked.Increment(ref _requested);
        signal.Request();
        while (Interlocked.Read(ref _applied) < wanted)
        {
            var changed = Volatile.Read(ref _appliedChanged).Task;
            if (Interlocked.Read(ref _applied) >= wanted)
            {
                break;
            }

            await changed.WaitAsync(cancellationToken);
        }

        return new ConvergeResult(_lastSinkFailure);
    }

    /// <summary>Completes once the first plan has been applied (see <see cref="FirstPlanApplied"/>).</summary>
    public Task WaitForFirstPlanAsync(CancellationToken cancellationToken) => _firstApplied.Task.WaitAsync(cancellationToken);

    public async Task RunAsync(CancellationToken cancellationToken)
    {
        using var tick = time.CreateTimer(_ => OnTick(), null, Tick, Tick);
        var lastFull = time.GetUtcNow();
        signal.Request();
        while (!cancellationToken.IsCancellationRequested)
        {
            await signal.WaitAsync(cancellationToken);
            if (time.GetUtcNow() - lastFull > Resync)
            {
                _unusablePorts.Clear();
                lastFull = time.GetUtcNow();
            }

            await ReconcileOnceAsync(cancellationToken);
        }
    }

    /// <summary>Builds and applies one plan. Public for tests that drive the loop step by step.</summary>
    public async Task ReconcileOnceAsync(CancellationToken cancellationToken)
    {
        var generation = Interlocked.Read(ref _requested);
        var started = time.GetTimestamp();
        var previous = Current;
        var tunnel = _tunnelAddress;
        var input = new PlanInput(options.SelfName, tunnel, localApps.Current, remoteApps.Snapshot(), options.LocalPorts, options.RemotePorts, _unusablePorts);
        var plan = Planner.Build(input, previous);
        var failures = await proxy.ApplyAsync(ListenerSpecs(plan, tunnel), cancellationToken);
        if (failures.Count > 0)
        {
            // What failed is a planner input: those apps are left out of this plan (not advertised), and the next pass
            // gives them other ports.
            var unavailable = new Dictionary<ListenerKey, string>();
            foreach (var f in failures)
            {
                _unusablePorts.Add(f.Spec.Port);
                var key = f.Spec.Kind == ListenerKind.Local
                    ? new ListenerKey(null, f.Spec.App)
                    : new ListenerKey(plan.RemoteListeners.First(r => r.Port == f.Spec.Port).Peer, f.Spec.App);
                unavailable[key] = $"cannot listen on port {f.Spec.Port}: {f.Reason}; trying another port";
            }

            plan = Planner.Build(input with { Unavailable = unavailable }, previous);
            await proxy.ApplyAsync(ListenerSpecs(plan, tunnel), cancellationToken);
            signal.Request();
        }

        foreach (var problem in plan.Problems.Except(previous.Problems))
        {
            LogProblem(LogText.Of(problem.Peer), LogText.Of(problem.App), LogText.Of(problem.Reason, 512));
        }

        LogChanges(previous, plan);
        Volatile.Write(ref _current, plan);
        _lastSinkFailure = await ApplySinksAsync(plan, cancellationToken);
        if (metrics is not null)
        {
            // Series of withdrawn apps go; the app label values left are those of this plan.
            metrics.RetainApps(plan.LocalListeners.Select(l => ("local", l.App)).Concat(plan.RemoteListeners.Select(r => ("remote", r.App))));
            metrics.Reconciled(time.GetElapsedTime(started));
        }

        if (!plan.Advertised.SequenceEqual(previous.Advertised))
        {
            Interlocked.Increment(ref _advertisedCounter);
            Interlocked.Exchange(ref _advertisedChanged, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
        }

        _firstApplied.TrySetResult();
        if (generation > Interlocked.Read(ref _applied))
        {
            Interlocked.Exchange(ref _applied, generation);
            Interlocked.Exchange(ref _appliedChanged, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
        }
    }

    private static List<ListenerSpec> ListenerSpecs(Plan plan, IPAddress? tunnel)
    {
        var specs = new List<ListenerSpec>(plan.LocalListeners.Length + plan.RemoteListeners.Length);
        foreach (var l in plan.LocalListeners)
        {
            specs.Add(new ListenerSpec(ListenerKind.Local, l.App, tunnel!, l.Port, l.TargetHost, l.TargetPort));
        }

        foreach (var r in plan.RemoteListeners)
        {
            specs.Add(new ListenerSpec(ListenerKind.Remote, r.App, IPAddress.Any, r.Port, r.PeerAddress.ToString(), r.PeerPort, tunnel));
        }

        return specs;
    }

    /// <summary>
    /// Applies the plan to the outside sinks; a failure or pending work schedules another pass (with backoff).
    /// Returns why a sink failed, or null.
    /// </summary>
    private async Task<string?> ApplySinksAsync(Plan plan, CancellationToken cancellationToken)
    {
        TimeSpan? retry = null;
        string? failure = null;
        foreach (var sink in sinks ?? [])
        {
            try
            {
                if (sink.IsUpToDate(plan))
                {
                    continue;
                }

                if ((await sink.ApplyAsync(plan, cancellationToken)).RetryAfter is { } after)
                {
                    retry = retry is null || after < retry ? after : retry;
                }

                _sinkFailures = 0;
            }
            catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
            {
                _sinkFailures++;
                var backoff = RetrySchedule.Sinks.Delay(_sinkFailures);
                Retries?.Report(new RetryNotice(RetrySchedule.Sinks.Operation, _sinkFailures, backoff, ex));
                // The API refusing or unreachable is one line; anything else is a bug, logged with its stack.
                var expected = ex is Kubernetes.KubeApiException or HttpRequestException or IOException or OperationCanceledException;
                LogSinkFailed(expected ? null : ex, sink.Name, ex.Message, backoff.TotalSeconds);
                retry = retry is null || backoff < retry ? backoff : retry;
                failure ??= $"{sink.Name} sink failed: {ex.Message}";
            }
        }

        if (retry is { } delay)
        {
            _ = Task.Delay(delay + TimeSpan.FromMilliseconds(10), time, cancellationToken)
                .ContinueWith(_ => signal.Request(), CancellationToken.None, TaskContinuationOptions.OnlyOnRanToCompletion, TaskScheduler.Default);
        }

        return failure;
    }

    private void OnTick()
    {
        foreach (var peer in remoteApps.Expire(options.PeerTtl))
        {
            LogExpired(peer, options.PeerTtl.TotalSeconds);
        }
    }

    private void LogChanges(Plan previous, Plan plan)
    {
        foreach (var l in plan.LocalListeners.Except(previous.LocalListeners))
        {
            LogLocalExposed(l.App, l.Port, AppAddress.Format(l.TargetHost, l.TargetPort));
        }

        foreach (var l in previous.LocalListeners.Where(p => !plan.LocalListeners.Any(n => n.App == p.App)))
        {
            LogLocalWithdrawn(l.App);
        }

        foreach (var r in plan.RemoteListeners.Except(previous.RemoteListeners))
        {
            LogRemoteExposed(LogText.Of(r.App), LogText.Of(r.Peer), r.Port);
        }

        foreach (var r in previous.RemoteListeners.Where(p => !plan.RemoteListeners.Any(n => n.App == p.App && n.Peer == p.Peer)))
        {
            LogRemoteWithdrawn(LogText.Of(r.App), LogText.Of(r.Peer));
        }
    }

    [LoggerMessage(EventId = 1300, Level = LogLevel.Information, Message = "Offering local app {App} on tunnel port {Port} → {Target}")]
    private partial void LogLocalExposed(string app, int port, string target);

    [LoggerMessage(EventId = 1301, Level = LogLevel.Information, Message = "Withdrew local app {App}")]
    private partial void LogLocalWithdrawn(string app);

    [LoggerMessage(EventId = 1302, Level = LogLevel.Information, Message = "Exposed remote app {App} from peer {Peer} on port {Port}")]
    private partial void LogRemoteExposed(string app, string peer, int port);

    [LoggerMessage(EventId = 1303, Level = LogLevel.Information, Message = "Withdrew remote app {App} from peer {Peer}")]
    private partial void LogRemoteWithdrawn(string app, string peer);

    [LoggerMessage(EventId = 1305, Level = LogLevel.Warning, Message = "App {App} of peer {Peer} skipped: {Reason}")]
    private partial void LogProblem(string peer, string app, string reason);

    [LoggerMessage(EventId = 1307, Level = LogLevel.Warning, Message = "The {Sink} sink failed: {Reason}; retrying in {Seconds:0.#} s")]
    private partial void LogSinkFailed(Exception? exception, string sink, string reason, double seconds);

    [LoggerMessage(EventId = 1306, Level = LogLevel.Warning, Message = "Peer {Peer} has not synced for {Seconds} s; its apps are withdrawn until it syncs again")]
    private partial void LogExpired(string peer, double seconds);
}
