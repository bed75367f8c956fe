using System.Text.Json.Nodes;
using k8s;
using k8s.Models;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.Kubernetes;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Runtime;

namespace Wormhole.Tunnel.Sinks;

/// <summary>
/// Makes the generated Services and NetworkPolicies in our namespace exactly those of the plan: creates, patches in
/// place (a Service keeps its ClusterIP), and deletes every object of ours that the plan does not want — the one rule
/// behind garbage collection at start, after peer removal and after expiry.
/// <para>
/// Ours means: labelled <c>wormhole.glothriel.github.com/exposed-by=wormhole</c> and
/// <c>wormhole.glothriel.github.com/instance=&lt;this side's --name&gt;</c>. An object labelled exposed-by=wormhole
/// without an instance label (made before objects carried it, or by glothriel/wormhole) is ours only when its selector
/// — a Service's <c>spec.selector</c>, a NetworkPolicy's <c>spec.podSelector.matchLabels</c> — equals our pod labels,
/// i.e. it points at our pods; the next patch adopts it (it gains the instance label). Nothing else is ever patched or
/// deleted, so several sides can share a namespace. When a remote app's object name is taken by an object that is not
/// ours, that app gets no object of that kind here: a Warning Event on the object and a log line name the clash, once
/// until it goes away or changes; the pass still succeeds, as there is nothing a retry could fix.
/// </para>
/// <para>
/// The grace after a restart: an unwanted object of ours that existed at start (it was in this sink's first list of
/// its kind), of a peer that is still paired and has not reported its apps since start, waits until that peer's
/// first sync or <c>startupGrace</c> after start, whichever comes first — so a restart does not delete (and re-create
/// with a new ClusterIP) the Services its peers are about to re-sync. Once a peer is in
/// <see cref="Plan.ReportedPeers"/>, its app set is authoritative and its unwanted objects go at once. Objects made
/// after the start, and objects of peers that are not paired, never wait.
/// </para>
/// </summary>
public sealed partial class KubernetesSink(
    KubeApi client,
    KubernetesSinkOptions options,
    TimeProvider time,
    TimeSpan startupGrace,
    Func<string, bool> isKnownPeer,
    EventRecorder? events,
    ILogger logger) : IPlanSink
{
    /// <summary>The reason of the Warning Event on an object whose name a remote app wants but that is not ours.</summary>
    public const string NameClashReason = "WormholeNameClash";

    private static readonly string Selector = $"{KubeNames.ExposedBy}={KubeNames.ExposedByValue}";
    private static readonly TimeSpan RetrySoon = TimeSpan.FromSeconds(1);
    private static readonly Kind<V1Service> Services = new("Service", ServicePatch, s => s.Spec?.Selector);
    private static readonly Kind<V1NetworkPolicy> Policies = new("NetworkPolicy", PolicyPatch, p => p.Spec?.PodSelector?.MatchLabels);
    private readonly DateTimeOffset _started = time.GetUtcNow();

    // Clashes already reported, by (kind, name): what the clash was (the object's uid, the peer and app wanting the name).
    private readonly Dictionary<(string Kind, string Name), string> _clashes = [];

    // For the grace: our objects in the first list of each kind (name → exposed-peer label), and the peers (as label
    // values) that have reported their apps since start.
    private readonly Dictionary<string, Dictionary<string, string?>> _atStart = new(StringComparer.Ordinal);
    private readonly HashSet<string> _reportedSinceStart = new(StringComparer.Ordinal);

    public string Name => "kubernetes";

    /// <summary>Never: every pass lists our objects and repairs what drifted.</summary>
    public bool IsUpToDate(Plan plan) => false;

    public async Task<SinkResult> ApplyAsync(Plan plan, CancellationToken cancellationToken)
    {
        var desired = GeneratedObjects.Build(plan, options);
        var wantedBy = new Dictionary<string, RemoteListener>(StringComparer.Ordinal);
        foreach (var listener in plan.RemoteListeners)
        {
            wantedBy.TryAdd(KubeNames.ObjectName(listener.Peer, listener.App), listener);
        }

        var graceLeft = _started + startupGrace - time.GetUtcNow();
        if (graceLeft > TimeSpan.Zero)
        {
            _reportedSinceStart.UnionWith(plan.ReportedPeers.Select(KubeNames.LabelValue));
        }

        var services = await SyncAsync(desired.Services, Services, wantedBy, graceLeft, cancellationToken);
        var policies = await SyncAsync(desired.NetworkPolicies, Policies, wantedBy, graceLeft, cancellationToken);
        return new SinkResult { RetryAfter = services is null ? policies : policies is null || services < policies ? services : policies };
    }

    /// <summary>Returns when to pass again (deletions deferred by the startup grace, an object that vanished mid-pass), or null.</summary>
    private async Task<TimeSpan?> SyncAsync<T>(
        IReadOnlyList<T> desired, Kind<T> kind, Dictionary<string, RemoteListener> wantedBy, TimeSpan graceLeft, CancellationToken cancellationToken)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        var listed = (await client.ListAsync<T>(options.Namespace, Selector, cancellationToken)).Items;
        var ours = listed.Where(o => OwnerOf(o, kind) is null).ToDictionary(o => o.Metadata.Name!, StringComparer.Ordinal);
        var others = listed.Where(o => OwnerOf(o, kind) is not null).ToDictionary(o => o.Metadata.Name!, StringComparer.Ordinal);
        if (!_atStart.TryGetValue(kind.Name, out var atStart))
        {
            atStart = ours.ToDictionary(kv => kv.Key, kv => PeerOf(kv.Value), StringComparer.Ordinal);
            _atStart[kind.Name] = atStart;
        }

        var wanted = new HashSet<string>(StringComparer.Ordinal);
        var clashes = new HashSet<string>(StringComparer.Ordinal);
        TimeSpan? retry = null;
        foreach (var value in desired)
        {
            var name = value.Metadata.Name!;
            if (!wanted.Add(name))
            {
                LogNameClash(kind.Name, name);
                continue;
            }

            var current = ours.GetValueOrDefault(name) ?? others.GetValueOrDefault(name);
            if (current is null)
            {
                try
                {
                    await client.CreateAsync(value, cancellationToken);
                    LogCreated(kind.Name, name);
                    continue;
                }
                catch (KubeApiException ex) when (ex.Code == 409)
                {
                    // It exists without the exposed-by label, so the list did not show it: whose is it?
                    current = await client.GetAsync<T>(options.Namespace, name, cancellationToken);
                    if (current is null)
                    {
                        retry = RetrySoon;
                        continue;
                    }
                }
            }

            if (OwnerOf(current, kind) is { } owner)
            {
                clashes.Add(name);
                await ReportClashAsync(current, kind, owner, wantedBy[name], cancellationToken);
            }
            else if (kind.Patch(current, value) is { } patch)
            {
                await client.MergePatchAsync<T>(options.Namespace, name, patch, cancellationToken);
                LogUpdated(kind.Name, name);
            }
        }

        foreach (var gone in _clashes.Keys.Where(k => k.Kind == kind.Name && !clashes.Contains(k.Name)).ToList())
        {
            _clashes.Remove(gone);
        }

        foreach (var name in ours.Keys.Where(n => !wanted.Contains(n)))
        {
            var peer = PeerOf(ours[name]);
            if (graceLeft > TimeSpan.Zero && peer is not null && atStart.TryGetValue(name, out var peerAtStart) && peerAtStart == peer
                && !_reportedSinceStart.Contains(peer) && isKnownPeer(peer))
            {
                retry = retry is null || graceLeft < retry ? graceLeft : retry;
                continue;
            }

            if (await client.DeleteAsync<T>(options.Namespace, name, cancellationToken))
            {
                LogDeleted(kind.Name, name);
            }
        }

        return retry;
    }

    private static string? PeerOf(IKubernetesObject<V1ObjectMeta> value) => value.Metadata?.Labels is { } labels && labels.TryGetValue(KubeNames.ExposedPeer, out var peer) ? peer : null;

    /// <summary>Null when the object is ours (see the class summary); otherwise why it is not, for the clash report.</summary>
    private string? OwnerOf<T>(T value, Kind<T> kind)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        var labels = value.Metadata?.Labels;
        if (labels is null || !labels.TryGetValue(KubeNames.ExposedBy, out var by) || by != KubeNames.ExposedByValue)
        {
            return $"it is not labelled {KubeNames.ExposedBy}={KubeNames.ExposedByValue}";
        }

        if (labels.TryGetValue(KubeNames.Instance, out var instance))
        {
            return instance == options.InstanceLabel ? null : $"it is labelled {KubeNames.Instance}={instance}";
        }

        return MapEquals(kind.Selector(value), options.PodLabels) ? null : $"it has no {KubeNames.Instance} label and selects other pods than ours";
    }

    /// <summary>A Warning Event on the object and a log line, once per clash (until it goes away or changes).</summary>
    private async Task ReportClashAsync<T>(T current, Kind<T> kind, string owner, RemoteListener wantedBy, CancellationToken cancellationToken)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        var name = current.Metadata.Name!;
        var clash = $"{current.Metadata.Uid}|{wantedBy.Peer}|{wantedBy.App}";
        if (_clashes.TryGetValue((kind.Name, name), out var reported) && reported == clash)
        {
            return;
        }

        _clashes[(kind.Name, name)] = clash;
        LogNotOurs(kind.Name, options.Namespace, name, owner, LogText.Of(wantedBy.App), LogText.Of(wantedBy.Peer));
        if (events is not null)
        {
            await events.RecordAsync(
                current,
                EventRecorder.Warning,
                NameClashReason,
                $"{kind.Name} {name} is left alone: it was not made by wormhole '{options.Instance}' ({owner}). Remote app '{wantedBy.App}' of peer " +
                $"'{wantedBy.Peer}' maps to this name and gets no {kind.Name} here; rename the app on that peer (annotation {KubeNames.LabelPrefix}name) or this object.",
                cancellationToken);
        }
    }

    private static JsonObject? ServicePatch(V1Service current, V1Service wanted)
    {
        var currentPorts = current.Spec?.Ports ?? [];
        var wantedPorts = wanted.Spec.Ports;
        var portsEqual = currentPorts.Count == wantedPorts.Count && currentPorts.Zip(wantedPorts).All(p =>
            p.First.Port == p.Second.Port && (p.First.Protocol ?? "TCP") == p.Second.Protocol && p.First.Name is null
            && p.First.TargetPort is { } t && int.TryParse(t.Value, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var number)
            && number.ToString(System.Globalization.CultureInfo.InvariantCulture) == t.Value && number == p.Second.TargetPort.ToInt());
        if (portsEqual && MapEquals(current.Spec?.Selector, wanted.Spec.Selector) && LabelsCover(current.Metadata?.Labels, wanted.Metadata.Labels)
            && (current.Spec?.Type ?? "ClusterIP") == "ClusterIP")
        {
            return null;
        }

        return new JsonObject
        {
            ["metadata"] = new JsonObject { ["labels"] = ToJson(wanted.Metadata.Labels) },
            ["spec"] = new JsonObject
            {
                ["type"] = "ClusterIP",
                ["selector"] = MapPatch(current.Spec?.Selector, wanted.Spec.Selector),
                ["ports"] = ToNode(wanted.Spec)!["ports"]!.DeepClone(),
            },
        };
    }

    private static JsonObject? PolicyPatch(V1NetworkPolicy current, V1NetworkPolicy wanted)
    {
        // Only the fields we write are compared: the apiserver may hold others (defaulted or set by someone else).
        var spec = current.Spec ?? new V1NetworkPolicySpec();
        var known = new V1NetworkPolicySpec { PodSelector = spec.PodSelector, Ingress = spec.Ingress, PolicyTypes = spec.PolicyTypes };
        if (JsonNode.DeepEquals(ToNode(known), ToNode(wanted.Spec)) && LabelsCover(current.Metadata?.Labels, wanted.Metadata.Labels))
        {
            return null;
        }

        return new JsonObject
        {
            ["metadata"] = new JsonObject { ["labels"] = ToJson(wanted.Metadata.Labels) },
            ["spec"] = ToNode(wanted.Spec),
        };
    }

    /// <summary>A library model as JSON, written by its source-generated serializer (camelCase, nulls left out).</summary>
    private static JsonNode? ToNode(object value) => JsonNode.Parse(KubernetesJson.Serialize(value));

    private static bool MapEquals(IEnumerable<KeyValuePair<string, string>>? a, IEnumerable<KeyValuePair<string, string>>? b)
    {
        var left = a?.ToList() ?? [];
        var right = b?.ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal) ?? [];
        return left.Count == right.Count && left.All(kv => right.TryGetValue(kv.Key, out var v) && v == kv.Value);
    }

    private static bool LabelsCover(IDictionary<string, string>? current, IDictionary<string, string>? wanted) =>
        wanted is null || wanted.All(kv => current is not null && current.TryGetValue(kv.Key, out var v) && v == kv.Value);

    private static JsonObject ToJson(IDictionary<string, string> map)
    {
        var obj = new JsonObject();
        foreach (var (k, v) in map)
        {
            obj[k] = v;
        }

        return obj;
    }

    /// <summary>A merge patch that makes <paramref name="current"/> equal <paramref name="wanted"/> (null deletes a key).</summary>
    private static JsonObject MapPatch(IDictionary<string, string>? current, IDictionary<string, string> wanted)
    {
        var obj = ToJson(wanted);
        foreach (var key in current?.Keys ?? Enumerable.Empty<string>())
        {
            if (!wanted.ContainsKey(key))
            {
                obj[key] = null;
            }
        }

        return obj;
    }

    [LoggerMessage(EventId = 1600, Level = LogLevel.Information, Message = "Created {Kind} {Name}")]
    private partial void LogCreated(string kind, string name);

    [LoggerMessage(EventId = 1601, Level = LogLevel.Information, Message = "Updated {Kind} {Name}")]
    private partial void LogUpdated(string kind, string name);

    [LoggerMessage(EventId = 1602, Level = LogLevel.Information, Message = "Deleted {Kind} {Name}: no longer wanted")]
    private partial void LogDeleted(string kind, string name);

    [LoggerMessage(EventId = 1603, Level = LogLevel.Warning, Message = "Two remote apps map to the same {Kind} name {Name}; only the first is created")]
    private partial void LogNameClash(string kind, string name);

    [LoggerMessage(EventId = 1604, Level = LogLevel.Warning, Message = "{Kind} {Namespace}/{Name} is not ours ({Owner}); it is left alone, and remote app {App} of peer {Peer} gets no object of that kind here")]
    private partial void LogNotOurs(string kind, string @namespace, string name, string owner, string app, string peer);

    /// <summary>What the sink does differently per kind: the patch that makes an object ours as wanted, and its pod selector.</summary>
    private sealed record Kind<T>(string Name, Func<T, T, JsonObject?> Patch, Func<T, IDictionary<string, string>?> Selector);
}
