using System.Text.Json.Nodes;

namespace Wormhole.Tunnel.KubeEmulator;

/// <summary>The three PATCH flavours the apiserver accepts for built-in types.</summary>
internal static class Patches
{
    public const string Accepted = "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml";

    public static JsonObject Apply(string? contentType, JsonObject current, string body, ResourceKind kind)
    {
        var mediaType = (contentType ?? "").Split(';')[0].Trim().ToLowerInvariant();
        var patch = JsonNode.Parse(body);
        var result = mediaType switch
        {
            "application/merge-patch+json" => Merge(current.DeepClone(), patch),
            "application/strategic-merge-patch+json" when patch is JsonObject p => Strategic((JsonObject)current.DeepClone(), p, "", kind),
            "application/json-patch+json" when patch is JsonArray ops => JsonPatch(current.DeepClone(), ops),
            "application/merge-patch+json" or "application/strategic-merge-patch+json" or "application/json-patch+json" =>
                throw KubeApiException.BadRequest($"the body of the request does not fit {mediaType}"),
            _ => throw KubeApiException.UnsupportedMediaType(Accepted),
        };
        return result as JsonObject ?? throw KubeApiException.BadRequest("the patched object is not a JSON object");
    }

    /// <summary>RFC 7386: objects merge recursively, null deletes, anything else replaces.</summary>
    public static JsonNode? Merge(JsonNode? target, JsonNode? patch)
    {
        if (patch is not JsonObject patchObject)
        {
            return patch?.DeepClone();
        }

        var result = target as JsonObject ?? new JsonObject();
        foreach (var (key, value) in patchObject)
        {
            var existing = result[key];
            result.Remove(key);
            if (value is not null)
            {
                result[key] = Merge(existing, value);
            }
        }

        return result;
    }

    /// <summary>
    /// Strategic merge patch as kubectl produces it: maps merge, lists with a merge key merge by that key
    /// (<c>$patch: delete</c> removes an item, <c>$setElementOrder/</c> orders), other lists are replaced.
    /// </summary>
    private static JsonObject Strategic(JsonObject target, JsonObject patch, string path, ResourceKind kind)
    {
        if (patch.Str("$patch") == "replace")
        {
            var replaced = (JsonObject)patch.DeepClone();
            replaced.Remove("$patch");
            return replaced;
        }

        foreach (var (key, value) in patch)
        {
            var field = key.StartsWith("$deleteFromPrimitiveList/", StringComparison.Ordinal) ? key[25..] : key;
            var childPath = path.Length == 0 ? field : $"{path}.{field}";
            var existing = target[field];
            if (key.StartsWith('$') && field == key)
            {
                continue;
            }

            target.Remove(field);
            if (field != key)
            {
                var remove = (value as JsonArray ?? []).Select(v => v?.ToJsonString()).ToHashSet();
                target[field] = new JsonArray((existing as JsonArray ?? []).Where(v => !remove.Contains(v?.ToJsonString())).Select(v => v?.DeepClone()).ToArray());
            }
            else if (value is JsonObject child && child.Str("$patch") != "delete")
            {
                target[key] = Strategic(existing as JsonObject ?? new JsonObject(), child, childPath, kind);
            }
            else if (value is JsonArray list && MergeKey(kind, childPath) is { } mergeKey)
            {
                target[key] = MergeList(existing as JsonArray ?? [], list, mergeKey, childPath, kind);
            }
            else if (value is not null and not JsonObject)
            {
                target[key] = value.DeepClone();
            }
        }

        foreach (var (key, value) in patch.Where(p => p.Key.StartsWith("$setElementOrder/", StringComparison.Ordinal)))
        {
            var field = key[17..];
            var order = (value as JsonArray ?? []).Select(Identity(MergeKey(kind, path.Length == 0 ? field : $"{path}.{field}") ?? "")).ToList();
            if (target[field] is JsonArray items)
            {
                var identity = Identity(MergeKey(kind, path.Length == 0 ? field : $"{path}.{field}") ?? "");
                var sorted = items.Select((item, index) => (item, index, rank: order.IndexOf(identity(item)) is var r and >= 0 ? r : int.MaxValue))
                    .OrderBy(x => x.rank).ThenBy(x => x.index).Select(x => x.item?.DeepClone()).ToArray();
                target[field] = new JsonArray(sorted);
            }
        }

        if (patch["$retainKeys"] is JsonArray retain)
        {
            var keep = retain.Select(k => k?.ToString()).ToHashSet();
            foreach (var key in target.Select(p => p.Key).Where(k => !keep.Contains(k)).ToList())
            {
                target.Remove(key);
            }
        }

        return target;
    }

    private static JsonArray MergeList(JsonArray current, JsonArray patch, string mergeKey, string path, ResourceKind kind)
    {
        var items = current.Select(i => i?.DeepClone()).ToList();
        var identity = Identity(mergeKey);
        foreach (var item in patch)
        {
            var index = items.FindIndex(i => identity(i) == identity(item));
            if (item is JsonObject patchItem && mergeKey.Length > 0)
            {
                if (patchItem.Str("$patch") == "delete")
                {
                    if (index >= 0)
                    {
                        items.RemoveAt(index);
                    }
                }
                else if (index >= 0)
                {
                    items[index] = Strategic((JsonObject)items[index]!, patchItem, path, kind);
                }
                else
                {
                    items.Add(Strategic(new JsonObject(), patchItem, path, kind));
                }
            }
            else if (index < 0)
            {
                items.Add(item?.DeepClone());
            }
        }

        return new JsonArray(items.ToArray());
    }

    private static Func<JsonNode?, string?> Identity(string mergeKey) => node => mergeKey.Length == 0 ? node?.ToJsonString() : node.At(mergeKey)?.ToJsonString();

    /// <summary>The <c>patchMergeKey</c> of the lists these types merge ("" for merged primitive lists); null means replace.</summary>
    private static string? MergeKey(ResourceKind kind, string path) => (kind.Plural, path) switch
    {
        ("services", "spec.ports") => "port",
        (_, "metadata.ownerReferences") => "uid",
        (_, "metadata.finalizers") => "",
        _ => null,
    };

    /// <summary>RFC 6902 add/remove/replace/move/copy/test over JSON pointers.</summary>
    private static JsonNode JsonPatch(JsonNode document, JsonArray operations)
    {
        foreach (var operation in operations.OfType<JsonObject>())
        {
            var path = operation.Str("path") ?? throw KubeApiException.BadRequest("json patch operation without a path");
            switch (operation.Str("op"))
            {
                case "add":
                    Add(document, path, operation["value"]?.DeepClone());
                    break;
                case "remove":
                    Remove(document, path);
                    break;
                case "replace":
                    Remove(document, path);
                    Add(document, path, operation["value"]?.DeepClone());
                    break;
                case "move":
                    Add(document, path, Remove(document, operation.Str("from") ?? ""));
                    break;
                case "copy":
                    Add(document, path, Find(document, operation.Str("from") ?? "")?.DeepClone());
                    break;
                case "test" when !JsonNode.DeepEquals(Find(document, path), operation["value"]):
                    throw new KubeApiException(422, "Invalid", $"the server rejected our request due to an error in our request: testing value {path} failed");
                case "test":
                    break;
                default:
                    throw KubeApiException.BadRequest($"Unexpected kind: {operation.Str("op")}");
            }
        }

        return document;
    }

    private static (JsonNode Parent, string Token) Parent(JsonNode document, string pointer)
    {
        var tokens = pointer.Split('/').Skip(1).Select(t => t.Replace("~1", "/", StringComparison.Ordinal).Replace("~0", "~", StringComparison.Ordinal)).ToList();
        if (tokens.Count == 0)
        {
            throw KubeApiException.BadRequest($"invalid json patch path \"{pointer}\"");
        }

        var parent = Find(document, "/" + string.Join('/', pointer.Split('/').Skip(1).SkipLast(1)));
        return (parent ?? throw KubeApiException.BadRequest($"doc is missing path: \"{pointer}\""), tokens[^1]);
    }

    private static JsonNode? Find(JsonNode document, string pointer)
    {
        JsonNode? node = document;
        foreach (var token in pointer.Split('/').Skip(1).Where(t => t.Length > 0).Select(t => t.Replace("~1", "/", StringComparison.Ordinal).Replace("~0", "~", StringComparison.Ordinal)))
        {
            node = node switch
            {
                JsonObject o => o[token],
                JsonArray a when int.TryParse(token, out var i) && i >= 0 && i < a.Count => a[i],
                _ => null,
            };
        }

        return node;
    }

    private static void Add(JsonNode document, string pointer, JsonNode? value)
    {
        var (parent, token) = Parent(document, pointer);
        if (parent is JsonObject o)
        {
            o[token] = value;
        }
        else if (parent is JsonArray a && (token == "-" || (int.TryParse(token, out var i) && i >= 0 && i <= a.Count)))
        {
            a.Insert(token == "-" ? a.Count : int.Parse(token, System.Globalization.CultureInfo.InvariantCulture), value);
        }
        else
        {
            throw KubeApiException.BadRequest($"doc is missing path: \"{pointer}\"");
        }
    }

    private static JsonNode? Remove(JsonNode document, string pointer)
    {
        var (parent, token) = Parent(document, pointer);
        var value = Find(document, pointer);
        if (parent is JsonObject o && o.ContainsKey(token))
        {
            o.Remove(token);
        }
        else if (parent is JsonArray a && int.TryParse(token, out var i) && i >= 0 && i < a.Count)
        {
            a.RemoveAt(i);
        }
        else
        {
            throw KubeApiException.BadRequest($"doc is missing path: \"{pointer}\"");
        }

        return value;
    }
}
