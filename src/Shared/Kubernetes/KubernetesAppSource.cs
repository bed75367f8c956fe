using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Runtime;

namespace Wormhole.Tunnel.Kubernetes;

/// <summary>
/// Local apps from annotated Services in every namespace. The informer's watch events drive it directly: expose,
/// un-annotate, rename, port changes and deletes take effect on the event itself. Each Service whose outcome changes
/// gets a Normal event naming where it is exposed, or a Warning saying what is wrong with its annotations.
/// </summary>
public sealed partial class KubernetesAppSource : ILocalAppSource
{
    private readonly ResourceInformer<Service> _informer;
    private readonly ReconcileSignal _signal;
    private readonly EventRecorder _events;
    private readonly string _selfName;
    private readonly ILogger<KubernetesAppSource> _logger;
    private readonly ReconcileSignal _changed = new();
    private readonly Dictionary<string, string> _reported = new(StringComparer.Ordinal);
    private volatile IReadOnlyList<LocalApp> _current = [];

    public KubernetesAppSource(IKubernetesClient client, string selfName, ReconcileSignal signal, EventRecorder events, TimeProvider time, ILoggerFactory loggerFactory)
    {
        _informer = new ResourceInformer<Service>(client, null, null, time, loggerFactory.CreateLogger<ResourceInformer<Service>>());
        _informer.Changed += _changed.Request;
        _signal = signal;
        _events = events;
        _selfName = selfName;
        _logger = loggerFactory.CreateLogger<KubernetesAppSource>();
    }

    public IReadOnlyList<LocalApp> Current => _current;

    /// <summary>Completes after the first list of Services, so the first plan does not withdraw everything.</summary>
    public Task ReadyAsync(CancellationToken cancellationToken) => _informer.ReadyAsync(cancellationToken);

    public async Task RunAsync(CancellationToken cancellationToken)
    {
        var informer = _informer.RunAsync(cancellationToken);
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                await _changed.WaitAsync(cancellationToken);
                await RecomputeAsync(cancellationToken);
            }
        }
        finally
        {
            await informer.ContinueWith(static _ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
        }
    }

    private async Task RecomputeAsync(CancellationToken cancellationToken)
    {
        var apps = new List<LocalApp>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var service in _informer.Snapshot().OrderBy(s => s.Metadata.Namespace, StringComparer.Ordinal).ThenBy(s => s.Metadata.Name, StringComparer.Ordinal))
        {
            var key = $"{service.Metadata.Namespace}/{service.Metadata.Name}";
            seen.Add(key);
            var derived = ServiceApps.Derive(service);
            var taken = derived.Apps.Where(a => apps.Any(b => b.Name == a.Name)).Select(a => a.Name).ToList();
            var warnings = derived.Warnings.Concat(taken.Select(n => $"app name '{n}' is already offered by another Service; this one is skipped")).ToList();
            apps.AddRange(derived.Apps.Where(a => !taken.Contains(a.Name)));
            await ReportAsync(service, key, derived.Apps.Where(a => !taken.Contains(a.Name)).ToList(), warnings, cancellationToken);
        }

        foreach (var gone in _reported.Keys.Where(k => !seen.Contains(k)).ToList())
        {
            _reported.Remove(gone);
        }

        _current = apps;
        _signal.Request();
    }

    /// <summary>An event per Service whenever what it offers (or what is wrong with it) changes.</summary>
    private async Task ReportAsync(Service service, string key, IReadOnlyList<LocalApp> apps, IReadOnlyList<string> warnings, CancellationToken cancellationToken)
    {
        var summary = string.Join(";", apps.Select(a => $"{a.Name}:{a.OriginalPort}")) + "|" + string.Join(";", warnings);
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
            LogWarning(key, warning);
            await _events.RecordAsync(service, EventRecorder.Warning, "WormholeInvalidExposure", warning, cancellationToken);
        }

        if (apps.Count > 0)
        {
            var where = string.Join(", ", apps.Select(a => $"app '{a.Name}' (port {a.OriginalPort}) → Service {KubeNames.ObjectName(_selfName, a.Name)} on each peer"));
            await _events.RecordAsync(service, EventRecorder.Normal, "WormholeExposed", $"Exposed through wormhole '{_selfName}': {where}", cancellationToken);
        }
    }

    [LoggerMessage(EventId = 1800, Level = LogLevel.Warning, Message = "Service {Service}: {Warning}")]
    private partial void LogWarning(string service, string warning);
}
