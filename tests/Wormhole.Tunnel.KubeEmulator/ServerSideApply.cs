using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Wormhole.Tunnel.KubeEmulator;

/// <summary>
/// Server-side apply and <c>metadata.managedFields</c>, after the apiserver's field manager (k8s.io/apimachinery
/// managedfields over sigs.k8s.io/structured-merge-diff): field sets as FieldsV1, Update entries for every other write,
/// Apply entries that own what their configuration names, pruning of what an applier stops naming, and conflicts.
/// </summary>
/// <remarks>
/// A field path is its FieldsV1 path elements (<c>f:spec</c>, <c>k:{"port":80,"protocol":"TCP"}</c>, <c>v:"x"</c>)
/// joined by newlines; a field set is a set of such paths.
/// </remarks>
internal static class ServerSideApply
{
    public const string MediaType = "application/apply-patch+yaml";
    private const int FieldManagerMaxLength = 128;

    /// <summary>What the stripMeta manager removes from every set: exact paths, not their children.</summary>
    private static readonly HashSet<string> Stripped = new[]
    {
        "f:apiVersion", "f:kind", "f:metadata", "f:metadata\nf:name", "f:metadata\nf:namespace", "f:metadata\nf:creationTimestamp",
        "f:metadata\nf:selfLink", "f:metadata\nf:uid", "f:metadata\nf:clusterName", "f:metadata\nf:generation",
        "f:metadata\nf:managedFields", "f:metadata\nf:resourceVersion",
    }.ToHashSet(StringComparer.Ordinal);

    private enum Shape
    {
        Struct,
        Map,
        Atomic,
        ListMap,
        ListSet,
    }

    public static bool IsApply(string? contentType) => string.Equals((contentType ?? "").Split(';')[0].Trim(), MediaType, StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// The manager of a create, update or non-apply patch: <c>?fieldManager</c>, else what precedes the first '/' of the
    /// User-Agent (so <c>kubectl/v1.32.4 (linux/amd64) …</c> is <c>kubectl</c>). Checks the options as the apiserver does.
    /// </summary>
    public static string UpdateManager(string options, IQueryCollection query, string userAgent)
    {
        var errors = new FieldErrors();
        if (options == "PatchOptions" && query.ContainsKey("force"))
        {
            errors.Forbidden("force", "may not be specified for non-apply patch");
        }

        var manager = query["fieldManager"].ToString();
        ValidateManager(manager, errors);
        ThrowIfInvalid(options, errors);
        if (manager.Length > 0)
        {
            return manager;
        }

        var prefix = new StringBuilder();
        foreach (var rune in userAgent.Split('/')[0].EnumerateRunes())
        {
            if (IsPrint(rune) && Encoding.UTF8.GetByteCount(prefix.ToString()) + rune.Utf8SequenceLength <= FieldManagerMaxLength)
            {
                prefix.Append(rune.ToString());
            }
        }

        return prefix.ToString();
    }

    /// <summary>Serves <c>PATCH</c> with <c>application/apply-patch+yaml</c>: returns the object and whether it was created.</summary>
    public static (JsonObject Object, bool Created) Handle(
        ObjectStore store, ResourceKind kind, string? ns, string name, string body, IQueryCollection query, string? fieldValidation, bool dryRun, DateTimeOffset now)
    {
        var errors = new FieldErrors();
        var manager = query["fieldManager"].ToString();
        if (manager.Length == 0)
        {
            errors.Required("fieldManager", "is required for apply patch");
        }

        ValidateManager(manager, errors);
        ThrowIfInvalid("PatchOptions", errors);
        var force = query["force"].ToString() switch
        {
            "" or "0" or "f" or "F" or "false" or "FALSE" or "False" => false,
            "1" or "t" or "T" or "true" or "TRUE" or "True" => true,
            var other => throw KubeApiException.BadRequest($"strconv.ParseBool: parsing \"{other}\": invalid syntax"),
        };
        if (fieldValidation is not (null or "" or "Strict" or "Warn" or "Ignore"))
        {
            throw KubeApiException.BadRequest($"fieldValidation parameter unsupported: \"{fieldValidation}\"");
        }

        var config = Parse(body);
        return store.Apply(kind, ns, name, live => Apply(kind, ns, name, live, config, manager, force, now), dryRun);
    }

    /// <summary>
    /// Records an Update by <paramref name="manager"/> on <paramref name="obj"/> (about to replace <paramref name="live"/>, null on create):
    /// what it adds or changes becomes its own, what it removes nobody's. The managedFields in the body are taken when they decode,
    /// else the live ones; an existing object without any stays without (the apiserver tracks those only from their first apply).
    /// </summary>
    public static void TrackUpdate(ResourceKind kind, JsonObject? live, JsonObject obj, string manager, DateTimeOffset now)
    {
        var meta = obj.Meta();
        var managers = Decode(meta["managedFields"]) is { Count: > 0 } given ? given : Decode(live.At("metadata.managedFields")) ?? [];
        meta.Remove("managedFields");
        if (live is not null && managers.Count == 0)
        {
            return;
        }

        var comparison = Compare(kind, Plain(live) ?? Zero(kind), Plain(SchemeDefaults(kind, obj))!);
        RecordUpdate(kind, managers, comparison, manager, now);
        Encode(obj, managers);
    }

    /// <summary>The apply itself: the live object (null when missing) merged with the configuration, with the managers updated.</summary>
    private static JsonObject Apply(ResourceKind kind, string? ns, string name, JsonObject? live, JsonObject config, string manager, bool force, DateTimeOffset now)
    {
        var gvk = GroupVersionKind(config);
        if (gvk != GroupVersionKind(kind.ApiVersion, kind.Kind))
        {
            throw KubeApiException.BadRequest($"invalid object type: {gvk}");
        }

        if (config.At("metadata.managedFields") is not null)
        {
            throw KubeApiException.BadRequest("metadata.managedFields must be nil");
        }

        var problems = new List<string>();
        TypeCheck(kind, config, kind.Fields, "", "", item: false, problems);
        if (problems.Count > 0)
        {
            // The apiserver answers this with a plain error: a 500 without a reason.
            var detail = problems.Count == 1 ? problems[0] : "errors:\n" + string.Join('\n', problems.Select(p => "  " + p));
            throw new KubeApiException(500, "", $"failed to create typed patch object ({config.Str("metadata.namespace") ?? ""}/{config.Str("metadata.name") ?? ""}; {gvk}): {detail}");
        }

        var managers = Decode(live.At("metadata.managedFields")) ?? [];
        var current = Plain(live) ?? Zero(kind);
        if (live is not null && managers.Count == 0)
        {
            // An object nobody tracked yet: everything in it first becomes the work of "before-first-apply".
            RecordUpdate(kind, managers, Compare(kind, Zero(kind), current), "before-first-apply", now);
        }

        var merged = (JsonObject)Merge(kind, current, config, "", item: false)!;
        var configured = new HashSet<string>(StringComparer.Ordinal);
        ToSet(kind, config, "", "", item: false, configured);
        var applier = managers.FirstOrDefault(m => m.Name == manager && m.Operation == "Apply");
        var others = managers.Where(m => m != applier).ToList();
        if (applier is { Set.Count: > 0 })
        {
            var owned = others.SelectMany(m => m.Set).Concat(configured).ToHashSet(StringComparer.Ordinal);
            Prune(kind, merged, applier.Set, owned);
        }

        Json.DropNulls(merged);
        var comparison = Compare(kind, current, merged);
        var changed = comparison.Added.Concat(comparison.Modified).ToHashSet(StringComparer.Ordinal);
        var conflicts = others.Select(m => (Manager: m, Paths: Iterate(m.Set.Where(changed.Contains)).ToList())).Where(c => c.Paths.Count > 0).ToList();
        if (conflicts.Count > 0 && !force)
        {
            throw Conflict(conflicts);
        }

        foreach (var other in others)
        {
            other.Set.ExceptWith(changed);
            other.Set.ExceptWith(comparison.Removed);
        }

        var objectChanged = !JsonNode.DeepEquals(current, merged);
        if (applier is null)
        {
            applier = new Manager(manager, "Apply", kind.ApiVersion, null, []);
            managers.Add(applier);
        }

        applier.ApiVersion = kind.ApiVersion;
        applier.Set = Filter(kind, configured);
        applier.Time = objectChanged || applier.Time is null ? Json.Timestamp(now) : applier.Time;
        managers.RemoveAll(m => m.Set.Count == 0);

        var gotName = merged.Str("metadata.name") ?? "";
        if (gotName.Length == 0)
        {
            throw KubeApiException.BadRequest($"the name of the object ({name} based on URL) was undeterminable: name must be provided");
        }

        if (gotName != name)
        {
            throw KubeApiException.BadRequest($"the name of the object ({gotName}) does not match the name on the URL ({name})");
        }

        if (ns is not null && merged.Str("metadata.namespace") is { Length: > 0 } gotNamespace && gotNamespace != ns)
        {
            throw KubeApiException.BadRequest($"the namespace of the object ({gotNamespace}) does not match the namespace on the request ({ns})");
        }

        if (live is null)
        {
            if (merged.Str("metadata.uid") is { Length: > 0 } uid)
            {
                throw KubeApiException.Conflict(kind, name, $"uid mismatch: the provided object specified uid {uid}, and no existing object was found");
            }

            // Storage clears the resourceVersion of an object it creates through an update.
            merged.Meta().Remove("resourceVersion");
        }

        Encode(merged, managers);
        return merged;
    }

    /// <summary>Every other manager loses what this write changes or removes; the writer owns what it added or changed.</summary>
    private static void RecordUpdate(ResourceKind kind, List<Manager> managers, Comparison comparison, string manager, DateTimeOffset now)
    {
        var changed = Filter(kind, comparison.Added.Concat(comparison.Modified));
        var removed = Filter(kind, comparison.Removed);
        foreach (var other in managers)
        {
            other.Set.ExceptWith(changed);
            other.Set.ExceptWith(removed);
        }

        if (changed.Count > 0)
        {
            var entry = managers.FirstOrDefault(m => m.Name == manager && m.Operation == "Update" && m.ApiVersion == kind.ApiVersion);
            if (entry is null)
            {
                entry = new Manager(manager, "Update", kind.ApiVersion, null, []);
                managers.Add(entry);
            }

            entry.Set.UnionWith(changed);
            entry.Time = Json.Timestamp(now);
        }

        managers.RemoveAll(m => m.Set.Count == 0);
    }

    /// <summary>
    /// Removes what the applier owned last time, names no more, and nobody owns now. As structured-merge-diff does, a struct field
    /// counts as owned by whoever owns something inside it, so a list or struct survives while anyone owns part of it.
    /// </summary>
    private static void Prune(ResourceKind kind, JsonObject merged, HashSet<string> last, HashSet<string> owned)
    {
        var kept = WithNamedFields(kind, owned);
        foreach (var path in WithNamedFields(kind, last).Where(p => !kept.Contains(p)).OrderBy(p => p.Length))
        {
            Remove(merged, path);
        }
    }

    /// <summary>fieldpath.Set.EnsureNamedFieldsAreMembers: the set plus every struct field that leads to one of its paths.</summary>
    private static HashSet<string> WithNamedFields(ResourceKind kind, HashSet<string> paths)
    {
        var result = new HashSet<string>(paths, StringComparer.Ordinal);
        foreach (var elements in paths.Select(p => p.Split('\n')))
        {
            for (var i = 1; i < elements.Length; i++)
            {
                var parentSchema = string.Join('.', elements[..(i - 1)].Where(e => e.StartsWith("f:", StringComparison.Ordinal)).Select(e => e[2..]));
                if (elements[i - 1].StartsWith("f:", StringComparison.Ordinal) && (i == 1 || elements[i - 2].StartsWith("k:", StringComparison.Ordinal)
                    || Declared(kind, parentSchema) is not (Shape.Map or Shape.Atomic)))
                {
                    result.Add(string.Join('\n', elements[..i]));
                }
            }
        }

        return result;
    }

    private static KubeApiException Conflict(List<(Manager Manager, List<string> Paths)> conflicts)
    {
        var count = conflicts.Sum(c => c.Paths.Count);
        string message;
        if (count == 1)
        {
            message = $"Apply failed with 1 conflict: conflict with {conflicts[0].Manager.Describe()}: {PathText(conflicts[0].Paths[0])}";
        }
        else
        {
            var lines = conflicts.OrderBy(c => c.Manager.Identity, StringComparer.Ordinal)
                .SelectMany(c => c.Paths.Select(p => "- " + PathText(p)).Prepend($"conflicts with {c.Manager.Describe()}:"));
            message = $"Apply failed with {count} conflicts: {string.Join('\n', lines)}";
        }

        var causes = conflicts.SelectMany(c => c.Paths.Select(p => (JsonNode)new JsonObject
        {
            ["type"] = "FieldManagerConflict", ["message"] = $"conflict with {c.Manager.Describe()}", ["field"] = PathText(p),
        })).ToArray();
        return new KubeApiException(409, "Conflict", message, new JsonObject { ["causes"] = new JsonArray(causes) });
    }

    // ---- the schema: how each part of an object is merged and owned ----

    /// <summary>The list and map types the built-in types declare (x-kubernetes-list-type, -map-type, structType); null: the default.</summary>
    private static Shape? Declared(ResourceKind kind, string schemaPath) => (kind.Plural, schemaPath) switch
    {
        (_, "metadata.labels" or "metadata.annotations") => Shape.Map,
        (_, "metadata.finalizers") => Shape.ListSet,
        (_, "metadata.ownerReferences") => Shape.ListMap,
        ("services", "spec.ports") => Shape.ListMap,
        ("services", "spec.selector") => Shape.Atomic,
        ("networkpolicies", "spec.podSelector") => Shape.Atomic,
        ("events", "involvedObject" or "related") => Shape.Atomic,
        ("secrets", "data" or "stringData") or ("configmaps", "data" or "binaryData") => Shape.Map,
        _ => null,
    };

    private static Shape ShapeOf(ResourceKind kind, string schemaPath, JsonNode? value, bool item)
    {
        if (item)
        {
            // OwnerReference is a structType=atomic; Service ports are plain structs.
            return value is JsonObject && schemaPath != "metadata.ownerReferences" ? Shape.Struct : Shape.Atomic;
        }

        var declared = Declared(kind, schemaPath);
        return value switch
        {
            JsonObject => declared is Shape.Map or Shape.Atomic ? declared.Value : Shape.Struct,
            JsonArray => declared is Shape.ListMap or Shape.ListSet ? declared.Value : Shape.Atomic,
            _ => Shape.Atomic,
        };
    }

    /// <summary>The keys of an associative list, with the defaults a missing key takes (ServicePort.protocol: TCP).</summary>
    private static (string Name, JsonNode? Default)[] Keys(string schemaPath) => schemaPath switch
    {
        "spec.ports" => [("port", null), ("protocol", "TCP")],
        _ => [("uid", null)],
    };

    /// <summary>The <c>k:{…}</c> element of an associative list item; null when a key without default is missing.</summary>
    private static string? KeyElement(string schemaPath, JsonNode? item, out string? missing)
    {
        missing = null;
        var key = new JsonObject();
        foreach (var (name, fallback) in Keys(schemaPath))
        {
            var value = item is JsonObject o && o[name] is { } v ? v : fallback;
            if (value is null)
            {
                missing = name;
                return null;
            }

            key[name] = value.DeepClone();
        }

        return "k:" + key.ToJsonString();
    }

    /// <summary>The typed conversion of an applied configuration: undeclared fields and malformed associative lists.</summary>
    private static void TypeCheck(ResourceKind kind, JsonNode? value, SchemaNode? schema, string path, string schemaPath, bool item, List<string> problems)
    {
        var shape = ShapeOf(kind, schemaPath, value, item);
        if (value is JsonObject obj && shape != Shape.Map)
        {
            foreach (var (key, child) in obj)
            {
                SchemaNode? childSchema = null;
                if (schema is not null && !schema.TryGetField(key, out childSchema))
                {
                    problems.Add($"{path}.{key}: field not declared in schema");
                    continue;
                }

                TypeCheck(kind, child, childSchema, $"{path}.{key}", Join('.', schemaPath, key), item: false, problems);
            }
        }
        else if (value is JsonArray array)
        {
            var seen = new HashSet<string>(StringComparer.Ordinal);
            for (var i = 0; i < array.Count; i++)
            {
                string element;
                if (shape == Shape.ListMap)
                {
                    if (KeyElement(schemaPath, array[i], out var missing) is not { } key)
                    {
                        problems.Add($"{path}: element {i}: associative list with keys has an element that omits key field \"{missing}\" (and doesn't have default value)");
                        continue;
                    }

                    element = key;
                }
                else
                {
                    element = shape == Shape.ListSet ? "v:" + (array[i]?.ToJsonString() ?? "null") : $"i:{i}";
                }

                if (shape != Shape.Atomic && !seen.Add(element))
                {
                    problems.Add($"{path}: duplicate entries for key {ElementText(element)}");
                }

                TypeCheck(kind, array[i], schema, path + ElementText(element), schemaPath, item: true, problems);
            }
        }
    }

    // ---- field sets ----

    /// <summary>structured-merge-diff's ToFieldSet: leaves, atomics, list items, map entries, empty structs.</summary>
    private static void ToSet(ResourceKind kind, JsonNode? value, string path, string schemaPath, bool item, HashSet<string> set)
    {
        switch (ShapeOf(kind, schemaPath, value, item))
        {
            case Shape.Struct or Shape.Map when value is JsonObject obj:
                var isMap = ShapeOf(kind, schemaPath, value, item) == Shape.Map;
                foreach (var (key, child) in obj)
                {
                    var childPath = Join('\n', path, "f:" + key);
                    if (child is null or JsonObject { Count: 0 } || isMap)
                    {
                        set.Add(childPath);
                    }

                    ToSet(kind, child, childPath, Join('.', schemaPath, key), item: false, set);
                }

                break;
            case Shape.ListMap when value is JsonArray list:
                foreach (var entry in list)
                {
                    var itemPath = Join('\n', path, KeyElement(schemaPath, entry, out _)!);
                    ToSet(kind, entry, itemPath, schemaPath, item: true, set);
                    set.Add(itemPath);
                }

                break;
            case Shape.ListSet when value is JsonArray values:
                foreach (var entry in values)
                {
                    set.Add(Join('\n', path, "v:" + (entry?.ToJsonString() ?? "null")));
                }

                break;
            default:
                if (path.Length > 0)
                {
                    set.Add(path);
                }

                break;
        }
    }

    private sealed class Comparison
    {
        public HashSet<string> Added { get; } = new(StringComparer.Ordinal);

        public HashSet<string> Modified { get; } = new(StringComparer.Ordinal);

        public HashSet<string> Removed { get; } = new(StringComparer.Ordinal);
    }

    private static Comparison Compare(ResourceKind kind, JsonNode lhs, JsonNode rhs)
    {
        var comparison = new Comparison();
        Compare(kind, lhs, rhs, "", "", item: false, comparison);
        return comparison;
    }

    /// <summary>structured-merge-diff's Compare: leaves added/modified/removed, and non-leaf nodes that appear or disappear.</summary>
    private static void Compare(ResourceKind kind, JsonNode? lhs, JsonNode? rhs, string path, string schemaPath, bool item, Comparison comparison)
    {
        if (lhs is null && rhs is null)
        {
            return;
        }

        var shape = ShapeOf(kind, schemaPath, rhs ?? lhs, item);
        if (lhs is not null && rhs is not null && lhs.GetValueKind() != rhs.GetValueKind())
        {
            shape = Shape.Atomic;
        }

        switch (shape)
        {
            case Shape.Struct or Shape.Map:
                var (left, right) = (lhs as JsonObject, rhs as JsonObject);
                foreach (var key in (right?.Select(p => p.Key) ?? []).Concat(left?.Select(p => p.Key) ?? []).Distinct(StringComparer.Ordinal).ToList())
                {
                    Compare(kind, left?[key], right?[key], Join('\n', path, "f:" + key), Join('.', schemaPath, key), item: false, comparison);
                }

                break;
            case Shape.ListMap:
                var leftItems = Index(schemaPath, lhs as JsonArray);
                var rightItems = Index(schemaPath, rhs as JsonArray);
                foreach (var element in rightItems.Keys.Concat(leftItems.Keys).Distinct(StringComparer.Ordinal).ToList())
                {
                    Compare(kind, leftItems.GetValueOrDefault(element), rightItems.GetValueOrDefault(element), Join('\n', path, element), schemaPath, item: true, comparison);
                }

                break;
            case Shape.ListSet:
                var leftValues = (lhs as JsonArray ?? []).Select(v => "v:" + (v?.ToJsonString() ?? "null")).ToHashSet(StringComparer.Ordinal);
                var rightValues = (rhs as JsonArray ?? []).Select(v => "v:" + (v?.ToJsonString() ?? "null")).ToHashSet(StringComparer.Ordinal);
                comparison.Added.UnionWith(rightValues.Except(leftValues).Select(v => Join('\n', path, v)));
                comparison.Removed.UnionWith(leftValues.Except(rightValues).Select(v => Join('\n', path, v)));
                break;
            default:
                if (lhs is null)
                {
                    comparison.Added.Add(path);
                }
                else if (rhs is null)
                {
                    comparison.Removed.Add(path);
                }
                else if (!JsonNode.DeepEquals(lhs, rhs))
                {
                    comparison.Modified.Add(path);
                }

                return;
        }

        if (path.Length > 0 && lhs is null)
        {
            comparison.Added.Add(path);
        }
        else if (path.Length > 0 && rhs is null)
        {
            comparison.Removed.Add(path);
        }
    }

    private static Dictionary<string, JsonNode?> Index(string schemaPath, JsonArray? list)
    {
        var index = new Dictionary<string, JsonNode?>(StringComparer.Ordinal);
        foreach (var entry in list ?? [])
        {
            if (KeyElement(schemaPath, entry, out _) is { } key)
            {
                index.TryAdd(key, entry);
            }
        }

        return index;
    }

    /// <summary>structured-merge-diff's Merge: the configuration wins, structs and granular maps merge per field, associative lists per item.</summary>
    private static JsonNode? Merge(ResourceKind kind, JsonNode? lhs, JsonNode? rhs, string schemaPath, bool item)
    {
        if (rhs is null)
        {
            return lhs?.DeepClone();
        }

        if (lhs is null)
        {
            return rhs.DeepClone();
        }

        switch (ShapeOf(kind, schemaPath, rhs, item))
        {
            case Shape.Struct or Shape.Map when lhs is JsonObject left && rhs is JsonObject right:
                var result = (JsonObject)left.DeepClone();
                foreach (var (key, value) in right)
                {
                    if (value is null)
                    {
                        result.Remove(key);
                    }
                    else
                    {
                        result[key] = Merge(kind, left[key], value, Join('.', schemaPath, key), item: false);
                    }
                }

                return result;
            case Shape.ListMap when lhs is JsonArray left:
                return MergeList(Elements(left, e => KeyElement(schemaPath, e, out _)), Elements((JsonArray)rhs, e => KeyElement(schemaPath, e, out _)),
                    (l, r) => Merge(kind, l, r, schemaPath, item: true));
            case Shape.ListSet when lhs is JsonArray left:
                static string Value(JsonNode? v) => "v:" + (v?.ToJsonString() ?? "null");
                return MergeList(Elements(left, Value), Elements((JsonArray)rhs, Value), (l, r) => (r ?? l)?.DeepClone());
            default:
                return rhs.DeepClone();
        }
    }

    private static List<(string Element, JsonNode? Item)> Elements(JsonArray list, Func<JsonNode?, string?> element) =>
        list.Select(item => (element(item) ?? "", item)).ToList();

    /// <summary>The item order structured-merge-diff gives a merged list: the configuration's order for shared items, live-only items kept in place.</summary>
    private static JsonArray MergeList(List<(string Element, JsonNode? Item)> lhs, List<(string Element, JsonNode? Item)> rhs, Func<JsonNode?, JsonNode?, JsonNode?> merge)
    {
        var left = new Dictionary<string, JsonNode?>(StringComparer.Ordinal);
        var right = new Dictionary<string, JsonNode?>(StringComparer.Ordinal);
        lhs.ForEach(e => left.TryAdd(e.Element, e.Item));
        rhs.ForEach(e => right.TryAdd(e.Element, e.Item));
        var shared = new Queue<string>(rhs.Select(e => e.Element).Where(left.ContainsKey));
        string? Next() => shared.Count > 0 ? shared.Dequeue() : null;
        var nextShared = Next();
        var done = new HashSet<string>(StringComparer.Ordinal);
        var output = new List<JsonNode?>();
        for (int l = 0, r = 0; l < lhs.Count || r < rhs.Count;)
        {
            if (l < lhs.Count && r < rhs.Count)
            {
                var element = lhs[l].Element;
                if (element == rhs[r].Element)
                {
                    done.Add(element);
                    output.Add(merge(left[element], right[element]));
                    l++;
                    r++;
                    nextShared = Next();
                    continue;
                }

                if (right.ContainsKey(element) && nextShared is not null && nextShared != element)
                {
                    l++;
                    continue;
                }
            }

            if (l < lhs.Count)
            {
                var element = lhs[l].Element;
                if (!right.ContainsKey(element))
                {
                    output.Add(merge(lhs[l].Item, null));
                    l++;
                    continue;
                }

                if (done.Contains(element))
                {
                    l++;
                    continue;
                }
            }

            if (r < rhs.Count)
            {
                var element = rhs[r].Element;
                done.Add(element);
                output.Add(merge(left.GetValueOrDefault(element), right[element]));
                r++;
                if (nextShared == element)
                {
                    nextShared = Next();
                }
            }
        }

        return new JsonArray(output.ToArray());
    }

    /// <summary>Removes the field, map entry or list item at <paramref name="path"/>, if there.</summary>
    private static void Remove(JsonNode root, string path)
    {
        var elements = path.Split('\n');
        JsonNode? node = root;
        for (var i = 0; i < elements.Length && node is not null; i++)
        {
            var element = elements[i];
            var last = i == elements.Length - 1;
            if (element.StartsWith("f:", StringComparison.Ordinal) && node is JsonObject obj)
            {
                if (last)
                {
                    obj.Remove(element[2..]);
                }

                node = obj[element[2..]];
            }
            else if (node is JsonArray list && (element.StartsWith("k:", StringComparison.Ordinal) || element.StartsWith("v:", StringComparison.Ordinal)))
            {
                var key = JsonNode.Parse(element[2..]);
                var index = -1;
                for (var j = 0; j < list.Count && index < 0; j++)
                {
                    var matches = element[0] == 'v'
                        ? JsonNode.DeepEquals(list[j], key)
                        : key is JsonObject fields && fields.All(f => JsonNode.DeepEquals(list[j]?[f.Key] ?? (f.Key == "protocol" ? JsonValue.Create("TCP") : null), f.Value));
                    index = matches ? j : -1;
                }

                if (index < 0)
                {
                    return;
                }

                if (last)
                {
                    list.RemoveAt(index);
                    return;
                }

                node = list[index];
            }
            else
            {
                return;
            }
        }
    }

    /// <summary>The set without the fields the field manager never tracks: object identity, and the status a write to the main resource resets.</summary>
    private static HashSet<string> Filter(ResourceKind kind, IEnumerable<string> paths)
    {
        var resetsStatus = kind.Plural is "services" or "namespaces" or "deployments" or "persistentvolumeclaims";
        return paths.Where(p => !Stripped.Contains(p) && !(resetsStatus && (p == "f:status" || p.StartsWith("f:status\n", StringComparison.Ordinal))))
            .ToHashSet(StringComparer.Ordinal);
    }

    /// <summary>An object as the field manager sees it: without its managedFields.</summary>
    private static JsonObject? Plain(JsonObject? obj)
    {
        if (obj?.DeepClone() is not JsonObject copy)
        {
            return null;
        }

        copy.Meta().Remove("managedFields");
        return copy;
    }

    /// <summary>A new, empty object of the kind as the typed Go structs render it (what a create is compared with).</summary>
    private static JsonObject Zero(ResourceKind kind) => kind.Plural switch
    {
        "services" => new JsonObject { ["metadata"] = new JsonObject(), ["spec"] = new JsonObject(), ["status"] = new JsonObject { ["loadBalancer"] = new JsonObject() } },
        "networkpolicies" => new JsonObject { ["metadata"] = new JsonObject(), ["spec"] = new JsonObject { ["podSelector"] = new JsonObject() } },
        "namespaces" => new JsonObject { ["metadata"] = new JsonObject(), ["spec"] = new JsonObject(), ["status"] = new JsonObject() },
        "events" => new JsonObject { ["metadata"] = new JsonObject(), ["involvedObject"] = new JsonObject(), ["source"] = new JsonObject() },
        _ => new JsonObject { ["metadata"] = new JsonObject() },
    };

    /// <summary>The scheme's SetDefaults_* only (not the registry's allocation): what a writer of an Update is credited with.</summary>
    private static JsonObject SchemeDefaults(ResourceKind kind, JsonObject obj)
    {
        var copy = (JsonObject)obj.DeepClone();
        Json.DropNulls(copy);
        if (kind == ResourceKind.Services)
        {
            var spec = copy.Obj("spec");
            spec["sessionAffinity"] ??= "None";
            var type = (spec["type"] ??= "ClusterIP").ToString();
            if (type == "ExternalName")
            {
                return copy;
            }

            foreach (var port in spec["ports"].Objects())
            {
                port["protocol"] ??= "TCP";
                if (port["targetPort"] is null || port["targetPort"].Int() == 0 || port.Str("targetPort") == "")
                {
                    port["targetPort"] = port["port"]?.DeepClone();
                }
            }

            spec["internalTrafficPolicy"] ??= "Cluster";
            if (type is "NodePort" or "LoadBalancer")
            {
                spec["externalTrafficPolicy"] ??= "Cluster";
            }

            if (type == "LoadBalancer")
            {
                spec["allocateLoadBalancerNodePorts"] ??= true;
            }
        }
        else if (kind == ResourceKind.NetworkPolicies)
        {
            var spec = copy.Obj("spec");
            if (spec["policyTypes"] is not JsonArray { Count: > 0 })
            {
                spec["policyTypes"] = spec["egress"] is JsonArray { Count: > 0 } ? new JsonArray("Ingress", "Egress") : new JsonArray("Ingress");
            }

            foreach (var port in spec["ingress"].Objects().Concat(spec["egress"].Objects()).SelectMany(r => r["ports"].Objects()))
            {
                port["protocol"] ??= "TCP";
            }
        }
        else if (kind == ResourceKind.Namespaces && copy.Str("metadata.name") is { Length: > 0 } name)
        {
            copy.Meta().Obj("labels")["kubernetes.io/metadata.name"] = name;
        }

        return copy;
    }

    // ---- managedFields entries ----

    private sealed class Manager(string name, string operation, string apiVersion, string? time, HashSet<string> set)
    {
        public string Name { get; } = name;

        public string Operation { get; } = operation;

        public string ApiVersion { get; set; } = apiVersion;

        public string? Time { get; set; } = time;

        public HashSet<string> Set { get; set; } = set;

        public string? Subresource { get; init; }

        /// <summary>What the apiserver sorts conflicts by: the entry without time and fields, Apply entries without apiVersion.</summary>
        public string Identity
        {
            get
            {
                var identity = new JsonObject { ["manager"] = Name, ["operation"] = Operation };
                if (Operation != "Apply" && ApiVersion.Length > 0)
                {
                    identity["apiVersion"] = ApiVersion;
                }

                if (Subresource is { Length: > 0 })
                {
                    identity["subresource"] = Subresource;
                }

                return identity.ToJsonString();
            }
        }

        /// <summary>How a conflict names the manager: <c>"kubectl-edit" using v1</c> for an Update, just the quoted name for an Apply.</summary>
        public string Describe()
        {
            var text = JsonSerializer.Serialize(Name);
            if (Subresource is { Length: > 0 })
            {
                text += $" with subresource {JsonSerializer.Serialize(Subresource)}";
            }

            return Operation == "Update" ? $"{text} using {ApiVersion}" : text;
        }
    }

    /// <summary>Decodes managedFields; null when an entry does not decode (the apiserver then falls back to the live ones).</summary>
    private static List<Manager>? Decode(JsonNode? managedFields)
    {
        if (managedFields is null)
        {
            return [];
        }

        if (managedFields is not JsonArray entries)
        {
            return null;
        }

        var managers = new List<Manager>();
        foreach (var entry in entries)
        {
            if (entry is not JsonObject e || e.Str("fieldsType") != "FieldsV1" || e.Str("operation") is not ("Apply" or "Update"))
            {
                return null;
            }

            var set = new HashSet<string>(StringComparer.Ordinal);
            if (e["fieldsV1"] is JsonObject fields)
            {
                ParseFields(fields, "", set);
            }

            var manager = new Manager(e.Str("manager") ?? "", e.Str("operation")!, e.Str("apiVersion") ?? "", e.Str("time"), set) { Subresource = e.Str("subresource") };
            managers.RemoveAll(m => m.Identity == manager.Identity);
            managers.Add(manager);
        }

        return managers;
    }

    private static void ParseFields(JsonObject fields, string path, HashSet<string> set)
    {
        foreach (var (key, child) in fields)
        {
            if (key == ".")
            {
                set.Add(path);
            }
            else if (child is JsonObject { Count: > 0 } children)
            {
                ParseFields(children, Join('\n', path, key), set);
            }
            else
            {
                set.Add(Join('\n', path, key));
            }
        }
    }

    /// <summary>Writes the entries as the apiserver orders them: Apply before Update, then by time, manager and apiVersion.</summary>
    private static void Encode(JsonObject obj, List<Manager> managers)
    {
        var meta = obj.Meta();
        meta.Remove("managedFields");
        if (managers.Count == 0)
        {
            return;
        }

        var entries = managers
            .OrderBy(m => m.Operation, StringComparer.Ordinal)
            .ThenBy(m => m.Time is null ? DateTimeOffset.MinValue : DateTimeOffset.Parse(m.Time, CultureInfo.InvariantCulture))
            .ThenBy(m => m.Name, StringComparer.Ordinal).ThenBy(m => m.ApiVersion, StringComparer.Ordinal).ThenBy(m => m.Subresource ?? "", StringComparer.Ordinal)
            .Select(m =>
            {
                var entry = new JsonObject { ["manager"] = m.Name, ["operation"] = m.Operation, ["apiVersion"] = m.ApiVersion };
                if (m.Time is not null)
                {
                    entry["time"] = m.Time;
                }

                entry["fieldsType"] = "FieldsV1";
                entry["fieldsV1"] = FieldsV1(m.Set);
                if (m.Subresource is { Length: > 0 })
                {
                    entry["subresource"] = m.Subresource;
                }

                return (JsonNode)entry;
            });
        meta["managedFields"] = new JsonArray(entries.ToArray());
    }

    private sealed class Tree
    {
        public bool Member { get; set; }

        public Dictionary<string, Tree> Children { get; } = new(StringComparer.Ordinal);

        public IEnumerable<KeyValuePair<string, Tree>> Sorted => Children.OrderBy(c => c.Key, Comparer<string>.Create(CompareElements));
    }

    private static Tree Build(IEnumerable<string> paths)
    {
        var root = new Tree();
        foreach (var path in paths)
        {
            var node = root;
            foreach (var element in path.Split('\n'))
            {
                if (!node.Children.TryGetValue(element, out var child))
                {
                    child = new Tree();
                    node.Children[element] = child;
                }

                node = child;
            }

            node.Member = true;
        }

        return root;
    }

    /// <summary>FieldsV1 as structured-merge-diff writes it: sorted elements, <c>{}</c> for a leaf, <c>".": {}</c> for a member with children.</summary>
    private static JsonObject FieldsV1(IEnumerable<string> paths)
    {
        static JsonObject Emit(Tree node, bool self)
        {
            var obj = new JsonObject();
            if (self && node.Member && node.Children.Count > 0)
            {
                obj["."] = new JsonObject();
            }

            foreach (var (element, child) in node.Sorted)
            {
                obj[element] = child.Children.Count == 0 ? new JsonObject() : Emit(child, self: true);
            }

            return obj;
        }

        return Emit(Build(paths), self: false);
    }

    /// <summary>The paths of a set in structured-merge-diff's order: at each level the members, then the children's.</summary>
    private static IEnumerable<string> Iterate(IEnumerable<string> paths)
    {
        static IEnumerable<string> Walk(Tree node, string prefix)
        {
            var sorted = node.Sorted.ToList();
            foreach (var (element, child) in sorted.Where(c => c.Value.Member))
            {
                yield return Join('\n', prefix, element);
            }

            foreach (var (element, child) in sorted.Where(c => c.Value.Children.Count > 0))
            {
                foreach (var path in Walk(child, Join('\n', prefix, element)))
                {
                    yield return path;
                }
            }
        }

        return Walk(Build(paths), "");
    }

    /// <summary>Path element order: fields by name, then keys, values and indexes.</summary>
    private static int CompareElements(string a, string b)
    {
        static int Rank(char c) => c switch { 'f' => 0, 'k' => 1, 'v' => 2, _ => 3 };
        if (Rank(a[0]) != Rank(b[0]))
        {
            return Rank(a[0]).CompareTo(Rank(b[0]));
        }

        return a[0] switch
        {
            'f' => string.CompareOrdinal(a, b),
            'i' => int.Parse(a[2..], CultureInfo.InvariantCulture).CompareTo(int.Parse(b[2..], CultureInfo.InvariantCulture)),
            'k' => CompareKeys(JsonNode.Parse(a[2..]) as JsonObject ?? [], JsonNode.Parse(b[2..]) as JsonObject ?? []),
            _ => CompareValues(JsonNode.Parse(a[2..]), JsonNode.Parse(b[2..])),
        };
    }

    private static int CompareKeys(JsonObject a, JsonObject b)
    {
        var (left, right) = (a.ToList(), b.ToList());
        for (var i = 0; i < Math.Min(left.Count, right.Count); i++)
        {
            var byName = string.CompareOrdinal(left[i].Key, right[i].Key);
            if (byName != 0)
            {
                return byName;
            }

            var byValue = CompareValues(left[i].Value, right[i].Value);
            if (byValue != 0)
            {
                return byValue;
            }
        }

        return left.Count.CompareTo(right.Count);
    }

    private static int CompareValues(JsonNode? a, JsonNode? b)
    {
        if (a is JsonValue x && b is JsonValue y && x.GetValueKind() == JsonValueKind.Number && y.GetValueKind() == JsonValueKind.Number)
        {
            return x.GetValue<double>().CompareTo(y.GetValue<double>());
        }

        return a is JsonValue s && b is JsonValue t && s.GetValueKind() == JsonValueKind.String && t.GetValueKind() == JsonValueKind.String
            ? string.CompareOrdinal(s.GetValue<string>(), t.GetValue<string>())
            : string.CompareOrdinal(a?.ToJsonString(), b?.ToJsonString());
    }

    /// <summary>A path as fieldpath.Path prints it: <c>.spec.ports[port=80,protocol="TCP"].targetPort</c>.</summary>
    private static string PathText(string path) => string.Concat(path.Split('\n').Select(ElementText));

    private static string ElementText(string element) => element[0] switch
    {
        'f' => "." + element[2..],
        'k' => "[" + string.Join(',', (JsonNode.Parse(element[2..]) as JsonObject ?? []).Select(p => $"{p.Key}={p.Value?.ToJsonString()}")) + "]",
        'v' => "[=" + element[2..] + "]",
        _ => "[" + element[2..] + "]",
    };

    private static string Join(char separator, string prefix, string element) => prefix.Length == 0 ? element : prefix + separator + element;

    // ---- request options and body ----

    private static string GroupVersionKind(JsonObject obj) => GroupVersionKind(obj.Str("apiVersion") ?? "", obj.Str("kind") ?? "");

    /// <summary>schema.GroupVersionKind's String(): <c>/v1, Kind=Service</c>.</summary>
    private static string GroupVersionKind(string apiVersion, string kind)
    {
        var slash = apiVersion.IndexOf('/', StringComparison.Ordinal);
        var (group, version) = slash < 0 ? ("", apiVersion) : (apiVersion[..slash], apiVersion[(slash + 1)..]);
        return $"{group}/{version}, Kind={kind}";
    }

    private static void ValidateManager(string manager, FieldErrors errors)
    {
        if (Encoding.UTF8.GetByteCount(manager) > FieldManagerMaxLength)
        {
            errors.TooLong("fieldManager", FieldManagerMaxLength);
        }

        var position = 0;
        foreach (var rune in manager.EnumerateRunes())
        {
            if (!IsPrint(rune))
            {
                errors.Invalid("fieldManager", manager, $"invalid character U+{rune.Value:X4} (at position {position})");
            }

            position += rune.Utf8SequenceLength;
        }
    }

    /// <summary>Go's unicode.IsPrint: letters, marks, numbers, punctuation, symbols and the ASCII space.</summary>
    private static bool IsPrint(Rune rune) => rune.Value == ' ' || Rune.GetUnicodeCategory(rune) is not (UnicodeCategory.Control or UnicodeCategory.Format
        or UnicodeCategory.Surrogate or UnicodeCategory.PrivateUse or UnicodeCategory.OtherNotAssigned or UnicodeCategory.SpaceSeparator
        or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator);

    private static void ThrowIfInvalid(string options, FieldErrors errors)
    {
        if (errors.Count == 0)
        {
            return;
        }

        var summary = errors.Count == 1 ? errors[0].ToString() : "[" + string.Join(", ", errors) + "]";
        var details = new JsonObject
        {
            ["name"] = "", ["group"] = "meta.k8s.io", ["kind"] = options,
            ["causes"] = new JsonArray(errors.Select(e => (JsonNode)new JsonObject { ["reason"] = e.Reason, ["message"] = e.Body, ["field"] = e.Field }).ToArray()),
        };
        throw new KubeApiException(422, "Invalid", $"{options}.meta.k8s.io \"\" is invalid: {summary}", details);
    }

    /// <summary>The body as sigs.k8s.io/yaml reads it: JSON, or YAML (1.1 scalars: yes/no/on/off are booleans).</summary>
    private static JsonObject Parse(string body)
    {
        JsonNode? node;
        try
        {
            node = JsonNode.Parse(body);
        }
        catch (JsonException)
        {
            try
            {
                var stream = new YamlStream();
                stream.Load(new StringReader(body));
                node = stream.Documents.Count == 0 ? null : FromYaml(stream.Documents[0].RootNode);
            }
            catch (YamlException e)
            {
                throw KubeApiException.BadRequest($"error decoding YAML: {e.Message}");
            }
        }

        return node switch
        {
            JsonObject obj => obj,
            null => [],
            _ => throw KubeApiException.BadRequest(
                $"error decoding YAML: error unmarshaling JSON: while decoding JSON: json: cannot unmarshal {(node is JsonArray ? "array" : node.GetValueKind().ToString().ToLowerInvariant())} into Go value of type map[string]interface {{}}"),
        };
    }

    private static JsonNode? FromYaml(YamlNode node) => node switch
    {
        YamlMappingNode map => new JsonObject(map.Children.Select(p => KeyValuePair.Create(((YamlScalarNode)p.Key).Value ?? "", FromYaml(p.Value)))),
        YamlSequenceNode list => new JsonArray(list.Children.Select(FromYaml).ToArray()),
        YamlScalarNode { Style: ScalarStyle.SingleQuoted or ScalarStyle.DoubleQuoted or ScalarStyle.Literal or ScalarStyle.Folded } quoted => JsonValue.Create(quoted.Value ?? ""),
        YamlScalarNode scalar => scalar.Value switch
        {
            null or "" or "~" or "null" or "Null" or "NULL" => null,
            "true" or "True" or "TRUE" or "yes" or "Yes" or "YES" or "on" or "On" or "ON" or "y" or "Y" => JsonValue.Create(true),
            "false" or "False" or "FALSE" or "no" or "No" or "NO" or "off" or "Off" or "OFF" or "n" or "N" => JsonValue.Create(false),
            var text when long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var number) => JsonValue.Create(number),
            var text when text.Any(char.IsDigit) && double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var real) => JsonValue.Create(real),
            var text => JsonValue.Create(text),
        },
        _ => null,
    };
}
