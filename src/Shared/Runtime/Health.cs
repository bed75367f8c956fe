using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.Sources;

namespace Wormhole.Tunnel.Runtime;

/// <summary>A step that has been running for longer than it may: what it is and for how long.</summary>
public sealed record StuckStep(string Step, TimeSpan Running);

/// <summary>
/// What the chart's probes ask the admin API. Readiness (<c>/readyz</c>) is a latch: false until the side has done its
/// start — the local apps are known (in Kubernetes mode: the first LIST of Services is in), WireGuard is up (a spoke: it
/// has paired, or set up its cached pairing) and every sink (proxy, WireGuard peers, Kubernetes) has applied a plan
/// with the tunnel address — and true from then on. Liveness (<c>/livez</c>) fails while a step of a loop that must end — a reconcile pass, a run of <c>wg</c>,
/// <c>ip</c> or <c>wireguard-go</c> — has been running for longer than <see cref="StuckAfter"/>: the loop waiting on it
/// is stuck (a <c>wg</c> command waits forever on a wireguard-go that hangs), and only a restart gets it going again.
/// A loop that fails and retries is not stuck; one that died has already ended the process.
/// </summary>
public sealed class Health(TimeProvider time, TimeSpan stuckAfter)
{
    /// <summary>The default of <c>--stuck-after</c>: longer than any bounded step (a pass over thousands of objects).</summary>
    public static readonly TimeSpan DefaultStuckAfter = TimeSpan.FromMinutes(5);

    private readonly ConcurrentDictionary<long, (string Step, long Started)> _running = new();
    private readonly List<(string Waiting, Func<bool> Done)> _conditions = [];
    private long _nextStep;
    private volatile bool _planWithTunnel;
    private volatile bool _ready;

    public TimeSpan StuckAfter { get; } = stuckAfter;

    /// <summary>A side's health: its start waits for the local apps (the first LIST in Kubernetes mode) and WireGuard.</summary>
    public static Health ForSide(IServiceProvider services, TimeSpan stuckAfter) =>
        new Health(services.GetRequiredService<TimeProvider>(), stuckAfter)
            .Require(
                services.GetRequiredService<ILocalAppSource>() is KubernetesAppSource
                    ? "the first list of Services from the Kubernetes API is not in yet"
                    : "the local apps are not read yet",
                () => services.GetRequiredService<ILocalAppSource>().ReadyAsync(CancellationToken.None).IsCompletedSuccessfully)
            .Require("WireGuard is not up yet (a spoke: not paired yet)", () => services.GetRequiredService<TunnelSource>().Current.Address is not null);

    /// <summary>
    /// Adds a start-up condition of readiness; <paramref name="waiting"/> says what is awaited while it is false (it
    /// may be false again later: readiness, once reached, stays).
    /// </summary>
    public Health Require(string waiting, Func<bool> done)
    {
        lock (_conditions)
        {
            _conditions.Add((waiting, done));
        }

        return this;
    }

    /// <summary>Called by the reconcile loop after each pass; one every sink applied with the tunnel address ends the start.</summary>
    public void PlanApplied(bool withTunnelAddress)
    {
        if (withTunnelAddress)
        {
            _planWithTunnel = true;
        }
    }

    /// <summary>Empty once ready; else what the side still waits for, in the order of the start.</summary>
    public IReadOnlyList<string> Waiting()
    {
        if (_ready)
        {
            return [];
        }

        List<string> waiting;
        lock (_conditions)
        {
            waiting = [.. _conditions.Where(c => !c.Done()).Select(c => c.Waiting)];
        }

        if (!_planWithTunnel)
        {
            waiting.Add("the first plan with the tunnel address is not applied yet (by every sink: proxy, WireGuard, Kubernetes)");
        }

        if (waiting.Count == 0)
        {
            _ready = true;
        }

        return waiting;
    }

    /// <summary>Marks a step of a loop as running until the result is disposed.</summary>
    public Step Begin(string step)
    {
        var id = Interlocked.Increment(ref _nextStep);
        _running[id] = (step, time.GetTimestamp());
        return new Step(this, id);
    }

    /// <summary>The steps running for longer than <see cref="StuckAfter"/>, longest first.</summary>
    public IReadOnlyList<StuckStep> Stuck() =>
        [.. _running.Values
            .Select(r => new StuckStep(r.Step, time.GetElapsedTime(r.Started)))
            .Where(s => s.Running > StuckAfter)
            .OrderByDescending(s => s.Running)];

    /// <summary>A running step; disposing it ends it.</summary>
    public readonly struct Step(Health health, long id) : IDisposable
    {
        public void Dispose() => health?._running.TryRemove(id, out _);
    }
}

/// <summary>Runs the tools through another runner, each run a step of <see cref="Health"/> (named by the tool and its first arguments).</summary>
public sealed class HealthWatchedRunner(IProcessRunner inner, Health health) : IProcessRunner
{
    public async Task<ProcessResult> RunAsync(string fileName, IReadOnlyList<string> arguments, string? standardInput = null, CancellationToken cancellationToken = default)
    {
        // Tool, subcommand and interface ("wg set wg0", "ip link add"): enough to tell what hangs; keys are never arguments.
        using var step = health.Begin(ProcessRunner.Describe(fileName, [.. arguments.Take(2)]));
        return await inner.RunAsync(fileName, arguments, standardInput, cancellationToken);
    }
}
