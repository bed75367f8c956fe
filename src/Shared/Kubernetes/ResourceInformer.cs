using System.Collections.Immutable;
using System.Collections.ObjectModel;
using k8s;
using k8s.Models;
using Microsoft.Extensions.Logging;

using Wormhole.Tunnel.Resilience;

namespace Wormhole.Tunnel.Kubernetes;

/// <summary>
/// Keeps a local copy of one kind of Kubernetes object (KubernetesClient.Aot has no informer): LIST (paged), then WATCH from the list's resourceVersion, following
/// bookmarks, re-listing when the version is gone (410), resuming from the last seen version when a watch ends,
/// and reconnecting with jittered exponential backoff after failures. Readers take lock-free snapshots.
/// </summary>
public sealed class ResourceInformer<T>
    where T : class, IKubernetesObject<V1ObjectMeta>
{
    private readonly KubeApi _client;
    private readonly string? _namespace;
    private readonly string? _labelSelector;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly string _resource = KubeResource.For<T>().Plural;
    private readonly TaskCompletionSource _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Cache _cache = new(ImmutableSortedDictionary.Create<string, T>(StringComparer.Ordinal));
    private long _lists;
    private volatile string? _lastProblem;

    /// <param name="ns">Namespace, or null for all namespaces.</param>
    public ResourceInformer(KubeApi client, string? ns, string? labelSelector, TimeProvider time, ILogger logger)
    {
        _client = client;
        _namespace = ns;
        _labelSelector = labelSelector;
        _time = time;
        _logger = logger;
    }

    /// <summary>Raised on the informer's loop after each list and each applied watch event; handlers must be quick (signal, don't work).</summary>
    public event Action? Changed;

    /// <summary>The waits after consecutive failures (doubling to a cap, with jitter).</summary>
    internal RetrySchedule Schedule { get; init; } = RetrySchedule.KubernetesWatch;

    /// <summary>A watch that ends sooner than this without delivering anything counts as a failure (no hot loop against a broken server).</summary>
    internal TimeSpan MinWatchDuration { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>The objects as of the last applied event, ordered by namespace/name; an immutable copy.</summary>
    public IReadOnlyCollection<T> Snapshot() => Volatile.Read(ref _cache).Values;

    /// <summary>
    /// How many lists have been applied (the first, and a relist after 410 or a failure). Between two lists the cache
    /// passed through every state the watch delivered; across a relist it may have skipped some.
    /// </summary>
    public long ListCount => Interlocked.Read(ref _lists);

    /// <summary>Why the last list or watch failed, until one succeeds again; null when none has failed.</summary>
    public string? LastProblem => _lastProblem;

    /// <summary>Completes once the first list has been applied.</summary>
    public Task ReadyAsync(CancellationToken cancellationToken) => _ready.Task.WaitAsync(cancellationToken);

    /// <summary>Lists and watches until <paramref name="cancellationToken"/> is cancelled; returns then without throwing.</summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        string? resourceVersion = null; // null: list before watching
        var failures = 0;
        while (!cancellationToken.IsCancellationRequested)
        {
            string? problem = null;
            var gone = false;
            try
            {
                resourceVersion ??= await ListAsync(cancellationToken);
                InformerLog.Watching(_logger, _resource, resourceVersion);
                var started = _time.GetTimestamp();
                var delivered = false;
                await foreach (var change in _client.WatchAsync<T>(_namespace, _labelSelector, resourceVersion, cancellationToken))
                {
                    if (change.Type == WatchEventTypes.Error)
                    {
                        if (change.Status?.Code == 410)
                        {
                            InformerLog.Expired(_logger, _resource, resourceVersion);
                            resourceVersion = null;
                            gone = true;
                        }

                        problem = $"the watch sent an error {change.Status?.Code} {change.Status?.Reason}: {change.Status?.Message}";
                        break;
                    }

                    resourceVersion = Apply(change) ?? resourceVersion;
                    delivered = true;
                    failures = 0;
                }

                if (problem is null && !delivered && _time.GetElapsedTime(started) < MinWatchDuration)
                {
                    problem = "the watch ended at once without events";
                }
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                problem = Describe(ex);
            }

            _lastProblem = problem;
            if (problem is null)
            {
                InformerLog.WatchEnded(_logger, _resource, resourceVersion);
                continue;
            }

            failures++;
            if (gone && failures == 1)
            {
                continue; // gone (410): relist at once; a second 410 in a row waits like any failure
            }

            var delay = Schedule.Delay(failures);
            InformerLog.Failed(_logger, _resource, failures, (long)delay.TotalMilliseconds, problem);
            _client.OnRetry?.Invoke(new RetryNotice(Schedule.Operation, failures, delay, null));
            try
            {
                await Task.Delay(delay, _time, cancellationToken);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    private async Task<string> ListAsync(CancellationToken cancellationToken)
    {
        var list = await _client.ListAsync<T>(_namespace, _labelSelector, cancellationToken);
        var resourceVersion = list.ResourceVersion;
        if (string.IsNullOrEmpty(resourceVersion))
        {
            throw new InvalidOperationException($"The list of {_resource} has no resourceVersion.");
        }

        var items = ImmutableSortedDictionary.CreateBuilder<string, T>(StringComparer.Ordinal);
        foreach (var item in list.Items)
        {
            items[Key(item)] = item;
        }

        Volatile.Write(ref _cache, new Cache(items.ToImmutable()));
        Interlocked.Increment(ref _lists);
        _lastProblem = null;
        InformerLog.Listed(_logger, _resource, items.Count, resourceVersion);
        // Ready before the change is announced: a listener that checks ReadyAsync on hearing of it must find it done.
        _ready.TrySetResult();
        RaiseChanged();
        return resourceVersion;
    }

    /// <summary>Applies one watch event; returns the resourceVersion it carries.</summary>
    private string? Apply(WatchEvent<T> change)
    {
        if (change.Item is not { } item)
        {
            return null;
        }

        var items = _cache.Items;
        var updated = change.Type switch
        {
            WatchEventTypes.Added or WatchEventTypes.Modified => items.SetItem(Key(item), item),
            WatchEventTypes.Deleted => items.Remove(Key(item)),
            _ => items, // BOOKMARK (or a type we do not know): only the version moves on
        };
        if (!ReferenceEquals(updated, items))
        {
            Volatile.Write(ref _cache, new Cache(updated));
            RaiseChanged();
        }

        return item.Metadata?.ResourceVersion;
    }

    private void RaiseChanged()
    {
        try
        {
            Changed?.Invoke();
        }
        catch (Exception ex)
        {
            InformerLog.ChangedHandlerFailed(_logger, _resource, ex);
        }
    }

    private static string Key(T item) => $"{item.Metadata?.NamespaceProperty}/{item.Metadata?.Name}";

    private static string Describe(Exception ex)
    {
        var reasons = new List<string>();
        for (var e = ex; e is not null; e = e.InnerException)
        {
            if (!reasons.Contains(e.Message))
            {
                reasons.Add(e.Message);
            }
        }

        return string.Join(": ", reasons);
    }

    /// <summary>One immutable state of the cache; its value list is built on first read.</summary>
    private sealed class Cache(ImmutableSortedDictionary<string, T> items)
    {
        private ReadOnlyCollection<T>? _values;

        public ImmutableSortedDictionary<string, T> Items => items;

        public ReadOnlyCollection<T> Values => _values ??= Array.AsReadOnly(items.Values.ToArray());
    }
}

internal static partial class InformerLog
{
    [LoggerMessage(EventId = 1500, Level = LogLevel.Debug, Message = "Listed {Count} {Resource} at resourceVersion {ResourceVersion}")]
    public static partial void Listed(ILogger logger, string resource, int count, string resourceVersion);

    [LoggerMessage(EventId = 1501, Level = LogLevel.Debug, Message = "Watching {Resource} from resourceVersion {ResourceVersion}")]
    public static partial void Watching(ILogger logger, string resource, string resourceVersion);

    [LoggerMessage(EventId = 1502, Level = LogLevel.Debug, Message = "Watch of {Resource} ended; resuming from resourceVersion {ResourceVersion}")]
    public static partial void WatchEnded(ILogger logger, string resource, string? resourceVersion);

    [LoggerMessage(EventId = 1503, Level = LogLevel.Information, Message = "resourceVersion {ResourceVersion} of {Resource} is gone (410); listing again")]
    public static partial void Expired(ILogger logger, string resource, string resourceVersion);

    [LoggerMessage(EventId = 1504, Level = LogLevel.Warning, Message = "Informer for {Resource} failed (attempt {Attempt}); retrying in {DelayMs} ms: {Reason}")]
    public static partial void Failed(ILogger logger, string resource, int attempt, long delayMs, string reason);

    [LoggerMessage(EventId = 1505, Level = LogLevel.Error, Message = "A Changed handler of the {Resource} informer threw")]
    public static partial void ChangedHandlerFailed(ILogger logger, string resource, Exception exception);
}
