using System.Threading.Channels;
using k8s.Models;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.Kubernetes;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Runtime;

namespace Wormhole.Tunnel.Sources;

/// <summary>
/// Local apps from annotated Services in every namespace. The informer's watch events drive it directly: expose,
/// un-annotate, rename, port changes and deletes take effect on the event itself; an event that leaves the list of apps
/// as it was requests no reconcile pass. Each Service whose outcome changes
/// gets a Normal event naming where it is exposed, or a Warning saying what is wrong with its annotations.
/// </summary>
public sealed partial class KubernetesAppSource : ILocalAppSource
{
    private readonly ResourceInformer<V1Service> _informer;
    private readonly ReconcileSignal _signal;
    private readonly EventRecorder _events;
    private readonly string _selfName;
    private readonly ILogger<KubernetesAppSource> _logger;
    private readonly ReconcileSignal _changed = new();
    private readonly Dictionary<string, string> _reported = new(StringComparer.Ordinal);
    private readonly TaskCompletionSource _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);

    // Events are advice and the Events API may be slow: they are written by their own loop, after the apps are
    // published, so they never hold up a plan. When they pile up, the oldest are dropped.
    private readonly Channel<PendingEvent> _pendingEvents = Channel.CreateBounded<PendingEvent>(
        new BoundedChannelOptions(1024) { FullMode = BoundedChannelFullMode.DropOldest, SingleReader = true });

    private volatile IReadOnlyList<LocalApp> _current = [];

    public KubernetesAppSource(KubeApi client, string selfName, ReconcileSignal signal, EventRecorder events, TimeProvider time, ILoggerFactory loggerFactory)
    {
        _informer = new ResourceInformer<V1Service>(client, null, null, time, loggerFactory.CreateLogger<ResourceInformer<V1Service>>());
        _informer.Changed += _changed.Request;
        _signal = signal;
        _events = events;
        _selfName = selfName;
        _logger = loggerFactory.CreateLogger<KubernetesAppSource>();
    }

    public IReadOnlyList<LocalApp> Current => _current;

    /// <summary>Completes once the apps derived from the first list of Services are published (no start-up withdraw-all).</summary>
    public Task ReadyAsync(CancellationToken cancellationToken) => _ready.Task.WaitAsync(cancellationToken);

    public async Task RunAsync(CancellationToken cancellationToken)
    {
        var informer = _informer.RunAsync(cancellationToken);
        var events = RecordEventsAsync(cancellationToken);
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                await _changed.WaitAsync(cancellationToken);
                if (events.IsFaulted)
                {
                    await events;
                }

                Recompute();
            }
        }
        finally
        {
            await informer.ContinueWith(static _ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
            await events.ContinueWith(static _ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
        }
    }

    /// <summary>Derives the apps from the informer's cache and publishes them at once; events are queued for later.</summary>
    private void Recompute()
    {
        var apps = new List<LocalApp>();
        var reports = new List<(V1Service Service, string Key, IReadOnlyList<LocalApp> Apps, IReadOnlyList<string> Warnings)>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var service in _informer.Snapshot().OrderBy(s => s.Metadata?.NamespaceProperty, StringComparer.Ordinal).ThenBy(s => s.Metadata?.Name, StringComparer.Ordinal))
        {
            var key = $"{service.Metadata?.NamespaceProperty}/{service.Metadata?.Name}";
            seen.Add(key);
            var derived = ServiceApps.Derive(service);
            var taken = derived.Apps.Where(a => apps.Any(b => b.Name == a.Name)).Select(a => a.Name).ToList();
            var warnings = derived.Warnings.Concat(taken.Select(n => $"app name '{n}' is already offered by another Service; this one is skipped")).ToList();
            var offered = derived.Apps.Where(a => !taken.Contains(a.Name)).ToList();
            apps.AddRange(offered);
            reports.Add((service, key, offered, warnings));
        }

        // Only a changed app list is news for the reconcile loop: a Service event that changes no app costs it nothing.
        if (!apps.SequenceEqual(_current))
        {
            _current = apps;
            _signal.Request();
        }
        if (_informer.ReadyAsync(CancellationToken.None).IsCompletedSuccessfully)
        {
            _ready.TrySetResult();
        }

        foreach (var gone in _reported.Keys.Where(k => !seen.Contains(k)).ToList())
        {
            _reported.Remove(gone);
        }

        foreach (var (service, key, offered, warnings) in reports)
        {
            Report(service, key, offered, warnings);
        }
    }

    /// <summary>Queues an event per Service whenever what it offers (or what is wrong with it) changes.</summary>
    private void Report(V1Service service, string key, IReadOnlyList<LocalApp> apps, IReadOnlyList<string> warnings)
    {
        var summary = string.Join(";", apps.Select(a => $"{a.Name}:{a.OriginalPort}{(a.Http is null ? "" : ":http" + a.Http.HealthPath)}")) + "|" + string.Join(";", warnings);
        if (summary == "|")
        {
            _reported.Remove(key);
            return;
        }

        if (_reported.TryGetValue(key, out var previous) && previous == summary)
        {
            return;
        }

        _reported[key] = summary;
        foreach (var warning in warnings)
        {
            LogWarning(key, LogText.Of(warning, LogText.MaxReasonLength));
            _pendingEvents.Writer.TryWrite(new PendingEvent(service, EventRecorder.Warning, "WormholeInvalidExposure", warning));
        }

        if (apps.Count > 0)
        {
            var where = string.Join(", ", apps.Select(a => $"app '{a.Name}' (port {a.OriginalPort}{(a.Http is null ? "" : ", HTTP")}) → Service {KubeNames.ObjectName(_selfName, a.Name)} on each peer"));
            _pendingEvents.Writer.TryWrite(new PendingEvent(service, EventRecorder.Normal, "WormholeExposed", $"Exposed through wormhole '{_selfName}': {where}"));
        }
    }

    private async Task RecordEventsAsync(CancellationToken cancellationToken)
    {
        await foreach (var e in _pendingEvents.Reader.ReadAllAsync(cancellationToken))
        {
            await _events.RecordAsync(e.Service, e.Type, e.Reason, e.Message, cancellationToken);
        }
    }

    private sealed record PendingEvent(V1Service Service, string Type, string Reason, string Message);

    [LoggerMessage(EventId = 1800, Level = LogLevel.Warning, Message = "Service {Service}: {Warning}")]
    private partial void LogWarning(string service, string warning);
}
