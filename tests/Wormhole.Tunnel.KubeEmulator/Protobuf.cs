using System.Text;
using System.Text.Json.Nodes;

namespace Wormhole.Tunnel.KubeEmulator;

/// <summary>
/// Just enough of the apiserver's protobuf encoding (<c>k8s\0</c> + runtime.Unknown) to read what kubectl's typed
/// clients send: <c>kubectl create namespace</c> and <c>kubectl create service</c> POST protobuf and cannot fall back to JSON.
/// Field numbers are those of k8s.io/api/core/v1/generated.proto; responses stay JSON, which those clients also accept.
/// </summary>
internal static class Protobuf
{
    public const string ContentType = "application/vnd.kubernetes.protobuf";

    // "number name type": s string, i integer, b bool (false = unset), b? *bool, map map<string,string>, *T repeated T, otherwise a message below.
    private static readonly Dictionary<string, Dictionary<long, (string Name, string Type)>> Messages = new Dictionary<string, string>
    {
        ["Unknown"] = "1 typeMeta TypeMeta; 2 raw bytes",
        ["TypeMeta"] = "1 apiVersion s; 2 kind s",
        ["ObjectMeta"] = "1 name s; 2 generateName s; 3 namespace s; 4 selfLink s; 5 uid s; 6 resourceVersion s; 7 generation i; 8 creationTimestamp Time; "
            + "9 deletionTimestamp Time; 10 deletionGracePeriodSeconds i; 11 labels map; 12 annotations map; 14 finalizers *s",
        ["Time"] = "1 seconds i; 2 nanos i",
        ["Namespace"] = "1 metadata ObjectMeta; 2 spec NamespaceSpec",
        ["NamespaceSpec"] = "1 finalizers *s",
        ["Service"] = "1 metadata ObjectMeta; 2 spec ServiceSpec",
        ["ServiceSpec"] = "1 ports *ServicePort; 2 selector map; 3 clusterIP s; 4 type s; 5 externalIPs *s; 7 sessionAffinity s; 8 loadBalancerIP s; "
            + "9 loadBalancerSourceRanges *s; 10 externalName s; 11 externalTrafficPolicy s; 12 healthCheckNodePort i; 13 publishNotReadyAddresses b; "
            + "17 ipFamilyPolicy s; 18 clusterIPs *s; 19 ipFamilies *s; 20 allocateLoadBalancerNodePorts b?; 21 loadBalancerClass s; 22 internalTrafficPolicy s; "
            + "23 trafficDistribution s",
        ["ServicePort"] = "1 name s; 2 protocol s; 3 port i; 4 targetPort IntOrString; 5 nodePort i; 6 appProtocol s",
        ["IntOrString"] = "1 type i; 2 intVal i; 3 strVal s",
        ["MapEntry"] = "1 key s; 2 value s",
    }.ToDictionary(p => p.Key, p => p.Value.Split(';', StringSplitOptions.TrimEntries).Select(f => f.Split(' ')).ToDictionary(f => long.Parse(f[0], System.Globalization.CultureInfo.InvariantCulture), f => (f[1], f[2])));

    public static JsonObject Decode(byte[] body)
    {
        if (body.Length < 4 || !body.AsSpan(0, 4).SequenceEqual("k8s\0"u8))
        {
            throw KubeApiException.BadRequest("provided protobuf is not a Kubernetes object: missing the k8s\\0 prefix");
        }

        var unknown = Message(body.AsMemory(4), "Unknown");
        var kind = unknown.Str("typeMeta.kind") ?? "";
        var raw = Convert.FromBase64String(unknown.Str("raw") ?? "");
        var obj = Messages.ContainsKey(kind) ? Message(raw, kind) : throw KubeApiException.UnsupportedMediaType("application/json (protobuf only for Namespace and Service)");
        obj["kind"] = kind;
        obj["apiVersion"] = unknown.Str("typeMeta.apiVersion");
        return obj;
    }

    private static JsonObject Message(ReadOnlyMemory<byte> data, string type)
    {
        var fields = Messages[type];
        var obj = new JsonObject();
        var span = data;
        while (span.Length > 0)
        {
            var key = Varint(ref span);
            var (number, wire) = (key >> 3, (int)(key & 7));
            var value = wire switch
            {
                0 => (object)Varint(ref span),
                1 => Skip(ref span, 8),
                2 => Skip(ref span, (int)Varint(ref span)),
                5 => Skip(ref span, 4),
                _ => throw KubeApiException.BadRequest($"unsupported protobuf wire type {wire}"),
            };
            if (!fields.TryGetValue(number, out var field))
            {
                continue;
            }

            var repeated = field.Type.StartsWith('*');
            var elementType = field.Type.TrimStart('*');
            JsonNode? node = (elementType, value) switch
            {
                ("s", ReadOnlyMemory<byte> bytes) => Encoding.UTF8.GetString(bytes.Span),
                ("bytes", ReadOnlyMemory<byte> bytes) => Convert.ToBase64String(bytes.Span),
                ("i", long n) => n,
                ("b" or "b?", long n) => n != 0,
                ("map", ReadOnlyMemory<byte> bytes) => Message(bytes, "MapEntry"),
                (_, ReadOnlyMemory<byte> bytes) when Messages.ContainsKey(elementType) => Message(bytes, elementType),
                _ => throw KubeApiException.BadRequest($"protobuf field {type}.{field.Name} has wire type {wire}"),
            };
            if (elementType == "map" && node is JsonObject entry)
            {
                obj.Obj(field.Name)[entry.Str("key") ?? ""] = entry.Str("value") ?? "";
            }
            else if (repeated)
            {
                (obj[field.Name] as JsonArray ?? (JsonArray)(obj[field.Name] = new JsonArray())).Add(node);
            }
            else
            {
                obj[field.Name] = Simplify(elementType, node);
            }
        }

        return obj;
    }

    /// <summary>Zero values mean "unset" in these Go structs; Time and IntOrString become their JSON forms.</summary>
    private static JsonNode? Simplify(string type, JsonNode? node) => (type, node) switch
    {
        ("s", JsonValue v) when v.ToString().Length == 0 => null,
        ("i", JsonValue v) when v.Int() == 0 => null,
        ("b", JsonValue v) when !v.GetValue<bool>() => null,
        ("Time", JsonObject t) when t["seconds"].Int() is { } s && s > 0 => Json.Timestamp(DateTimeOffset.FromUnixTimeSeconds(s)),
        ("Time", _) => null,
        ("IntOrString", JsonObject x) => x["type"].Int() == 1 ? x["strVal"]?.DeepClone() : x["intVal"]?.DeepClone(),
        _ => node,
    };

    private static long Varint(ref ReadOnlyMemory<byte> span)
    {
        long result = 0;
        for (var shift = 0; shift < 64; shift += 7)
        {
            if (span.Length == 0)
            {
                throw KubeApiException.BadRequest("truncated protobuf");
            }

            var b = span.Span[0];
            span = span[1..];
            result |= (long)(b & 0x7F) << shift;
            if (b < 0x80)
            {
                return result;
            }
        }

        throw KubeApiException.BadRequest("malformed protobuf varint");
    }

    private static ReadOnlyMemory<byte> Skip(ref ReadOnlyMemory<byte> span, int length)
    {
        if (length < 0 || length > span.Length)
        {
            throw KubeApiException.BadRequest("truncated protobuf");
        }

        var value = span[..length];
        span = span[length..];
        return value;
    }
}
