using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Wormhole.Tunnel.KubeEmulator;

/// <summary>One served resource: where it lives in the API and which fields its schema knows.</summary>
internal sealed record ResourceKind(string Group, string Version, string Plural, string Singular, string Kind, bool Namespaced, string[] ShortNames, string Schema)
{
    private const string Meta =
        "metadata{name,generateName,namespace,selfLink,uid,resourceVersion,generation,creationTimestamp,deletionTimestamp,"
        + "deletionGracePeriodSeconds,labels,annotations,ownerReferences[apiVersion,kind,name,uid,controller,blockOwnerDeletion],finalizers,managedFields}";

    private const string Selector = "{matchLabels,matchExpressions[key,operator,values]}";
    private const string Peer = $"[podSelector{Selector},namespaceSelector{Selector},ipBlock{{cidr,except}}]";
    private const string Ports = "ports[protocol,port,endPort]";
    private const string ObjectReference = "{kind,namespace,name,uid,apiVersion,resourceVersion,fieldPath}";

    public static ResourceKind Namespaces { get; } = new("", "v1", "namespaces", "namespace", "Namespace", false, ["ns"], "spec{finalizers},status");

    public static ResourceKind Services { get; } = new("", "v1", "services", "service", "Service", true, ["svc"],
        "spec{ports[name,protocol,appProtocol,port,targetPort,nodePort],selector,clusterIP,clusterIPs,type,externalIPs,sessionAffinity,"
        + "loadBalancerIP,loadBalancerSourceRanges,externalName,externalTrafficPolicy,healthCheckNodePort,publishNotReadyAddresses,"
        + "sessionAffinityConfig{clientIP{timeoutSeconds}},ipFamilies,ipFamilyPolicy,allocateLoadBalancerNodePorts,loadBalancerClass,"
        + "internalTrafficPolicy,trafficDistribution},status");

    public static ResourceKind Events { get; } = new("", "v1", "events", "event", "Event", true, ["ev"],
        $"involvedObject{ObjectReference},reason,message,source{{component,host}},firstTimestamp,lastTimestamp,count,type,eventTime,"
        + $"series{{count,lastObservedTime}},action,related{ObjectReference},reportingComponent,reportingInstance");

    public static ResourceKind NetworkPolicies { get; } = new("networking.k8s.io", "v1", "networkpolicies", "networkpolicy", "NetworkPolicy", true, ["netpol"],
        $"spec{{podSelector{Selector},ingress[{Ports},from{Peer}],egress[{Ports},to{Peer}],policyTypes}}");

    // What a Helm release of ours also contains. Their specs are stored as given (a bare field name accepts anything):
    // names, labels and annotations are still validated as for every kind.
    public static ResourceKind ServiceAccounts { get; } = new("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", true, ["sa"], "secrets,imagePullSecrets,automountServiceAccountToken");

    public static ResourceKind Secrets { get; } = new("", "v1", "secrets", "secret", "Secret", true, [], "type,data,stringData,immutable");

    public static ResourceKind ConfigMaps { get; } = new("", "v1", "configmaps", "configmap", "ConfigMap", true, ["cm"], "data,binaryData,immutable");

    public static ResourceKind PersistentVolumeClaims { get; } = new("", "v1", "persistentvolumeclaims", "persistentvolumeclaim", "PersistentVolumeClaim", true, ["pvc"], "spec,status");

    public static ResourceKind Deployments { get; } = new("apps", "v1", "deployments", "deployment", "Deployment", true, ["deploy"], "spec,status");

    public static ResourceKind ClusterRoles { get; } = new("rbac.authorization.k8s.io", "v1", "clusterroles", "clusterrole", "ClusterRole", false, [], "rules,aggregationRule");

    public static ResourceKind ClusterRoleBindings { get; } = new("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "clusterrolebinding", "ClusterRoleBinding", false, [], "subjects,roleRef");

    public static ResourceKind Roles { get; } = new("rbac.authorization.k8s.io", "v1", "roles", "role", "Role", true, [], "rules");

    public static ResourceKind RoleBindings { get; } = new("rbac.authorization.k8s.io", "v1", "rolebindings", "rolebinding", "RoleBinding", true, [], "subjects,roleRef");

    public static IReadOnlyList<ResourceKind> All { get; } =
    [
        Namespaces, Services, Events, NetworkPolicies, ServiceAccounts, Secrets, ConfigMaps, PersistentVolumeClaims, Deployments,
        ClusterRoles, ClusterRoleBindings, Roles, RoleBindings,
    ];

    public string ApiVersion => Group.Length == 0 ? Version : $"{Group}/{Version}";

    public string QualifiedPlural => Group.Length == 0 ? Plural : $"{Plural}.{Group}";

    public string QualifiedKind => Group.Length == 0 ? Kind : $"{Kind}.{Group}";

    /// <summary>Known fields, parsed from <see cref="Schema"/>: <c>name{...}</c> or <c>name[...]</c> recurse, a bare name accepts anything.</summary>
    public SchemaNode Fields { get; } = SchemaNode.Parse("kind,apiVersion," + Meta + "," + Schema);

    /// <summary>Finds a resource by plural, singular, kind or short name (case-insensitive), as kubectl resolves it.</summary>
    public static ResourceKind Find(string name) =>
        All.FirstOrDefault(k => k.Plural.Equals(name, StringComparison.OrdinalIgnoreCase) || k.Singular.Equals(name, StringComparison.OrdinalIgnoreCase)
            || k.Kind.Equals(name, StringComparison.OrdinalIgnoreCase) || k.ShortNames.Contains(name, StringComparer.OrdinalIgnoreCase))
        ?? throw new ArgumentException($"the emulator does not serve \"{name}\"", nameof(name));
}

internal sealed class SchemaNode
{
    private readonly Dictionary<string, SchemaNode?> _fields = new(StringComparer.Ordinal);

    public static SchemaNode Parse(string text)
    {
        var i = 0;
        return Parse(text, ref i);
    }

    private static SchemaNode Parse(string text, ref int i)
    {
        var node = new SchemaNode();
        while (i < text.Length && text[i] is not ('}' or ']'))
        {
            var start = i;
            while (i < text.Length && text[i] is not (',' or '{' or '[' or '}' or ']'))
            {
                i++;
            }

            var name = text[start..i];
            SchemaNode? child = null;
            if (i < text.Length && text[i] is '{' or '[')
            {
                i++;
                child = Parse(text, ref i);
                i++;
            }

            node._fields[name] = child;
            if (i < text.Length && text[i] == ',')
            {
                i++;
            }
        }

        return node;
    }

    /// <summary>Whether the schema declares <paramref name="name"/>; <paramref name="child"/> is null for a bare name (anything goes).</summary>
    public bool TryGetField(string name, out SchemaNode? child) => _fields.TryGetValue(name, out child);

    /// <summary>Lists fields the schema does not know (as <c>spec.ports[0].foo</c>) and, when asked, removes them.</summary>
    public void FindUnknown(JsonNode? value, string path, List<string> unknown, bool prune)
    {
        if (value is JsonArray array)
        {
            for (var i = 0; i < array.Count; i++)
            {
                FindUnknown(array[i], $"{path}[{i}]", unknown, prune);
            }
        }
        else if (value is JsonObject obj)
        {
            foreach (var (key, child) in obj.ToList())
            {
                var childPath = path.Length == 0 ? key : $"{path}.{key}";
                if (!_fields.TryGetValue(key, out var schema))
                {
                    unknown.Add(childPath);
                    if (prune)
                    {
                        obj.Remove(key);
                    }
                }
                else
                {
                    schema?.FindUnknown(child, childPath, unknown, prune);
                }
            }
        }
    }
}

/// <summary>Small accessors over <see cref="JsonNode"/> trees.</summary>
internal static class Json
{
    public static string? Str(this JsonNode? node, string path) => At(node, path) is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>() : null;

    public static JsonNode? At(this JsonNode? node, string path)
    {
        foreach (var part in path.Split('.'))
        {
            node = node is JsonObject o ? o[part] : null;
        }

        return node;
    }

    public static long? Int(this JsonNode? node) =>
        node is JsonValue v && v.GetValueKind() == JsonValueKind.Number && long.TryParse(v.ToJsonString(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var n) ? n : null;

    /// <summary>The object at <paramref name="key"/>, created when missing or not an object.</summary>
    public static JsonObject Obj(this JsonObject parent, string key)
    {
        if (parent[key] is JsonObject child)
        {
            return child;
        }

        var created = new JsonObject();
        parent[key] = created;
        return created;
    }

    public static JsonObject Meta(this JsonObject obj) => obj.Obj("metadata");

    public static IEnumerable<JsonObject> Objects(this JsonNode? node) => node is JsonArray a ? a.OfType<JsonObject>() : [];

    public static Dictionary<string, string> StringMap(this JsonNode? node) =>
        node is JsonObject o
            ? o.Where(p => p.Value is JsonValue).ToDictionary(p => p.Key, p => p.Value!.GetValueKind() == JsonValueKind.String ? p.Value.GetValue<string>() : p.Value.ToJsonString(), StringComparer.Ordinal)
            : [];

    /// <summary>
    /// Drops what Go's decoding and <c>omitempty</c> encoding drop: nulls, empty lists and empty maps
    /// (the string maps: labels, annotations, selectors), so stored objects read back as the apiserver's do.
    /// </summary>
    public static void DropNulls(JsonNode? node)
    {
        if (node is JsonObject o)
        {
            foreach (var (key, value) in o.ToList())
            {
                DropNulls(value);
                if (value is null or JsonArray { Count: 0 } || (value is JsonObject { Count: 0 } && key is "labels" or "annotations" or "selector" or "matchLabels"))
                {
                    o.Remove(key);
                }
            }
        }
        else if (node is JsonArray a)
        {
            foreach (var item in a)
            {
                DropNulls(item);
            }
        }
    }

    public static string Timestamp(DateTimeOffset time) => time.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture);
}
