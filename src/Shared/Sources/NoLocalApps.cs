using Wormhole.Tunnel.Planning;

namespace Wormhole.Tunnel.Sources;

/// <summary>A side that offers no apps of its own (no --apps-file): it still consumes the peers' apps.</summary>
public sealed class NoLocalApps : ILocalAppSource
{
    public IReadOnlyList<LocalApp> Current => [];

    /// <summary>Nothing to watch: waits for the stop, as every background loop does.</summary>
    public Task RunAsync(CancellationToken cancellationToken) => Task.Delay(Timeout.Infinite, cancellationToken);
}
