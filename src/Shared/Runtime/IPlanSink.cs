using Wormhole.Tunnel.Planning;

namespace Wormhole.Tunnel.Runtime;

/// <summary>Something outside that a plan is applied to after the proxy listeners (Kubernetes objects).</summary>
public interface IPlanSink
{
    /// <summary>Makes the outside match the plan. Returns when to try again if something is still pending (null: done).</summary>
    Task<TimeSpan?> ApplyAsync(Plan plan, CancellationToken cancellationToken);
}
