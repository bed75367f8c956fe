using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;

namespace Wormhole.Tunnel.KubeEmulator;

/// <summary>
/// The documents clients read before talking to resources: /version, legacy discovery (/api, /apis, per group-version
/// resource lists) and an OpenAPI v3 index whose PATCH operations declare <c>fieldValidation</c>, which is how kubectl
/// decides to leave schema validation to the server instead of downloading a schema.
/// </summary>
internal static class Discovery
{
    private static readonly Dictionary<string, string> OpenApiDocuments = ResourceKind.All.GroupBy(k => k.ApiVersion)
        .ToDictionary(g => (g.First().Group.Length == 0 ? "api/" : "apis/") + g.Key, g => OpenApi(g).ToJsonString());

    public static JsonNode? Find(string path, string serverAddress)
    {
        if (path.StartsWith("/openapi/v3/", StringComparison.Ordinal))
        {
            return OpenApiDocuments.TryGetValue(path["/openapi/v3/".Length..], out var doc) ? JsonNode.Parse(doc) : null;
        }

        var groups = ResourceKind.All.Where(k => k.Group.Length > 0).GroupBy(k => k.Group).Select(g => Group(g.Key, g.First().Version)).ToArray();
        return path switch
        {
            "/version" => new JsonObject
            {
                ["major"] = "1", ["minor"] = "32", ["gitVersion"] = "v1.32.0", ["gitCommit"] = "70d3cc986aa8221cd1dfb1121852688902d3bf53",
                ["gitTreeState"] = "clean", ["buildDate"] = "2024-12-11T17:59:15Z", ["goVersion"] = "go1.23.3", ["compiler"] = "gc", ["platform"] = "linux/amd64",
            },
            "/api" => new JsonObject
            {
                ["kind"] = "APIVersions", ["versions"] = new JsonArray("v1"),
                ["serverAddressByClientCIDRs"] = new JsonArray(new JsonObject { ["clientCIDR"] = "0.0.0.0/0", ["serverAddress"] = serverAddress }),
            },
            "/apis" => new JsonObject { ["kind"] = "APIGroupList", ["apiVersion"] = "v1", ["groups"] = new JsonArray(groups) },
            "/openapi/v3" => new JsonObject
            {
                ["paths"] = new JsonObject(OpenApiDocuments.Select(p => KeyValuePair.Create(p.Key, (JsonNode?)new JsonObject
                {
                    ["serverRelativeURL"] = $"/openapi/v3/{p.Key}?hash={Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(p.Value)))}",
                }))),
            },
            _ when groups.OfType<JsonObject>().FirstOrDefault(g => "/apis/" + g.Str("name") == path) is { } group => Typed(group.DeepClone(), "APIGroup"),
            _ when ResourceKind.All.Where(k => (k.Group.Length == 0 ? "/api/" : "/apis/") + k.ApiVersion == path).ToList() is { Count: > 0 } kinds => new JsonObject
            {
                ["kind"] = "APIResourceList", ["apiVersion"] = "v1", ["groupVersion"] = kinds[0].ApiVersion,
                ["resources"] = new JsonArray(kinds.Select(Resource).ToArray()),
            },
            _ => null,
        };
    }

    private static JsonObject Typed(JsonNode node, string kind)
    {
        var obj = new JsonObject { ["kind"] = kind, ["apiVersion"] = "v1" };
        foreach (var (key, value) in ((JsonObject)node).ToList())
        {
            ((JsonObject)node).Remove(key);
            obj[key] = value;
        }

        return obj;
    }

    private static JsonNode Group(string name, string version)
    {
        var groupVersion = new JsonObject { ["groupVersion"] = $"{name}/{version}", ["version"] = version };
        return new JsonObject { ["name"] = name, ["versions"] = new JsonArray(groupVersion), ["preferredVersion"] = groupVersion.DeepClone() };
    }

    private static JsonNode Resource(ResourceKind kind)
    {
        var resource = new JsonObject
        {
            ["name"] = kind.Plural, ["singularName"] = kind.Singular, ["namespaced"] = kind.Namespaced, ["kind"] = kind.Kind,
            ["verbs"] = new JsonArray("create", "delete", "get", "list", "patch", "update", "watch"),
            ["shortNames"] = new JsonArray(kind.ShortNames.Select(s => (JsonNode)s).ToArray()),
        };
        if (kind == ResourceKind.Services)
        {
            resource["categories"] = new JsonArray("all");
        }

        return resource;
    }

    /// <summary>A minimal OpenAPI 3 document: per resource, GET and PATCH on the item path with their query parameters.</summary>
    private static JsonObject OpenApi(IEnumerable<ResourceKind> kinds)
    {
        var paths = new JsonObject();
        foreach (var kind in kinds)
        {
            var prefix = (kind.Group.Length == 0 ? "/api/" : "/apis/") + kind.ApiVersion + (kind.Namespaced ? "/namespaces/{namespace}/" : "/");
            var gvk = new JsonObject { ["group"] = kind.Group, ["kind"] = kind.Kind, ["version"] = kind.Version };
            var operation = (string action, string[] query, string[] bodies) => new JsonObject
            {
                ["operationId"] = action + kind.Kind,
                ["parameters"] = new JsonArray(query.Select(q => (JsonNode)new JsonObject { ["name"] = q, ["in"] = "query", ["schema"] = new JsonObject { ["type"] = "string" } }).ToArray()),
                ["requestBody"] = bodies.Length == 0 ? null : new JsonObject
                {
                    ["content"] = new JsonObject(bodies.Select(b => KeyValuePair.Create(b, (JsonNode?)new JsonObject { ["schema"] = new JsonObject { ["type"] = "object" } }))),
                },
                ["responses"] = new JsonObject { ["200"] = new JsonObject { ["description"] = "OK" } },
                ["x-kubernetes-action"] = action,
                ["x-kubernetes-group-version-kind"] = gvk.DeepClone(),
            };
            paths[prefix + kind.Plural + "/{name}"] = new JsonObject
            {
                ["get"] = operation("get", [], []),
                // No strategic-merge-patch body here on purpose: kubectl then computes strategic patches from its built-in types.
                ["patch"] = operation("patch", ["dryRun", "fieldManager", "fieldValidation", "force"], ["application/json-patch+json", "application/merge-patch+json"]),
            };
        }

        Json.DropNulls(paths);
        return new JsonObject
        {
            ["openapi"] = "3.0.0",
            ["info"] = new JsonObject { ["title"] = "Kubernetes", ["version"] = "v1.32.0" },
            ["paths"] = paths,
            ["components"] = new JsonObject { ["schemas"] = new JsonObject() },
        };
    }
}
