using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Kubernetes;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Runtime;

namespace Wormhole.Tunnel.Sinks;

/// <summary>Something outside that a plan is applied to after the proxy listeners (Kubernetes objects).</summary>
public interface IPlanSink
{
    /// <summary>Makes the outside match the plan. Returns when to try again if something is still pending (null: done).</summary>
    Task<TimeSpan?> ApplyAsync(Plan plan, CancellationToken cancellationToken);
}
