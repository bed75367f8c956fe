using System.Collections.Immutable;
using System.Net;
using Wormhole.Tunnel.HttpProxy;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Proxy;

namespace Wormhole.Tunnel.Sinks;

/// <summary>
/// The plan's listeners on the in-process L4 proxy: local apps on the tunnel address, remote apps on every interface
/// (refusing connections that arrive over the tunnel address). A listener the proxy cannot open comes back as an
/// <see cref="UnavailableListener"/>, for the planner to leave out and move. Global listeners (global services) are
/// remote listeners whose target is picked per connection by their app's picker. With an HTTP proxy, the remote and
/// global listeners the plan marks HTTP are opened there instead (per-request balancing, retries, HTTP health checks);
/// without one they stay TCP listeners here.
/// </summary>
/// <param name="pickers">The picker of a global app's listener by its name (the global sink, applied before this one).</param>
/// <param name="http">The HTTP listeners, or null to serve every listener at L4.</param>
public sealed class ProxySink(IProxyTable proxy, Func<string, IUpstreamPicker?>? pickers = null, IHttpListeners? http = null) : IPlanSink
{
    private ImmutableArray<ListenerSpec> _applied = [];
    private ImmutableArray<HttpListenerSpec> _appliedHttp = [];
    private bool _appliedAll;

    public string Name => "proxy";

    /// <summary>The listeners are exactly those last applied, all of them open.</summary>
    public bool IsUpToDate(Plan plan) =>
        _appliedAll && Specs(plan, pickers, http is not null).SequenceEqual(_applied) && HttpSpecs(plan, pickers, http is not null).SequenceEqual(_appliedHttp);

    public async Task<SinkResult> ApplyAsync(Plan plan, CancellationToken cancellationToken)
    {
        var specs = Specs(plan, pickers, http is not null);
        var httpSpecs = HttpSpecs(plan, pickers, http is not null);
        _appliedAll = false;

        // A listener that moves between L4 and HTTP keeps its port: the HTTP listeners whose port the L4 proxy still holds
        // are opened after it released them, and the HTTP proxy releases its ports before the L4 proxy binds them.
        var failures = new List<ListenerFailure>();
        IReadOnlyList<(HttpListenerSpec Spec, string Reason)> httpFailures = [];
        var heldByL4 = proxy.Active.Select(l => l.Port).ToHashSet();
        var deferred = httpSpecs.Any(s => heldByL4.Contains(s.Port));
        if (http is not null)
        {
            httpFailures = await http.ApplyAsync(deferred ? [.. httpSpecs.Where(s => !heldByL4.Contains(s.Port))] : httpSpecs, cancellationToken);
        }

        failures.AddRange(await proxy.ApplyAsync(specs, cancellationToken));
        if (http is not null && deferred)
        {
            httpFailures = await http.ApplyAsync(httpSpecs, cancellationToken);
        }

        _applied = specs;
        _appliedHttp = httpSpecs;
        _appliedAll = failures.Count == 0 && httpFailures.Count == 0;
        if (_appliedAll)
        {
            return SinkResult.Done;
        }

        var unavailable = ImmutableArray.CreateBuilder<UnavailableListener>(failures.Count + httpFailures.Count);
        foreach (var (spec, reason) in httpFailures)
        {
            unavailable.Add(new UnavailableListener(spec.Key, spec.Port, reason));
        }

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

    /// <summary>The HTTP listener specs of a plan: its remote and global listeners marked HTTP (none without an HTTP proxy).</summary>
    internal static ImmutableArray<HttpListenerSpec> HttpSpecs(Plan plan, Func<string, IUpstreamPicker?>? pickers, bool withHttp)
    {
        if (!withHttp)
        {
            return [];
        }

        var tunnel = plan.TunnelAddress;
        var specs = ImmutableArray.CreateBuilder<HttpListenerSpec>();
        foreach (var r in plan.RemoteListeners)
        {
            if (r.Http is { } mode)
            {
                specs.Add(new HttpListenerSpec(new ListenerKey(r.Peer, r.App), IPAddress.Any, r.Port, new HttpSite(r.Peer, r.PeerAddress, r.PeerPort), mode, tunnel, plan.TunnelPeerNetwork));
            }
        }

        foreach (var g in plan.GlobalListeners)
        {
            if (g.Http is { } mode && g.Sites.Length > 0 && pickers?.Invoke(g.App) is not null)
            {
                specs.Add(new HttpListenerSpec(new ListenerKey(null, g.App, Global: true), IPAddress.Any, g.Port, null, mode, tunnel, plan.TunnelPeerNetwork));
            }
        }

        return specs.ToImmutable();
    }

    /// <summary>The L4 listener specs of a plan (no tunnel address: no local listeners, as the planner leaves them out then).</summary>
    /// <param name="withHttp">Whether listeners marked HTTP are left to the HTTP proxy (else they are TCP listeners here).</param>
    internal static ImmutableArray<ListenerSpec> Specs(Plan plan, Func<string, IUpstreamPicker?>? pickers = null, bool withHttp = false)
    {
        var tunnel = plan.TunnelAddress;
        var specs = ImmutableArray.CreateBuilder<ListenerSpec>();
        foreach (var l in plan.LocalListeners)
        {
            specs.Add(new ListenerSpec(ListenerKind.Local, l.App, tunnel!, l.Port, l.TargetHost, l.TargetPort));
        }

        foreach (var r in plan.RemoteListeners)
        {
            if (withHttp && r.Http is not null)
            {
                continue;
            }

            specs.Add(new ListenerSpec(ListenerKind.Remote, r.App, IPAddress.Any, r.Port, r.PeerAddress.ToString(), r.PeerPort, tunnel, plan.TunnelPeerNetwork));
        }

        foreach (var g in plan.GlobalListeners)
        {
            // Without a picker (no global sink) the listener is left out: it would have nowhere to send connections.
            if (g.Sites.Length > 0 && !(withHttp && g.Http is not null) && pickers?.Invoke(g.App) is { } picker)
            {
                var first = g.Sites[0];
                specs.Add(new ListenerSpec(ListenerKind.Global, g.App, IPAddress.Any, g.Port, first.Address.ToString(), first.Port, tunnel, plan.TunnelPeerNetwork, picker));
            }
        }

        return specs.ToImmutable();
    }
}
