using System.Collections.Immutable;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Sources;
using Wormhole.Tunnel.WireGuard;

namespace Wormhole.Tunnel.Planning;

/// <summary>
/// Pure: desired state from the inputs and the previous plan. Ports stay with their app across plans (so a change
/// elsewhere never moves a listener); new apps get the lowest free port; withdrawn apps free theirs.
/// Remote apps are always reached at the peer's tunnel address as the pairing store knows it: only the port of the
/// advertised address is used, so a peer cannot point our listeners at other hosts.
/// </summary>
public static class Planner
{
    public static Plan Build(PlanInput input, Plan? previous = null)
    {
        previous ??= Plan.Empty;
        var problems = ImmutableArray.CreateBuilder<PlanProblem>();
        var unusable = input.UnusablePorts ?? new HashSet<int>();
        var unavailable = input.Unavailable ?? new Dictionary<ListenerKey, string>();

        // Local apps: one listener each, only once we have a tunnel address to bind.
        var locals = ImmutableArray.CreateBuilder<LocalListener>();
        var advertised = ImmutableArray.CreateBuilder<AppDescriptor>();
        if (input.TunnelAddress is not null)
        {
            var previousPorts = previous.LocalListeners.ToDictionary(l => l.App, l => l.Port, StringComparer.Ordinal);
            var wanted = new List<LocalApp>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var app in input.LocalApps.OrderBy(a => a.Name, StringComparer.Ordinal))
            {
                if (!seen.Add(app.Name))
                {
                    problems.Add(new PlanProblem(input.SelfName, app.Name, "another local app has the same name; the first one is kept"));
                    continue;
                }

                if (unavailable.TryGetValue(new ListenerKey(null, app.Name), out var why))
                {
                    problems.Add(new PlanProblem(input.SelfName, app.Name, why));
                    continue;
                }

                wanted.Add(app);
            }

            var ports = AssignPorts(wanted, a => a.Name, previousPorts, input.LocalPorts, unusable);
            foreach (var app in wanted)
            {
                if (!ports.TryGetValue(app.Name, out var port))
                {
                    problems.Add(new PlanProblem(input.SelfName, app.Name, $"no free port left in {input.LocalPorts.First}-{input.LocalPorts.Last}"));
                    continue;
                }

                locals.Add(new LocalListener(app.Name, port, app.TargetHost, app.TargetPort));
                advertised.Add(new AppDescriptor(app.Name, AppAddress.Format(input.TunnelAddress.ToString(), port), input.SelfName, app.OriginalPort, app.TargetLabels)
                {
                    Protocol = app.Http is null ? null : AppProtocol.Http,
                    HealthPath = app.Http?.HealthPath,
                });
            }
        }

        // Remote apps: one listener per (peer, app), at most the quota per peer; ports shared fairly among peers.
        var remotes = ImmutableArray.CreateBuilder<RemoteListener>();
        var previousRemote = previous.RemoteListeners.ToDictionary(l => (l.Peer, l.App), l => l.Port);
        var candidates = new List<List<Candidate>>();
        foreach (var peer in input.RemoteApps.OrderBy(p => p.Peer, StringComparer.Ordinal))
        {
            var seen = new HashSet<string>(StringComparer.Ordinal);
            var kept = new List<Candidate>();
            var reportedProblems = 0;
            var overQuota = peer.Dropped;
            void Problem(string app, string reason)
            {
                if (reportedProblems++ < PeerQuotas.MaxProblemsPerPeer)
                {
                    problems.Add(new PlanProblem(peer.Peer, app, reason));
                }
            }

            foreach (var app in peer.Apps.OrderBy(a => a.Name, StringComparer.Ordinal))
            {
                if (!Names.IsValidAppName(app.Name))
                {
                    Problem(app.Name, "the app name is empty, too long or has characters that are not allowed");
                    continue;
                }

                if (app.Name.Length > input.Quotas.MaxAppNameLength)
                {
                    Problem(app.Name, $"the app name is longer than {input.Quotas.MaxAppNameLength} characters (--max-app-name-length)");
                    continue;
                }

                if (!seen.Add(app.Name))
                {
                    Problem(app.Name, "the peer advertised this app name twice; the first one is kept");
                    continue;
                }

                if (!AppAddress.TryParse(app.Address, out _, out var peerPort))
                {
                    Problem(app.Name, $"invalid address '{app.Address}'");
                    continue;
                }

                if (unavailable.TryGetValue(new ListenerKey(peer.Peer, app.Name), out var why))
                {
                    Problem(app.Name, why);
                    continue;
                }

                if (kept.Count >= input.Quotas.MaxAppsPerPeer)
                {
                    overQuota++;
                    continue;
                }

                kept.Add(new Candidate(peer.Peer, app, peer.TunnelAddress, peerPort, HttpOf(app, Problem)));
            }

            if (overQuota > 0)
            {
                problems.Add(new PlanProblem(peer.Peer, "*", $"{overQuota} app(s) over the quota of {input.Quotas.MaxAppsPerPeer} per peer (--max-apps-per-peer) were left out, by name order"));
            }

            if (reportedProblems > PeerQuotas.MaxProblemsPerPeer)
            {
                problems.Add(new PlanProblem(peer.Peer, "*", $"…and {reportedProblems - PeerQuotas.MaxProblemsPerPeer} more app(s) skipped for the reasons above"));
            }

            candidates.Add(kept);
        }

        // The global listeners' ports stay theirs: a new per-peer listener does not take one.
        var keepForGlobals = input.GlobalServices.Enabled && !previous.GlobalListeners.IsEmpty
            ? new HashSet<int>(unusable.Concat(previous.GlobalListeners.Select(g => g.Port)))
            : unusable;
        var remotePorts = AssignFairly(candidates, previousRemote, input.RemotePorts, keepForGlobals);
        foreach (var c in candidates.SelectMany(c => c))
        {
            if (!remotePorts.TryGetValue((c.Peer, c.App.Name), out var port))
            {
                problems.Add(new PlanProblem(c.Peer, c.App.Name, $"no free port left in {input.RemotePorts.First}-{input.RemotePorts.Last} (ports are shared fairly among peers)"));
                continue;
            }

            remotes.Add(new RemoteListener(c.Peer, c.App.Name, port, c.Address, c.PeerPort, c.App.OriginalPort, c.App.TargetLabels ?? "") { Http = c.Http });
        }

        var globals = input.GlobalServices.Enabled
            ? GlobalListeners(input, previous, candidates.SelectMany(c => c).ToList(), remotes.Select(r => r.Port), unusable, unavailable, problems)
            : [];
        var reported = input.RemoteApps.Select(p => p.Peer).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToImmutableArray();
        return new Plan(locals.ToImmutable(), remotes.ToImmutable(), advertised.ToImmutable(), problems.ToImmutable(), reported)
        {
            GlobalListeners = globals,
            TunnelAddress = input.TunnelAddress,
            TunnelPeerNetwork = input.TunnelPeerNetwork,
            WireGuard = input.TunnelAddress is null ? null : WireGuardPeers(input.Peers),
            PairedPeers = input.Peers.Select(p => p.Name).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToImmutableArray(),
        };
    }

    /// <summary>
    /// One WireGuard peer per paired peer: its tunnel address (a /32) is routed to it, nothing else, so a peer can only
    /// send from and receive at its own address. A key or an address listed twice keeps the first (the pairing store
    /// never holds such twins; this keeps a bad input from making a peer set WireGuard would refuse). Ordered by key.
    /// </summary>
    private static WireGuardPlan WireGuardPeers(IReadOnlyList<PeerLink> peers)
    {
        var keys = new HashSet<string>(StringComparer.Ordinal);
        var addresses = new HashSet<System.Net.IPAddress>();
        var result = ImmutableArray.CreateBuilder<WgPeer>();
        foreach (var peer in peers)
        {
            if (keys.Add(peer.PublicKey) && addresses.Add(peer.Address))
            {
                result.Add(new WgPeer(peer.PublicKey, [$"{peer.Address}/{(peer.Address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? 32 : 128)}"], peer.Endpoint, peer.KeepaliveSeconds, peer.PresharedKey));
            }
        }

        result.Sort((a, b) => string.CompareOrdinal(a.PublicKey, b.PublicKey));
        return new WireGuardPlan(result.ToImmutable());
    }

    /// <summary>
    /// One global listener per app name that one or more peers offer (valid names only, as for the per-peer
    /// listeners), on a port of the remote range that no per-peer listener has; its sites ordered by the consumer's
    /// priority for that app, then by peer name. A site offering the app under another original port still serves
    /// it (see <see cref="ServicePort"/>).
    /// </summary>
    private static ImmutableArray<GlobalListener> GlobalListeners(
        PlanInput input, Plan previous, List<Candidate> candidates, IEnumerable<int> remotePorts, IReadOnlySet<int> unusable,
        IReadOnlyDictionary<ListenerKey, string> unavailable, ImmutableArray<PlanProblem>.Builder problems)
    {
        var byApp = new SortedDictionary<string, List<Candidate>>(StringComparer.Ordinal);
        foreach (var c in candidates)
        {
            if (!byApp.TryGetValue(c.App.Name, out var sites))
            {
                byApp[c.App.Name] = sites = [];
            }

            sites.Add(c);
        }

        var names = new List<string>();
        foreach (var app in byApp.Keys)
        {
            if (unavailable.TryGetValue(new ListenerKey(null, app, Global: true), out var why))
            {
                problems.Add(new PlanProblem("(global)", app, why));
                continue;
            }

            names.Add(app);
        }

        var previousPorts = previous.GlobalListeners.ToDictionary(g => g.App, g => g.Port, StringComparer.Ordinal);
        var reserved = new HashSet<int>(unusable);
        reserved.UnionWith(remotePorts);
        var ports = AssignPorts(names, n => n, previousPorts, input.RemotePorts, reserved);
        var result = ImmutableArray.CreateBuilder<GlobalListener>();
        foreach (var app in names)
        {
            if (!ports.TryGetValue(app, out var port))
            {
                problems.Add(new PlanProblem("(global)", app, $"no free port left in {input.RemotePorts.First}-{input.RemotePorts.Last} for the global listener"));
                continue;
            }

            var order = input.GlobalServices.Priorities.GetValueOrDefault(app) ?? [];
            var sites = byApp[app]
                .Select(c => (Candidate: c, Rank: Rank(order, c.Peer)))
                .OrderBy(s => s.Rank).ThenBy(s => s.Candidate.Peer, StringComparer.Ordinal)
                .Select(s => new GlobalSite(s.Candidate.Peer, s.Candidate.Address, s.Candidate.PeerPort, s.Rank))
                .ToImmutableArray();
            result.Add(new GlobalListener(app, port, ServicePort(byApp[app], previous.GlobalListeners.FirstOrDefault(g => g.App == app)), sites)
            {
                Http = GlobalHttp(app, byApp[app].OrderBy(c => Rank(order, c.Peer)).ThenBy(c => c.Peer, StringComparer.Ordinal).ToList(), problems),
            });
        }

        return result.ToImmutable();
    }

    /// <summary>
    /// The port a global app's Service shows: the one it showed before while a site still offers the app under it (a
    /// site leaving does not move what clients dial), else the original port most sites use, the lowest on a tie.
    /// </summary>
    private static int ServicePort(List<Candidate> sites, GlobalListener? before)
    {
        if (before is not null && sites.Any(s => s.App.OriginalPort == before.OriginalPort))
        {
            return before.OriginalPort;
        }

        return sites.GroupBy(s => s.App.OriginalPort).OrderByDescending(g => g.Count()).ThenBy(g => g.Key).First().Key;
    }

    private static int Rank(IReadOnlyList<string> order, string peer)
    {
        for (var i = 0; i < order.Count; i++)
        {
            if (order[i] == peer)
            {
                return i;
            }
        }

        return order.Count;
    }

    /// <summary>
    /// The HTTP mode a peer's app asks for: <c>protocol: http</c> (any case) with its health path when valid. A protocol
    /// this side does not know serves the app as TCP, a bad health path is not probed; both are reported.
    /// </summary>
    private static HttpMode? HttpOf(AppDescriptor app, Action<string, string> problem)
    {
        if (string.IsNullOrEmpty(app.Protocol))
        {
            return null;
        }

        if (!AppProtocol.IsHttp(app.Protocol))
        {
            problem(app.Name, $"protocol '{app.Protocol}' is not known here (only 'http' is); the app is served as TCP");
            return null;
        }

        if (string.IsNullOrEmpty(app.HealthPath))
        {
            return HttpMode.NoHealthPath;
        }

        if (!AppProtocol.IsValidHealthPath(app.HealthPath))
        {
            problem(app.Name, "the health path is not an absolute path of visible ASCII characters; its sites are probed with a TCP connect instead");
            return HttpMode.NoHealthPath;
        }

        return new HttpMode(app.HealthPath);
    }

    /// <summary>
    /// A global app is HTTP when every site offers it as HTTP; its health path is that of the most preferred site that
    /// has one. Sites that disagree on the protocol make it TCP (every site can carry TCP), with a problem saying so.
    /// </summary>
    private static HttpMode? GlobalHttp(string app, List<Candidate> sites, ImmutableArray<PlanProblem>.Builder problems)
    {
        var http = sites.Where(s => s.Http is not null).ToList();
        if (http.Count == 0)
        {
            return null;
        }

        if (http.Count < sites.Count)
        {
            problems.Add(new PlanProblem("(global)", app,
                $"sites disagree on the protocol (HTTP at {string.Join(", ", http.Select(s => s.Peer))}; TCP at {string.Join(", ", sites.Where(s => s.Http is null).Select(s => s.Peer))}); the global listener is TCP"));
            return null;
        }

        return http.Select(s => s.Http!).FirstOrDefault(h => h.HealthPath is not null) ?? HttpMode.NoHealthPath;
    }

    private sealed record Candidate(string Peer, AppDescriptor App, System.Net.IPAddress Address, int PeerPort, HttpMode? Http = null);

    /// <summary>
    /// Remote ports for every peer's candidates (each list in name order), shared max-min fairly: when the range cannot
    /// hold them all, each peer gets an equal share and what a peer leaves unused goes to the others, so one peer with
    /// many apps never keeps another peer's apps out. Within its share a peer keeps the ports its apps had (so nothing
    /// moves while there is room); only a peer over its share loses listeners, the last by name first.
    /// </summary>
    private static Dictionary<(string, string), int> AssignFairly(
        List<List<Candidate>> peers, Dictionary<(string Peer, string App), int> previous, PortRange range, IReadOnlySet<int> unusable)
    {
        var capacity = 0;
        for (var p = range.First; p <= range.Last; p++)
        {
            capacity += unusable.Contains(p) ? 0 : 1;
        }

        // Water-filling: the smallest demands are met in full, the rest split what is left equally.
        var shares = new int[peers.Count];
        var order = Enumerable.Range(0, peers.Count).OrderBy(i => peers[i].Count).ThenBy(i => i).ToList();
        var left = capacity;
        for (var k = 0; k < order.Count; k++)
        {
            var i = order[k];
            var fair = left / (order.Count - k);
            shares[i] = Math.Min(peers[i].Count, fair);
            left -= shares[i];
        }

        // Hand out what integer division left over, in peer order, to peers that still want more.
        for (var i = 0; i < peers.Count && left > 0; i++)
        {
            if (shares[i] < peers[i].Count)
            {
                shares[i]++;
                left--;
            }
        }

        // Each peer's admitted apps: those that had a port first (by name), then the rest by name, up to its share.
        var admitted = new List<Candidate>();
        for (var i = 0; i < peers.Count; i++)
        {
            admitted.AddRange(peers[i]
                .OrderBy(c => previous.ContainsKey((c.Peer, c.App.Name)) ? 0 : 1)
                .ThenBy(c => c.App.Name, StringComparer.Ordinal)
                .Take(shares[i]));
        }

        return AssignPorts(admitted, c => (c.Peer, c.App.Name), previous, range, unusable);
    }

    private static Dictionary<TKey, int> AssignPorts<T, TKey>(
        IReadOnlyList<T> items, Func<T, TKey> key, Dictionary<TKey, int> previous, PortRange range, IReadOnlySet<int> unusable)
        where TKey : notnull
    {
        var result = new Dictionary<TKey, int>();
        var taken = new HashSet<int>();

        // Keep every port an app already had (unless it turned out to be unusable).
        foreach (var item in items)
        {
            var k = key(item);
            if (previous.TryGetValue(k, out var port) && range.Contains(port) && !unusable.Contains(port) && taken.Add(port))
            {
                result[k] = port;
            }
        }

        var next = range.First;
        foreach (var item in items)
        {
            var k = key(item);
            if (result.ContainsKey(k))
            {
                continue;
            }

            while (next <= range.Last && (taken.Contains(next) || unusable.Contains(next)))
            {
                next++;
            }

            if (next > range.Last)
            {
                break;
            }

            taken.Add(next);
            result[k] = next;
        }

        return result;
    }
}
