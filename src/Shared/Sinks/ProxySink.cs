using System.Collections.Immutable;
using System.Net;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Proxy;

namespace Wormhole.Tunnel.Sinks;

/// <summary>
/// The plan's listeners on the in-process L4 proxy: local apps on the tunnel address, remote apps on every interface
/// (refusing connections that arrive over the tunnel address). A listener the proxy cannot open comes back as an
/// <see cref="UnavailableListener"/>, for the planner to leave out and move. Global listeners (global services) are
/// remote listeners whose target is picked per connection by their app's picker.
/// </summary>
/// <param name="pickers">The picker of a global app's listener by its name (the global sink, applied before this one).</param>
public sealed class ProxySink(IProxyTable proxy, Func<string, IUpstreamPicker?>? pickers = null) : IPlanSink
{
    private ImmutableArray<ListenerSpec> _applied = [];
    private bool _appliedAll;

    public string Name => "proxy";

    /// <summary>The listeners are exactly those last applied, all of them open.</summary>
    public bool IsUpToDate(Plan plan) => _appliedAll && Specs(plan, pickers).SequenceEqual(_applied);

    public async Task<SinkResult> ApplyAsync(Plan plan, CancellationToken cancellationToken)
    {
        var specs = Specs(plan, pickers);
        _appliedAll = false;
        var failures = await proxy.ApplyAsync(specs, cancellationToken);
        _applied = specs;
        _appliedAll = failures.Count == 0;
        if (failures.Count == 0)
        {
            return SinkResult.Done;
        }

        var unavailable = ImmutableArray.CreateBuilder<UnavailableListener>(failures.Count);
        foreach (var f in failures)
        {
            var key = f.Spec.Kind switch
            {
                ListenerKind.Local => new ListenerKey(null, f.Spec.App),
                ListenerKind.Global => new ListenerKey(null, f.Spec.App, Global: true),
                _ => new ListenerKey(plan.RemoteListeners.First(r => r.Port == f.Spec.Port).Peer, f.Spec.App),
            };
            unavailable.Add(new UnavailableListener(key, f.Spec.Port, f.Reason));
        }

        return new SinkResult { Unavailable = unavailable.MoveToImmutable() };
    }

    /// <summary>The listener specs of a plan (no tunnel address: no local listeners, as the planner leaves them out then).</summary>
    internal static ImmutableArray<ListenerSpec> Specs(Plan plan, Func<string, IUpstreamPicker?>? pickers = null)
    {
        var tunnel = plan.TunnelAddress;
        var specs = ImmutableArray.CreateBuilder<ListenerSpec>(plan.LocalListeners.Length + plan.RemoteListeners.Length + plan.GlobalListeners.Length);
        foreach (var l in plan.LocalListeners)
        {
            specs.Add(new ListenerSpec(ListenerKind.Local, l.App, tunnel!, l.Port, l.TargetHost, l.TargetPort));
        }

        foreach (var r in plan.RemoteListeners)
        {
            specs.Add(new ListenerSpec(ListenerKind.Remote, r.App, IPAddress.Any, r.Port, r.PeerAddress.ToString(), r.PeerPort, tunnel, plan.TunnelPeerNetwork));
        }

        foreach (var g in plan.GlobalListeners)
        {
            // Without a picker (no global sink) the listener is left out: it would have nowhere to send connections.
            if (g.Sites.Length > 0 && pickers?.Invoke(g.App) is { } picker)
            {
                var first = g.Sites[0];
                specs.Add(new ListenerSpec(ListenerKind.Global, g.App, IPAddress.Any, g.Port, first.Address.ToString(), first.Port, tunnel, plan.TunnelPeerNetwork, picker));
            }
        }

        return specs.ToImmutable();
    }
}
