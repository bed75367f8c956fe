using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Kubernetes;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Runtime;

namespace Wormhole.Tunnel.Sources;

/// <summary>Where this side's local apps come from.</summary>
public interface ILocalAppSource
{
    /// <summary>The apps offered now; empty until <see cref="ReadyAsync"/> has completed.</summary>
    IReadOnlyList<LocalApp> Current { get; }

    /// <summary>
    /// Completes once <see cref="Current"/> holds the source's first real answer (the file read, the first list of
    /// Services derived). The first plan waits for it: a plan built before would tell every peer "no apps".
    /// </summary>
    Task ReadyAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    Task RunAsync(CancellationToken cancellationToken);
}
