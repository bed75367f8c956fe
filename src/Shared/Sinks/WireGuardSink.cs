using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.WireGuard;

namespace Wormhole.Tunnel.Sinks;

/// <summary>
/// The plan's WireGuard peer set on this side's interface, applied whole (one <c>wg set</c> for every difference) and
/// applied again every <see cref="DriftCheck"/> even when the plan has not changed, so a peer removed or edited by hand
/// comes back, as kilo re-applies its topology. Nothing to do while the plan has no WireGuard part (no interface yet).
/// </summary>
public sealed class WireGuardSink(IWireGuardDevice device, TimeProvider time) : IPlanSink
{
    /// <summary>How often the interface is read back and repaired when the plan does not change.</summary>
    public static readonly TimeSpan DriftCheck = TimeSpan.FromSeconds(30);

    private WireGuardPlan? _applied;
    private DateTimeOffset _appliedAt;

    public string Name => "wireguard";

    public bool IsUpToDate(Plan plan) =>
        plan.WireGuard is not { } wanted || (wanted.SameAs(_applied) && time.GetUtcNow() - _appliedAt < DriftCheck);

    public async Task<SinkResult> ApplyAsync(Plan plan, CancellationToken cancellationToken)
    {
        if (plan.WireGuard is not { } wanted)
        {
            return SinkResult.Done;
        }

        _applied = null;
        await device.SetPeersAsync(wanted.Peers, cancellationToken);
        _applied = wanted;
        _appliedAt = time.GetUtcNow();
        return SinkResult.Done;
    }
}
