using System.Globalization;
using System.Text.Json.Nodes;

namespace Wormhole.Tunnel.KubeEmulator;

/// <summary>
/// Server-side printing (<c>Accept: application/json;as=Table;v=v1;g=meta.k8s.io</c>) with the columns of the
/// apiserver's printers, so <c>kubectl get</c> output looks like it does against a real cluster.
/// </summary>
internal static class Tables
{
    public static bool Requested(string? accept) => accept?.Contains("as=Table", StringComparison.Ordinal) == true;

    public static JsonObject Build(ResourceKind kind, IEnumerable<JsonObject> items, long resourceVersion, string? includeObject, DateTimeOffset now)
    {
        var columns = Columns(kind).Select(c => (JsonNode)new JsonObject
        {
            ["name"] = c.Name, ["type"] = c.Name == "Count" ? "integer" : "string", ["format"] = c.Name == "Name" ? "name" : "",
            ["description"] = c.Name, ["priority"] = c.Priority,
        });
        var rows = items.Select(item =>
        {
            var row = new JsonObject { ["cells"] = new JsonArray(Cells(kind, item, now).ToArray()) };
            if (includeObject != "None")
            {
                row["object"] = includeObject == "Object" ? item.DeepClone()
                    : new JsonObject { ["kind"] = "PartialObjectMetadata", ["apiVersion"] = "meta.k8s.io/v1", ["metadata"] = item["metadata"]?.DeepClone() };
            }

            return (JsonNode)row;
        });
        return new JsonObject
        {
            ["kind"] = "Table", ["apiVersion"] = "meta.k8s.io/v1",
            ["metadata"] = new JsonObject { ["resourceVersion"] = resourceVersion.ToString(CultureInfo.InvariantCulture) },
            ["columnDefinitions"] = new JsonArray(columns.ToArray()),
            ["rows"] = new JsonArray(rows.ToArray()),
        };
    }

    private static IEnumerable<(string Name, int Priority)> Columns(ResourceKind kind) => kind.Plural switch
    {
        "services" => [("Name", 0), ("Type", 0), ("Cluster-IP", 0), ("External-IP", 0), ("Port(s)", 0), ("Age", 0), ("Selector", 1)],
        "namespaces" => [("Name", 0), ("Status", 0), ("Age", 0)],
        "networkpolicies" => [("Name", 0), ("Pod-Selector", 0), ("Age", 0)],
        "events" => [("Last Seen", 0), ("Type", 0), ("Reason", 0), ("Object", 0), ("Subobject", 1), ("Source", 1), ("Message", 0), ("First Seen", 1), ("Count", 1), ("Name", 1)],
        _ => [("Name", 0), ("Age", 0)],
    };

    private static IEnumerable<JsonNode?> Cells(ResourceKind kind, JsonObject obj, DateTimeOffset now)
    {
        var name = obj.Str("metadata.name");
        var age = Age(obj.Str("metadata.creationTimestamp"), now);
        switch (kind.Plural)
        {
            case "services":
                var type = obj.Str("spec.type") ?? "ClusterIP";
                var external = string.Join(",", (obj.At("spec.externalIPs") as JsonArray ?? []).Select(v => v?.ToString()));
                var ingress = string.Join(",", obj.At("status.loadBalancer.ingress").Objects().Select(i => i.Str("ip") ?? i.Str("hostname")).Append(external).Where(s => s?.Length > 0));
                var ports = string.Join(",", obj.At("spec.ports").Objects().Select(p =>
                    p["nodePort"].Int() is { } node ? $"{p["port"].Int()}:{node}/{p.Str("protocol")}" : $"{p["port"].Int()}/{p.Str("protocol")}"));
                var selector = string.Join(",", obj.At("spec.selector").StringMap().OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => $"{p.Key}={p.Value}"));
                return [name, type, obj.Str("spec.clusterIP") is { Length: > 0 } ip ? ip : "<none>",
                    type switch
                    {
                        "ExternalName" => obj.Str("spec.externalName"),
                        "LoadBalancer" => ingress.Length > 0 ? ingress : "<pending>",
                        _ => external.Length > 0 ? external : "<none>",
                    },
                    ports.Length > 0 ? ports : "<none>", age, selector.Length > 0 ? selector : "<none>"];
            case "namespaces":
                return [name, obj.Str("status.phase"), age];
            case "networkpolicies":
                return [name, LabelSelector.Format(obj.At("spec.podSelector")), age];
            case "events":
                var last = obj.Str("lastTimestamp") ?? obj.Str("eventTime") ?? obj.Str("metadata.creationTimestamp");
                var source = obj.Str("source.component") ?? obj.Str("reportingComponent") ?? "";
                return [Age(last, now), obj.Str("type"), obj.Str("reason"),
                    $"{obj.Str("involvedObject.kind")?.ToLowerInvariant()}/{obj.Str("involvedObject.name")}", obj.Str("involvedObject.fieldPath") ?? "",
                    obj.Str("source.host") is { Length: > 0 } host ? $"{source}, {host}" : source, obj.Str("message"),
                    Age(obj.Str("firstTimestamp") ?? last, now), obj["count"].Int() ?? 1, name];
            default:
                return [name, age];
        }
    }

    private static string Age(string? timestamp, DateTimeOffset now) =>
        DateTimeOffset.TryParse(timestamp, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var t) ? HumanDuration(now - t) : "<unknown>";

    /// <summary>k8s.io/apimachinery/pkg/util/duration.HumanDuration.</summary>
    public static string HumanDuration(TimeSpan d)
    {
        var seconds = (long)d.TotalSeconds;
        if (seconds < -1)
        {
            return "<invalid>";
        }

        if (seconds < 0)
        {
            return "0s";
        }

        if (seconds < 120)
        {
            return $"{seconds}s";
        }

        var minutes = seconds / 60;
        var hours = minutes / 60;
        var days = hours / 24;
        return minutes switch
        {
            < 10 => seconds % 60 == 0 ? $"{minutes}m" : $"{minutes}m{seconds % 60}s",
            < 180 => $"{minutes}m",
            _ when hours < 8 => minutes % 60 == 0 ? $"{hours}h" : $"{hours}h{minutes % 60}m",
            _ when hours < 48 => $"{hours}h",
            _ when hours < 192 => hours % 24 == 0 ? $"{days}d" : $"{days}d{hours % 24}h",
            _ when hours < 24 * 365 * 2 => $"{days}d",
            _ when hours < 24 * 365 * 8 => days % 365 == 0 ? $"{days / 365}y" : $"{days / 365}y{days % 365}d",
            _ => $"{days / 365}y",
        };
    }
}
