using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Resilience;
using Wormhole.Tunnel.Sinks;
using Wormhole.Tunnel.Sources;

namespace Wormhole.Tunnel.Runtime;

/// <summary>What <see cref="Reconciler.ConvergeAsync"/> found: which sinks failed to apply the plan, and why (none: converged).</summary>
public sealed record ConvergeResult(IReadOnlyDictionary<string, string> Failures)
{
    public static readonly ConvergeResult Converged = new(new Dictionary<string, string>());

    public bool Succeeded => Failures.Count == 0;

    /// <summary>The first failure as one line (<c>the kubernetes sink failed: …</c>), or null.</summary>
    public string? SinkFailure => Failures.Count == 0 ? null : Failures.First().Value;

    /// <summary>Why the sink of that name failed, or null when it applied the plan.</summary>
    public string? FailureOf(string sink) => Failures.GetValueOrDefault(sink);
}

/// <summary>Reconciler settings that differ between hub and spoke.</summary>
public sealed record ReconcilerOptions(string SelfName, TimeSpan PeerTtl)
{
    public PortRange LocalPorts { get; init; } = PortRange.Local;

    public PortRange RemotePorts { get; init; } = PortRange.Remote;

    public GlobalServicesOptions GlobalServices { get; init; } = GlobalServicesOptions.Off;

    /// <summary>What one peer may take on this side.</summary>
    public PeerQuotas Quotas { get; init; } = PeerQuotas.Default;
}

/// <summary>
/// The one loop of a side: sources (local apps, the peers' apps, the tunnel) → <see cref="Planner"/> → sinks (proxy,
/// WireGuard, Kubernetes). Every change a source reports requests a recompute; requests coalesce, passes are
/// rate-limited, and one worker rebuilds the whole plan and gives it to each sink in order, skipping those whose part
/// is up to date. What a sink could not do comes back as a typed result and is a planner input of the next plan;
/// nothing edits a plan after the planner built it. Readers (admin API, sync) see the last applied plan through
/// <see cref="Current"/>. Every <see cref="Resync"/> a pass runs anyway, so sinks can repair drift.
/// </summary>
public sealed partial class Reconciler(
    ReconcilerOptions options,
    ILocalAppSource localApps,
    RemoteAppStore remoteApps,
    TunnelSource tunnel,
    IReadOnlyList<IPlanSink> sinks,
    ReconcileSignal signal,
    TimeProvider time,
    ILogger<Reconciler> logger,
    Metrics.WormholeMetrics? metrics = null)
{
    /// <summary>A pass at least this often, whether or not a source changed: sinks repair drift, failed ports are tried again.</summary>
    public static readonly TimeSpan Resync = TimeSpan.FromSeconds(30);

    /// <summary>
    /// At most this many passes a second after a burst of as many (a storm of changes is coalesced anyway). The budget
    /// refills continuously (worked out from the clock when a pass is due, no timer: an idle side does nothing), so past
    /// the burst a pass waits at most 10 ms, never for the next whole second. Callers that wait for a pass (a pairing
    /// waits for its WireGuard peer) get one every 10 ms at worst: 250 spokes pairing one after another are not held
    /// to 20 passes a second.
    /// </summary>
    public const int PassesPerSecond = 100;

    private static readonly TimeSpan Tick = TimeSpan.FromSeconds(1);
    private readonly string _instance = Convert.ToHexStringLower(BitConverter.GetBytes(Random.Shared.NextInt64()))[..8];
    private readonly HashSet<int> _unusablePorts = [];
    private Plan _current = Plan.Empty;
    private long _advertisedCounter;
    private TaskCompletionSource _advertisedChanged = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _sinkFailures;
    private long _requested;
    private long _applied;
    private TaskCompletionSource _appliedChanged = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _firstApplied = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile ConvergeResult _lastResult = ConvergeResult.Converged;
    private int _advertisedWaiters;
    private long _lastResyncTicks;
    private volatile bool _resyncDue;

    /// <summary>Where a re-scheduled pass after a sink failure is counted and logged at Debug.</summary>
    public RetryPipelines? Retries { get; init; }

    /// <summary>Each pass is a step of liveness; a pass every sink applied with the tunnel address ends readiness' start.</summary>
    public Health? Health { get; init; }

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
    /// Requests a recompute and completes once a plan built after this call has been applied; the result says which
    /// sinks failed to apply it (a failing Kubernetes API, WireGuard refusing a peer set), if any.
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

        return _lastResult;
    }

    /// <summary>Completes once the first plan has been applied (see <see cref="FirstPlanApplied"/>).</summary>
    public Task WaitForFirstPlanAsync(CancellationToken cancellationToken) => _firstApplied.Task.WaitAsync(cancellationToken);

    public async Task RunAsync(CancellationToken cancellationToken)
    {
        Interlocked.Exchange(ref _lastResyncTicks, time.GetTimestamp());
        using var tick = time.CreateTimer(_ => OnTick(), null, Tick, Tick);
        // The pass budget: a token bucket refilled from the (real) clock when a pass is due.
        double tokens = PassesPerSecond;
        var tokensAt = Stopwatch.GetTimestamp();
        signal.Request();
        while (!cancellationToken.IsCancellationRequested)
        {
            await signal.WaitAsync(cancellationToken);
            tokens = Math.Min(PassesPerSecond, tokens + (Stopwatch.GetElapsedTime(tokensAt).TotalSeconds * PassesPerSecond));
            tokensAt = Stopwatch.GetTimestamp();
            if (tokens < 1)
            {
                await Task.Delay(TimeSpan.FromSeconds((1 - tokens) / PassesPerSecond), cancellationToken);
                tokens = 1;
                tokensAt = Stopwatch.GetTimestamp();
            }

            tokens--;
            if (_resyncDue)
            {
                _resyncDue = false;
                _unusablePorts.Clear();
            }

            await ReconcileOnceAsync(cancellationToken);
        }
    }

    /// <summary>Builds one plan and gives it to every sink. Public for tests that drive the loop step by step.</summary>
    public async Task ReconcileOnceAsync(CancellationToken cancellationToken)
    {
        using var pass = Health?.Begin("reconcile pass");
        var generation = Interlocked.Read(ref _requested);
        var started = time.GetTimestamp();
        var previous = Current;
        var tunnelState = tunnel.Current;
        var input = new PlanInput(options.SelfName, tunnelState.Address, localApps.Current, remoteApps.Snapshot(), options.LocalPorts, options.RemotePorts, _unusablePorts)
        {
            Peers = tunnelState.Peers,
            GlobalServices = options.GlobalServices,
            Quotas = options.Quotas,
            TunnelPeerNetwork = tunnelState.PeerNetwork,
        };
        var plan = Planner.Build(input, previous);
        var (applied, failures) = await ApplySinksAsync(input, plan, previous, cancellationToken);
        plan = applied;

        foreach (var problem in plan.Problems.Except(previous.Problems))
        {
            LogProblem(LogText.Of(problem.Peer), LogText.Of(problem.App), LogText.Of(problem.Reason, 512));
        }

        LogChanges(previous, plan);
        Volatile.Write(ref _current, plan);
        _lastResult = new ConvergeResult(failures);
        if (metrics is not null)
        {
            // Series of withdrawn apps go; the app label values left are those of this plan.
            metrics.RetainApps(plan.LocalListeners.Select(l => ("local", l.App))
                .Concat(plan.RemoteListeners.Select(r => ("remote", r.App)))
                .Concat(plan.GlobalListeners.Select(g => ("global", g.App))));
            metrics.Reconciled(time.GetElapsedTime(started));
        }

        if (!plan.Advertised.SequenceEqual(previous.Advertised))
        {
            Interlocked.Increment(ref _advertisedCounter);
            Interlocked.Exchange(ref _advertisedChanged, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
        }

        _firstApplied.TrySetResult();
        Health?.PlanApplied(tunnelState.Address is not null && failures.Count == 0);
        if (generation > Interlocked.Read(ref _applied))
        {
            Interlocked.Exchange(ref _applied, generation);
            Interlocked.Exchange(ref _appliedChanged, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
        }
    }

    /// <summary>
    /// Gives the plan to each sink in order. When a sink could not make some listeners, they are a planner input: the
    /// plan is built again without them (they are left out, with the reason as a problem) and applied from the first
    /// sink on, once per pass; the next pass, requested at once, gives them other ports. A sink that throws is retried
    /// with backoff on the shared schedule. Returns the plan the sinks applied and which sinks failed.
    /// </summary>
    private async Task<(Plan Plan, Dictionary<string, string> Failures)> ApplySinksAsync(PlanInput input, Plan plan, Plan previous, CancellationToken cancellationToken)
    {
        var failures = new Dictionary<string, string>(StringComparer.Ordinal);
        TimeSpan? retry = null;
        var replanned = false;
        for (var i = 0; i < sinks.Count; i++)
        {
            var sink = sinks[i];
            if (sink.IsUpToDate(plan))
            {
                continue;
            }

            SinkResult result;
            try
            {
                result = await sink.ApplyAsync(plan, cancellationToken);
            }
            catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
            {
                _sinkFailures++;
                var backoff = RetrySchedule.Sinks.Delay(_sinkFailures);
                Retries?.Report(new RetryNotice(RetrySchedule.Sinks.Operation, _sinkFailures, backoff, ex));
                // The outside refusing or unreachable is one line; anything else is a bug, logged with its stack.
                var expected = ex is Kubernetes.KubeApiException or HttpRequestException or IOException or OperationCanceledException or WireGuard.WireGuardCommandException;
                LogSinkFailed(expected ? null : ex, sink.Name, ex.Message, backoff.TotalSeconds);
                retry = retry is null || backoff < retry ? backoff : retry;
                failures[sink.Name] = $"the {sink.Name} sink failed: {ex.Message}";
                continue;
            }

            if (result.RetryAfter is { } after)
            {
                retry = retry is null || after < retry ? after : retry;
            }

            if (!result.Unavailable.IsEmpty)
            {
                foreach (var u in result.Unavailable)
                {
                    _unusablePorts.Add(u.Port);
                }

                signal.Request();
                if (!replanned)
                {
                    replanned = true;
                    var unavailable = result.Unavailable.ToDictionary(u => u.Key, u => $"cannot listen on port {u.Port}: {u.Reason}; trying another port");
                    plan = Planner.Build(input with { Unavailable = unavailable }, previous);
                    i = -1;
                    continue;
                }
            }
        }

        if (failures.Count == 0)
        {
            _sinkFailures = 0;
        }

        if (retry is { } delay)
        {
            _ = Task.Delay(delay + TimeSpan.FromMilliseconds(10), time, cancellationToken)
                .ContinueWith(_ => signal.Request(), CancellationToken.None, TaskContinuationOptions.OnlyOnRanToCompletion, TaskScheduler.Default);
        }

        return (plan, failures);
    }

    private void OnTick()
    {
        foreach (var peer in remoteApps.Expire(options.PeerTtl))
        {
            LogExpired(peer, options.PeerTtl.TotalSeconds);
        }

        if (time.GetElapsedTime(Interlocked.Read(ref _lastResyncTicks)) >= Resync)
        {
            Interlocked.Exchange(ref _lastResyncTicks, time.GetTimestamp());
            _resyncDue = true;
            signal.Request();
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
