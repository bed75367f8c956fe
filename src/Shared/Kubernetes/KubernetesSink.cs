using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Runtime;

namespace Wormhole.Tunnel.Kubernetes;

/// <summary>
/// Makes the generated Services and NetworkPolicies in our namespace exactly those of the plan: creates, patches in
/// place (a Service keeps its ClusterIP), and deletes every object labelled <c>exposed-by=wormhole</c> that the plan
/// does not want — the one rule behind garbage collection at start, after peer removal and after expiry. Objects of
/// a peer we still know wait for <c>startupGrace</c> after start before they go, so a restart does not delete (and
/// re-create with a new ClusterIP) the Services its peers are about to re-sync; objects of unknown peers go at once.
/// </summary>
public sealed partial class KubernetesSink(
    IKubernetesClient client,
    KubernetesSinkOptions options,
    TimeProvider time,
    TimeSpan startupGrace,
    Func<string, bool> isKnownPeer,
    ILogger<KubernetesSink> logger) : IPlanSink
{
    private static readonly string Selector = $"{KubeNames.ExposedBy}={KubeNames.ExposedByValue}";
    private readonly DateTimeOffset _started = time.GetUtcNow();

    public async Task<TimeSpan?> ApplyAsync(Plan plan, CancellationToken cancellationToken)
    {
        var desired = GeneratedObjects.Build(plan, options);
        var graceLeft = _started + startupGrace - time.GetUtcNow();
        var deferred = false;
        deferred |= await SyncAsync(desired.Services, ServicePatch, graceLeft, cancellationToken);
        deferred |= await SyncAsync(desired.NetworkPolicies, PolicyPatch, graceLeft, cancellationToken);
        return deferred ? graceLeft : null;
    }

    /// <summary>Returns true when deletions were deferred by the startup grace.</summary>
    private async Task<bool> SyncAsync<T>(IReadOnlyList<T> desired, Func<T, T, JsonObject?> patchFor, TimeSpan graceLeft, CancellationToken cancellationToken)
        where T : class, IKubeObject
    {
        var existing = (await client.ListAsync<T>(options.Namespace, Selector, cancellationToken)).Items
            .ToDictionary(o => o.Metadata.Name!, StringComparer.Ordinal);
        var wanted = new HashSet<string>(StringComparer.Ordinal);
        foreach (var value in desired)
        {
            var name = value.Metadata.Name!;
            if (!wanted.Add(name))
            {
                LogNameClash(typeof(T).Name, name);
                continue;
            }

            if (!existing.TryGetValue(name, out var current))
            {
                await CreateAsync(value, patchFor, cancellationToken);
            }
            else if (patchFor(current, value) is { } patch)
            {
                await client.MergePatchAsync<T>(options.Namespace, name, patch, cancellationToken);
                LogUpdated(typeof(T).Name, name);
            }
        }

        var deferred = false;
        foreach (var name in existing.Keys.Where(n => !wanted.Contains(n)))
        {
            var peer = existing[name].Metadata.Labels?.GetValueOrDefault(KubeNames.ExposedPeer);
            if (graceLeft > TimeSpan.Zero && peer is not null && isKnownPeer(peer))
            {
                deferred = true;
                continue;
            }

            if (await client.DeleteAsync<T>(options.Namespace, name, cancellationToken))
            {
                LogDeleted(typeof(T).Name, name);
            }
        }

        return deferred;
    }

    private async Task CreateAsync<T>(T value, Func<T, T, JsonObject?> patchFor, CancellationToken cancellationToken)
        where T : class, IKubeObject
    {
        try
        {
            await client.CreateAsync(value, cancellationToken);
            LogCreated(typeof(T).Name, value.Metadata.Name!);
        }
        catch (KubeApiException ex) when (ex.Code == 409)
        {
            // It exists without our label (made by hand?): take it over; the missing labels alone make a patch.
            var current = await client.GetAsync<T>(options.Namespace, value.Metadata.Name!, cancellationToken);
            if (current is not null && patchFor(current, value) is { } patch)
            {
                await client.MergePatchAsync<T>(options.Namespace, value.Metadata.Name!, patch, cancellationToken);
                LogUpdated(typeof(T).Name, value.Metadata.Name!);
            }
        }
    }

    private static JsonObject? ServicePatch(Service current, Service wanted)
    {
        var portsEqual = current.Spec.Ports.Count == wanted.Spec.Ports.Count && current.Spec.Ports.Zip(wanted.Spec.Ports).All(p =>
            p.First.Port == p.Second.Port && (p.First.Protocol ?? "TCP") == p.Second.Protocol && p.First.Name is null
            && p.First.TargetPort is { } t && t.ValueKind == JsonValueKind.Number && t.GetInt32() == p.Second.TargetPort!.Value.GetInt32());
        if (portsEqual && MapEquals(current.Spec.Selector, wanted.Spec.Selector) && LabelsCover(current.Metadata.Labels, wanted.Metadata.Labels)
            && (current.Spec.Type ?? "ClusterIP") == "ClusterIP")
        {
            return null;
        }

        return new JsonObject
        {
            ["metadata"] = new JsonObject { ["labels"] = ToJson(wanted.Metadata.Labels!) },
            ["spec"] = new JsonObject
            {
                ["type"] = "ClusterIP",
                ["selector"] = MapPatch(current.Spec.Selector, wanted.Spec.Selector!),
                ["ports"] = JsonSerializer.SerializeToNode(wanted.Spec.Ports, KubeJson.Options),
            },
        };
    }

    private static JsonObject? PolicyPatch(NetworkPolicy current, NetworkPolicy wanted)
    {
        var same = JsonSerializer.Serialize(current.Spec, KubeJson.Options) == JsonSerializer.Serialize(wanted.Spec, KubeJson.Options);
        if (same && LabelsCover(current.Metadata.Labels, wanted.Metadata.Labels))
        {
            return null;
        }

        return new JsonObject
        {
            ["metadata"] = new JsonObject { ["labels"] = ToJson(wanted.Metadata.Labels!) },
            ["spec"] = JsonSerializer.SerializeToNode(wanted.Spec, KubeJson.Options),
        };
    }

    private static bool MapEquals(Dictionary<string, string>? a, Dictionary<string, string>? b) =>
        (a?.Count ?? 0) == (b?.Count ?? 0) && (a is null || a.All(kv => b!.TryGetValue(kv.Key, out var v) && v == kv.Value));

    private static bool LabelsCover(Dictionary<string, string>? current, Dictionary<string, string>? wanted) =>
        wanted is null || wanted.All(kv => current is not null && current.TryGetValue(kv.Key, out var v) && v == kv.Value);

    private static JsonObject ToJson(Dictionary<string, string> map)
    {
        var obj = new JsonObject();
        foreach (var (k, v) in map)
        {
            obj[k] = v;
        }

        return obj;
    }

    /// <summary>A merge patch that makes <paramref name="current"/> equal <paramref name="wanted"/> (null deletes a key).</summary>
    private static JsonObject MapPatch(Dictionary<string, string>? current, Dictionary<string, string> wanted)
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
}

/// <summary>JSON options matching the apiserver's conventions (camelCase, nulls left out).</summary>
public static class KubeJson
{
    public static readonly JsonSerializerOptions Options = new(JsonSerializerDefaults.Web)
    {
        DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull,
    };
}
