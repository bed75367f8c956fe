using System.Collections.Concurrent;
using System.Collections.Immutable;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Proxy;
using Wormhole.Tunnel.Sinks;

namespace Wormhole.Tunnel.Global;

/// <summary>
/// The sites of every global app and their health (global services, <c>--global-services</c>). A sink: each plan's
/// <see cref="Plan.GlobalListeners"/> sets which sites an app has (a peer that is deleted, expires or withdraws the app
/// leaves with the plan that no longer has it); a site that stays keeps its health and connection count. Health is
/// passive — a connect the proxy reports refused or timed out marks the site down at once — and active: the
/// <see cref="GlobalHealthProbe"/> connects to every site every second; a down site is healthy again after
/// <see cref="RiseAfter"/> successes in a row.
/// </summary>
public sealed partial class GlobalSites(TimeProvider time, ILogger<GlobalSites> logger) : IPlanSink
{
    /// <summary>Consecutive successful connects (probes or real) that bring a down site back.</summary>
    public const int RiseAfter = 2;

    /// <summary>One connect attempt to a site, probe or real, before it counts as timed out.</summary>
    public static readonly TimeSpan AttemptTimeout = TimeSpan.FromSeconds(1);

    private readonly ConcurrentDictionary<string, GlobalApp> _apps = new(StringComparer.Ordinal);
    private ImmutableArray<GlobalListener> _applied = [];

    public string Name => "global";

    /// <summary>The global apps now, in ordinal order of their names.</summary>
    public IReadOnlyList<GlobalApp> Apps => [.. _apps.Values.OrderBy(a => a.Name, StringComparer.Ordinal)];

    /// <summary>Called on every health change of a site: (app, site, healthy, why).</summary>
    public Action<GlobalApp, GlobalSite, bool, string>? OnHealthChanged { get; init; }

    /// <summary>An app's sites in order of preference with their health, <c>a=healthy,b=down</c>, or null when it has none.</summary>
    public string? Describe(string app) =>
        Find(app) is { } a ? string.Join(",", a.Sites.Select(s => $"{s.Site.Peer}={(s.Healthy ? "healthy" : "down")}")) : null;

    /// <summary>The picker of an app's global listener, or null when the app has none.</summary>
    public GlobalApp? Find(string app) => _apps.GetValueOrDefault(app);

    public bool IsUpToDate(Plan plan) =>
        plan.GlobalListeners.Length == _applied.Length && plan.GlobalListeners.Zip(_applied).All(p => p.First.SameAs(p.Second));

    public Task<SinkResult> ApplyAsync(Plan plan, CancellationToken cancellationToken)
    {
        var wanted = plan.GlobalListeners.ToDictionary(g => g.App, StringComparer.Ordinal);
        foreach (var name in _apps.Keys.Where(n => !wanted.ContainsKey(n)).ToList())
        {
            _apps.TryRemove(name, out _);
        }

        foreach (var listener in plan.GlobalListeners)
        {
            _apps.GetOrAdd(listener.App, n => new GlobalApp(n, this)).Update(listener);
        }

        _applied = plan.GlobalListeners;
        return Task.FromResult(SinkResult.Done);
    }

    internal void HealthChanged(GlobalApp app, SiteState site, bool healthy, string why)
    {
        LogHealthChanged(LogText.Of(app.Name), LogText.Of(site.Site.Peer), healthy ? "healthy" : "down", LogText.Of(why, 256));
        OnHealthChanged?.Invoke(app, site.Site, healthy, why);
    }

    internal DateTimeOffset Now => time.GetUtcNow();

    [LoggerMessage(EventId = 1800, Level = LogLevel.Information, Message = "Global app {App}: site {Peer} is {Health} ({Reason})")]
    private partial void LogHealthChanged(string app, string peer, string health, string reason);
}

/// <summary>
/// One global app: its listener's port, its sites and their state; the <see cref="IUpstreamPicker"/> of its listener.
/// Each new connection goes to a healthy site of the best priority that has one, the one with the fewest open
/// connections (a random one of those on a tie); when no site is healthy, every site is tried in that order anyway
/// (one may be back before its probe says so).
/// </summary>
public sealed class GlobalApp : IUpstreamPicker
{
    private readonly GlobalSites _owner;
    private volatile SiteState[] _sites = [];

    internal GlobalApp(string name, GlobalSites owner)
    {
        Name = name;
        _owner = owner;
    }

    public string Name { get; }

    /// <summary>The listener this app has now (port, service port, sites in order of preference).</summary>
    public GlobalListener? Listener { get; private set; }

    public TimeSpan AttemptTimeout => GlobalSites.AttemptTimeout;

    /// <summary>The sites now, in order of preference.</summary>
    public IReadOnlyList<SiteState> Sites => _sites;

    internal void Update(GlobalListener listener)
    {
        var old = _sites.ToDictionary(s => s.Site.Peer, StringComparer.Ordinal);
        var sites = new SiteState[Math.Min(listener.Sites.Length, 64)];
        for (var i = 0; i < sites.Length; i++)
        {
            var site = listener.Sites[i];
            if (old.TryGetValue(site.Peer, out var kept) && kept.Site.Address.Equals(site.Address) && kept.Site.Port == site.Port)
            {
                kept.MoveTo(i, site);
                sites[i] = kept;
            }
            else
            {
                sites[i] = new SiteState(i, site);
            }
        }

        Listener = listener;
        _sites = sites;
    }

    public Upstream? Pick(ulong tried)
    {
        var sites = _sites;
        SiteState? best = null;
        var ties = 0;
        for (var pass = 0; pass < 2 && best is null; pass++)
        {
            // Pass 0: healthy sites only; pass 1 (none healthy and untried): every untried site.
            foreach (var s in sites)
            {
                if ((tried & (1UL << s.Index)) != 0 || (pass == 0 && !s.Healthy))
                {
                    continue;
                }

                if (best is null || s.Site.Priority < best.Site.Priority
                    || (s.Site.Priority == best.Site.Priority && s.ActiveConnections < best.ActiveConnections))
                {
                    best = s;
                    ties = 1;
                }
                else if (s.Site.Priority == best.Site.Priority && s.ActiveConnections == best.ActiveConnections && Random.Shared.Next(++ties) == 0)
                {
                    best = s;
                }
            }
        }

        return best?.Upstream;
    }

    public void Connected(Upstream site)
    {
        if (site.Tag is SiteState s)
        {
            Interlocked.Increment(ref s.Active);
            s.Succeeded(this, "a connection went through");
        }
    }

    public void Closed(Upstream site)
    {
        if (site.Tag is SiteState s)
        {
            Interlocked.Decrement(ref s.Active);
        }
    }

    public void Failed(Upstream site, string reason)
    {
        if (site.Tag is SiteState s)
        {
            s.Down(this, reason);
        }
    }

    internal void HealthChanged(SiteState site, bool healthy, string why) => _owner.HealthChanged(this, site, healthy, why);
}

/// <summary>
/// One site of a global app and its state, kept while the site stays (a priority change moves it, with its health
/// and open connections). Thread-safe: the proxy's loops and the probe report concurrently.
/// </summary>
public sealed class SiteState
{
    private readonly Lock _lock = new();
    private int _successes;
    private volatile bool _healthy = true;
    private volatile Upstream _upstream;
    private volatile GlobalSite _site;
    private CancellationTokenSource _wentDown = new();

    internal int Active;

    internal SiteState(int index, GlobalSite site)
    {
        _site = site;
        _upstream = new Upstream(index, site.Address.ToString(), site.Port, site.Peer, this);
    }

    public int Index => _upstream.Index;

    public GlobalSite Site => _site;

    public Upstream Upstream => _upstream;

    public bool Healthy => _healthy;

    public int ActiveConnections => Volatile.Read(ref Active);

    /// <summary>Cancelled when the site is next marked down (HTTP requests still waiting on it move to another site).</summary>
    internal CancellationToken WentDown => Volatile.Read(ref _wentDown).Token;

    internal void MoveTo(int index, GlobalSite site)
    {
        _site = site;
        if (index != _upstream.Index)
        {
            _upstream = _upstream with { Index = index };
        }
    }

    internal void Down(GlobalApp app, string reason)
    {
        bool changed;
        lock (_lock)
        {
            _successes = 0;
            changed = _healthy;
            _healthy = false;
        }

        if (changed)
        {
            Interlocked.Exchange(ref _wentDown, new CancellationTokenSource()).Cancel();
            app.HealthChanged(this, false, reason);
        }
    }

    internal void Succeeded(GlobalApp app, string how)
    {
        bool changed;
        if (_healthy)
        {
            return;
        }

        lock (_lock)
        {
            _successes++;
            changed = !_healthy && _successes >= GlobalSites.RiseAfter;
            if (changed)
            {
                _healthy = true;
            }
        }

        if (changed)
        {
            app.HealthChanged(this, true, $"{how}; {GlobalSites.RiseAfter} connects in a row");
        }
    }
}
