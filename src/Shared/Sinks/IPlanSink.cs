using System.Collections.Immutable;
using Wormhole.Tunnel.Planning;

namespace Wormhole.Tunnel.Sinks;

/// <summary>
/// Something outside that a plan is applied to: the proxy listeners, the WireGuard peers, the Kubernetes objects. The
/// reconcile loop gives every plan to each sink in turn; a sink returns what it could not do as a typed result (never
/// by editing the plan), and throws when the outside refused it altogether (the loop retries with backoff).
/// </summary>
public interface IPlanSink
{
    /// <summary>Short name for logs, metrics and failure reasons: <c>proxy</c>, <c>wireguard</c>, <c>kubernetes</c>.</summary>
    string Name { get; }

    /// <summary>
    /// True when applying <paramref name="plan"/> would change nothing: this sink's part of it equals what it applied
    /// last and nothing it watches has drifted since. The loop skips the sink then.
    /// </summary>
    bool IsUpToDate(Plan plan);

    /// <summary>Makes the outside match the plan.</summary>
    Task<SinkResult> ApplyAsync(Plan plan, CancellationToken cancellationToken);
}

/// <summary>What a sink could not do with a plan, short of failing.</summary>
public sealed record SinkResult
{
    public static readonly SinkResult Done = new();

    /// <summary>Pass again after this although nothing failed (work deferred on purpose, an object that vanished mid-pass).</summary>
    public TimeSpan? RetryAfter { get; init; }

    /// <summary>
    /// Listeners the sink could not make, with their port and why: the next plan leaves these apps out (not listened
    /// on, not advertised) with the reason as a problem, and gives them other ports.
    /// </summary>
    public ImmutableArray<UnavailableListener> Unavailable { get; init; } = [];
}

/// <summary>A listener a sink could not make: which app, the port it was given, and why.</summary>
public sealed record UnavailableListener(ListenerKey Key, int Port, string Reason);
