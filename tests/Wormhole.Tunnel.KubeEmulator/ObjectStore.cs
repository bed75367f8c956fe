using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using System.Threading.Channels;

namespace Wormhole.Tunnel.KubeEmulator;

internal sealed record Change(long ResourceVersion, ResourceKind Kind, string Type, JsonObject? Old, JsonObject Object);

/// <summary>One open watch: what it selects, and the event lines queued for its response.</summary>
internal sealed class Watcher(ResourceKind kind, string? ns, Func<JsonObject, bool> filter, Func<JsonObject, JsonNode>? render)
{
    public ResourceKind Kind { get; } = kind;

    public Channel<string> Lines { get; } = Channel.CreateUnbounded<string>(new UnboundedChannelOptions { SingleReader = true });

    public CancellationTokenSource Dropped { get; } = new();

    public bool Sees(JsonObject obj) => (ns is null || obj.Str("metadata.namespace") == ns) && filter(obj);

    /// <summary>Queues a change as this watch sees it: leaving the selection is DELETED, entering it is ADDED.</summary>
    public void Offer(Change change)
    {
        if (change.Kind != Kind)
        {
            return;
        }

        var type = change.Type == "DELETED"
            ? Sees(change.Object) ? "DELETED" : null
            : (change.Old is not null && Sees(change.Old), Sees(change.Object)) switch
            {
                (true, true) => "MODIFIED",
                (false, true) => "ADDED",
                (true, false) => "DELETED",
                _ => null,
            };
        if (type is not null)
        {
            Lines.Writer.TryWrite(Line(type, change.Object));
        }
    }

    /// <summary>One event line; the object as the client asked for it (as is, or as a Table).</summary>
    public string Line(string type, JsonObject obj) => Event(type, render is null ? obj : render(obj));

    public static string Event(string type, JsonNode obj) => new JsonObject { ["type"] = type, ["object"] = obj.DeepClone() }.ToJsonString();
}

/// <summary>
/// The objects, one resourceVersion counter, the change history watches resume from, and the open watches.
/// One lock orders everything, so a watch registered under it can never miss or repeat a change.
/// </summary>
internal sealed class ObjectStore
{
    private const int HistoryLimit = 20_000;
    private static readonly string[] TopLevelOrder = ["kind", "apiVersion", "metadata", "spec"];
    private static readonly IPNetwork ServiceRange = IPNetwork.Parse("10.96.0.0/16");
    private static readonly string[] IpFamilyFields = ["ipFamilies", "ipFamilyPolicy"];
    private static readonly string[] LoadBalancerFields = ["healthCheckNodePort", "allocateLoadBalancerNodePorts", "loadBalancerClass"];
    private readonly Lock _gate = new();
    private readonly Dictionary<ResourceKind, SortedDictionary<string, JsonObject>> _objects =
        ResourceKind.All.ToDictionary(k => k, _ => new SortedDictionary<string, JsonObject>(StringComparer.Ordinal));

    private readonly List<Change> _history = [];
    private readonly List<Watcher> _watchers = [];
    private readonly TimeProvider _time;
    private long _resourceVersion;
    private long _compactedBefore;
    private int _nextIp = 10;

    public ObjectStore(TimeProvider time) => _time = time;

    public long ResourceVersion
    {
        get
        {
            lock (_gate)
            {
                return _resourceVersion;
            }
        }
    }

    public int WatchCount
    {
        get
        {
            lock (_gate)
            {
                return _watchers.Count;
            }
        }
    }

    /// <summary>Checks apiVersion/kind and unknown fields the way the apiserver's decoder does under <c>fieldValidation</c>.</summary>
    public static JsonObject Decode(ResourceKind kind, JsonNode? body, string? fieldValidation, List<string> warnings)
    {
        if (body is not JsonObject obj)
        {
            throw KubeApiException.BadRequest("couldn't get version/kind; json parse error: expected a JSON object");
        }

        var (apiVersion, kindName) = (obj.Str("apiVersion") ?? kind.ApiVersion, obj.Str("kind") ?? kind.Kind);
        if (apiVersion != kind.ApiVersion || kindName != kind.Kind)
        {
            throw KubeApiException.BadRequest($"the API version in the data ({apiVersion}) or kind ({kindName}) does not match the expected {kind.ApiVersion}, Kind={kind.Kind}");
        }

        Json.DropNulls(obj);
        obj["kind"] = kind.Kind;
        obj["apiVersion"] = kind.ApiVersion;
        var unknown = new List<string>();
        kind.Fields.FindUnknown(obj, "", unknown, prune: true);
        switch (fieldValidation ?? "Warn")
        {
            case "Strict" when unknown.Count > 0:
                throw KubeApiException.BadRequest($"{kind.Kind} in version \"{kind.Version}\" cannot be handled as a {kind.Kind}: strict decoding error: "
                    + string.Join(", ", unknown.Select(u => $"unknown field \"{u}\"")));
            case "Strict" or "Ignore":
                break;
            case "Warn":
                warnings.AddRange(unknown.Select(u => $"unknown field \"{u}\""));
                break;
            default:
                throw KubeApiException.BadRequest($"fieldValidation parameter unsupported: \"{fieldValidation}\"");
        }

        return obj;
    }

    public JsonObject? Get(ResourceKind kind, string? ns, string name)
    {
        lock (_gate)
        {
            return _objects[kind].GetValueOrDefault(Key(kind, ns, name))?.DeepClone() as JsonObject;
        }
    }

    /// <param name="manager">Who the write is recorded for in managedFields (an Update); null when the caller set them (an apply).</param>
    public JsonObject Create(ResourceKind kind, string? ns, JsonObject obj, bool dryRun, string? manager)
    {
        lock (_gate)
        {
            var meta = obj.Meta();
            if (meta.Str("resourceVersion") is { Length: > 0 })
            {
                throw new KubeApiException("resourceVersion should not be set on objects to be created");
            }

            if ((meta.Str("name") ?? "").Length == 0 && meta.Str("generateName") is { Length: > 0 } prefix)
            {
                meta["name"] = prefix + string.Concat(Enumerable.Range(0, 5).Select(_ => "bcdfghjklmnpqrstvwxz2456789"[Random.Shared.Next(27)]));
            }

            var name = meta.Str("name") ?? "";
            SetNamespace(kind, meta, ns);
            if (kind.Namespaced && !_objects[ResourceKind.Namespaces].ContainsKey(ns!))
            {
                throw KubeApiException.NotFound(ResourceKind.Namespaces, ns!);
            }

            foreach (var field in new[] { "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds", "generation" })
            {
                meta.Remove(field);
            }

            if (manager is not null)
            {
                ServerSideApply.TrackUpdate(kind, null, obj, manager, _time.GetUtcNow());
            }

            meta["uid"] = Guid.NewGuid().ToString();
            meta["creationTimestamp"] = Json.Timestamp(_time.GetUtcNow());
            obj.Remove("status");
            ApplyDefaults(kind, obj, old: null);
            Validation.Validate(kind, obj, old: null);
            if (_objects[kind].ContainsKey(Key(kind, ns, name)))
            {
                throw KubeApiException.AlreadyExists(kind, name);
            }

            Allocate(kind, obj, Key(kind, ns, name));
            return (JsonObject)(dryRun ? obj : Commit(kind, "ADDED", null, obj)).DeepClone();
        }
    }

    public JsonObject Update(ResourceKind kind, string? ns, string name, JsonObject obj, bool dryRun, string? manager) => Patch(kind, ns, name, _ => obj, dryRun, manager, uidIsPrecondition: true);

    /// <summary>
    /// A server-side apply under the lock: <paramref name="apply"/> gets a copy of the current object (null when missing) and returns the
    /// object to store, managedFields included; it is then created or updated like any other write.
    /// </summary>
    public (JsonObject Object, bool Created) Apply(ResourceKind kind, string? ns, string name, Func<JsonObject?, JsonObject> apply, bool dryRun)
    {
        lock (_gate)
        {
            var live = _objects[kind].GetValueOrDefault(Key(kind, ns, name));
            var obj = apply(live?.DeepClone() as JsonObject);
            return live is null ? (Create(kind, ns, obj, dryRun, manager: null), true) : (Patch(kind, ns, name, _ => obj, dryRun, manager: null), false);
        }
    }

    /// <summary>Read-modify-write under the lock: <paramref name="change"/> gets a copy of the current object.</summary>
    /// <param name="uidIsPrecondition">A PUT: another uid in the body fails as a precondition (409), not as an immutable field (422).</param>
    public JsonObject Patch(ResourceKind kind, string? ns, string name, Func<JsonObject, JsonObject> change, bool dryRun, string? manager, bool uidIsPrecondition = false)
    {
        lock (_gate)
        {
            var key = Key(kind, ns, name);
            var old = _objects[kind].GetValueOrDefault(key) ?? throw KubeApiException.NotFound(kind, name);
            var obj = change((JsonObject)old.DeepClone());
            var meta = obj.Meta();
            if (meta.Str("name") != name)
            {
                throw KubeApiException.BadRequest($"the name of the object ({meta.Str("name")}) does not match the name on the URL ({name})");
            }

            SetNamespace(kind, meta, ns);
            var oldMeta = old.Meta();
            var otherUid = meta.Str("uid") is { Length: > 0 } uid && uid != oldMeta.Str("uid") ? uid : null;
            if (otherUid is not null && uidIsPrecondition)
            {
                // PUT: storage checks the body's uid as a precondition before anything else.
                throw KubeApiException.Conflict(kind, name, $"Precondition failed: UID in precondition: {otherUid}, UID in object meta: {oldMeta.Str("uid")}");
            }

            if (meta.Str("resourceVersion") is { Length: > 0 } rv && rv != oldMeta.Str("resourceVersion"))
            {
                throw KubeApiException.Stale(kind, name);
            }

            if (otherUid is not null)
            {
                // PATCH (apply included): no precondition, the update's metadata validation refuses the changed uid.
                var errors = new FieldErrors();
                errors.Invalid("metadata.uid", otherUid, "field is immutable");
                throw KubeApiException.Invalid(kind, name, errors);
            }

            foreach (var field in new[] { "uid", "creationTimestamp", "generation", "resourceVersion", "deletionTimestamp" })
            {
                meta[field] = oldMeta[field]?.DeepClone();
            }

            if (kind.Plural is "services" or "namespaces")
            {
                obj["status"] = old["status"]?.DeepClone();
            }

            Json.DropNulls(obj);
            if (manager is not null)
            {
                ServerSideApply.TrackUpdate(kind, old, obj, manager, _time.GetUtcNow());
            }

            ApplyDefaults(kind, obj, old);
            Validation.Validate(kind, obj, old);
            if (kind == ResourceKind.NetworkPolicies && !JsonNode.DeepEquals(obj["spec"], old["spec"]))
            {
                meta["generation"] = (oldMeta["generation"].Int() ?? 1) + 1;
            }

            Allocate(kind, obj, key);
            obj = Canonical(obj);
            if (JsonNode.DeepEquals(obj, old) || dryRun)
            {
                return (JsonObject)obj.DeepClone();
            }

            return (JsonObject)Commit(kind, "MODIFIED", old, obj).DeepClone();
        }
    }

    /// <summary>Deletes an object (a namespace with everything in it) and returns the apiserver's response body.</summary>
    public JsonObject Delete(ResourceKind kind, string? ns, string name, JsonObject? options, bool dryRun)
    {
        lock (_gate)
        {
            var key = Key(kind, ns, name);
            var old = _objects[kind].GetValueOrDefault(key) ?? throw KubeApiException.NotFound(kind, name);
            var (rv, uid) = (options.Str("preconditions.resourceVersion"), options.Str("preconditions.uid"));
            if (uid is not null && uid != old.Str("metadata.uid"))
            {
                throw KubeApiException.Conflict(kind, name, $"Precondition failed: UID in precondition: {uid}, UID in object meta: {old.Str("metadata.uid")}");
            }

            if (rv is not null && rv != old.Str("metadata.resourceVersion"))
            {
                throw KubeApiException.Conflict(kind, name, $"Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {old.Str("metadata.resourceVersion")}");
            }

            if (kind == ResourceKind.Namespaces && name is "default" or "kube-system" or "kube-public")
            {
                throw KubeApiException.Forbidden(kind, name, "this namespace may not be deleted");
            }

            if (dryRun)
            {
                return (JsonObject)old.DeepClone();
            }

            if (kind != ResourceKind.Namespaces)
            {
                Commit(kind, "DELETED", old, (JsonObject)old.DeepClone());
                return new JsonObject
                {
                    ["kind"] = "Status", ["apiVersion"] = "v1", ["metadata"] = new JsonObject(), ["status"] = "Success",
                    ["details"] = new JsonObject { ["name"] = name, ["group"] = kind.Group, ["kind"] = kind.Plural, ["uid"] = old.Str("metadata.uid") },
                };
            }

            var terminating = (JsonObject)old.DeepClone();
            terminating.Meta()["deletionTimestamp"] = Json.Timestamp(_time.GetUtcNow());
            terminating.Obj("status")["phase"] = "Terminating";
            terminating = Commit(kind, "MODIFIED", old, terminating);
            var response = terminating.DeepClone();
            foreach (var (namespacedKind, objects) in _objects.Where(p => p.Key.Namespaced))
            {
                foreach (var (_, child) in objects.Where(p => p.Key.StartsWith(name + "/", StringComparison.Ordinal)).ToList())
                {
                    Commit(namespacedKind, "DELETED", child, (JsonObject)child.DeepClone());
                }
            }

            Commit(kind, "DELETED", terminating, (JsonObject)terminating.DeepClone());
            return (JsonObject)response;
        }
    }

    /// <summary>A page of matching objects (in key order) with the list's resourceVersion and the continue token.</summary>
    public (List<JsonObject> Items, long ResourceVersion, string? Continue, long Remaining) List(
        ResourceKind kind, string? ns, Func<JsonObject, bool> filter, int limit = 0, string? continueToken = null)
    {
        lock (_gate)
        {
            var start = "";
            if (!string.IsNullOrEmpty(continueToken))
            {
                var bytes = new byte[continueToken.Length];
                var parts = Convert.TryFromBase64String(continueToken, bytes, out var length) ? Encoding.UTF8.GetString(bytes, 0, length).Split('|', 2) : [];
                if (parts.Length != 2 || !long.TryParse(parts[0], CultureInfo.InvariantCulture, out var listedAt))
                {
                    throw KubeApiException.BadRequest("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)");
                }

                if (listedAt < _compactedBefore)
                {
                    throw KubeApiException.Expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.");
                }

                start = parts[1];
            }

            var matching = _objects[kind].Where(p => string.CompareOrdinal(p.Key, start) > 0 && (ns is null || p.Key.StartsWith(ns + "/", StringComparison.Ordinal)) && filter(p.Value)).ToList();
            var page = limit > 0 ? matching.Take(limit).ToList() : matching;
            var next = page.Count < matching.Count ? Convert.ToBase64String(Encoding.UTF8.GetBytes($"{_resourceVersion}|{page[^1].Key}")) : null;
            return (page.Select(p => (JsonObject)p.Value.DeepClone()).ToList(), _resourceVersion, next, matching.Count - page.Count);
        }
    }

    /// <summary>
    /// Opens a watch. Without a resourceVersion (or "0") it starts with ADDED for what exists; from a resourceVersion it replays
    /// the later history, or answers a 410 ERROR event when that version is compacted away.
    /// </summary>
    public Watcher Watch(ResourceKind kind, string? ns, Func<JsonObject, bool> filter, Func<JsonObject, JsonNode>? render, string? resourceVersion, bool initialEventsBookmark)
    {
        lock (_gate)
        {
            var watcher = new Watcher(kind, ns, filter, render);
            if (string.IsNullOrEmpty(resourceVersion) || resourceVersion == "0" || initialEventsBookmark)
            {
                foreach (var obj in _objects[kind].Values.Where(watcher.Sees))
                {
                    watcher.Lines.Writer.TryWrite(watcher.Line("ADDED", obj));
                }

                if (initialEventsBookmark)
                {
                    var bookmark = Bookmark(kind, _resourceVersion);
                    bookmark.Meta()["annotations"] = new JsonObject { ["k8s.io/initial-events-end"] = "true" };
                    watcher.Lines.Writer.TryWrite(Watcher.Event("BOOKMARK", bookmark));
                }
            }
            else if (!long.TryParse(resourceVersion, NumberStyles.None, CultureInfo.InvariantCulture, out var from))
            {
                throw KubeApiException.BadRequest($"resourceVersion: Invalid value: \"{resourceVersion}\": strconv.ParseUint: parsing \"{resourceVersion}\": invalid syntax");
            }
            else if (from < _compactedBefore)
            {
                var gone = KubeApiException.Expired($"too old resource version: {from} ({_compactedBefore})").ToStatus();
                gone.Remove("metadata");
                watcher.Lines.Writer.TryWrite(Watcher.Event("ERROR", gone));
                watcher.Lines.Writer.Complete();
                return watcher;
            }
            else
            {
                foreach (var change in _history.Where(c => c.ResourceVersion > from))
                {
                    watcher.Offer(change);
                }
            }

            _watchers.Add(watcher);
            return watcher;
        }
    }

    /// <summary>The resourceVersion a BOOKMARK may carry now, or null while events are still queued for this watch.</summary>
    public long? BookmarkVersion(Watcher watcher)
    {
        lock (_gate)
        {
            return watcher.Lines.Reader.TryPeek(out _) ? null : _resourceVersion;
        }
    }

    public static JsonObject Bookmark(ResourceKind kind, long resourceVersion) => new()
    {
        ["kind"] = kind.Kind, ["apiVersion"] = kind.ApiVersion,
        ["metadata"] = new JsonObject { ["resourceVersion"] = resourceVersion.ToString(CultureInfo.InvariantCulture) },
    };

    public void Unwatch(Watcher watcher)
    {
        lock (_gate)
        {
            _watchers.Remove(watcher);
        }
    }

    public void CompactBefore(long resourceVersion)
    {
        lock (_gate)
        {
            _compactedBefore = Math.Max(_compactedBefore, resourceVersion);
            _history.RemoveAll(c => c.ResourceVersion <= _compactedBefore);
        }
    }

    public void DropWatches()
    {
        lock (_gate)
        {
            foreach (var watcher in _watchers)
            {
                watcher.Dropped.Cancel();
            }

            _watchers.Clear();
        }
    }

    private static void SetNamespace(ResourceKind kind, JsonObject meta, string? ns)
    {
        if (!kind.Namespaced)
        {
            meta.Remove("namespace");
        }
        else if (meta.Str("namespace") is { Length: > 0 } given && given != ns)
        {
            throw KubeApiException.BadRequest("the namespace of the provided object does not match the namespace sent on the request");
        }
        else
        {
            meta["namespace"] = ns;
        }
    }

    private static string Key(ResourceKind kind, string? ns, string name) => kind.Namespaced ? $"{ns}/{name}" : name;

    private JsonObject Commit(ResourceKind kind, string type, JsonObject? old, JsonObject obj)
    {
        obj = Canonical(obj);
        obj.Meta()["resourceVersion"] = (++_resourceVersion).ToString(CultureInfo.InvariantCulture);
        var key = Key(kind, obj.Str("metadata.namespace"), obj.Str("metadata.name") ?? "");
        if (type == "DELETED")
        {
            _objects[kind].Remove(key);
        }
        else
        {
            _objects[kind][key] = obj;
        }

        var change = new Change(_resourceVersion, kind, type, old, obj);
        _history.Add(change);
        foreach (var watcher in _watchers)
        {
            watcher.Offer(change);
        }

        if (_history.Count > HistoryLimit)
        {
            CompactBefore(_history[HistoryLimit / 2].ResourceVersion);
        }

        return obj;
    }

    /// <summary>Orders the top-level fields as the apiserver prints them.</summary>
    private static JsonObject Canonical(JsonObject obj)
    {
        var ordered = new JsonObject();
        foreach (var (key, value) in obj.OrderBy(p => Array.IndexOf(TopLevelOrder, p.Key) is var i and >= 0 ? i : TopLevelOrder.Length).ToList())
        {
            obj.Remove(key);
            ordered[key] = value;
        }

        return ordered;
    }

    /// <summary>The apiserver's defaulting (SetDefaults_*) and the strategy's PrepareForCreate/Update.</summary>
    private static void ApplyDefaults(ResourceKind kind, JsonObject obj, JsonObject? old)
    {
        var meta = obj.Meta();
        if (kind == ResourceKind.Namespaces)
        {
            meta.Obj("labels")["kubernetes.io/metadata.name"] = meta.Str("name");
            obj.Obj("spec")["finalizers"] ??= new JsonArray("kubernetes");
            obj["status"] ??= new JsonObject { ["phase"] = "Active" };
        }
        else if (kind == ResourceKind.NetworkPolicies)
        {
            meta["generation"] ??= 1;
            var spec = obj.Obj("spec");
            if (spec["policyTypes"] is not JsonArray { Count: > 0 })
            {
                spec["policyTypes"] = spec["egress"] is JsonArray { Count: > 0 } ? new JsonArray("Ingress", "Egress") : new JsonArray("Ingress");
            }

            foreach (var port in spec["ingress"].Objects().Concat(spec["egress"].Objects()).SelectMany(r => r["ports"].Objects()))
            {
                port["protocol"] ??= "TCP";
            }
        }
        else if (kind == ResourceKind.Services)
        {
            var spec = obj.Obj("spec");
            var type = (spec["type"] ??= "ClusterIP").ToString();
            if (old?["spec"] is JsonObject oldSpec)
            {
                DropTypeDependentFields(spec, oldSpec);
            }

            spec["sessionAffinity"] ??= "None";
            obj["status"] ??= new JsonObject { ["loadBalancer"] = new JsonObject() };
            if (type == "ExternalName")
            {
                return;
            }

            var oldPorts = old.At("spec.ports").Objects().ToList();
            foreach (var port in spec["ports"].Objects())
            {
                port["protocol"] ??= "TCP";
                if (port["targetPort"] is null || port["targetPort"].Int() == 0 || port.Str("targetPort") == "")
                {
                    port["targetPort"] = port["port"]?.DeepClone();
                }

                if (type is "NodePort" or "LoadBalancer" && port["nodePort"] is null
                    && oldPorts.FirstOrDefault(o => o["port"].Int() == port["port"].Int() && o.Str("protocol") == port.Str("protocol"))?["nodePort"] is { } kept)
                {
                    port["nodePort"] = kept.DeepClone();
                }
            }

            if (string.IsNullOrEmpty(spec.Str("clusterIP")) && old.Str("spec.clusterIP") is { Length: > 0 } oldIp)
            {
                spec["clusterIP"] = oldIp;
                spec["clusterIPs"] = old.At("spec.clusterIPs")?.DeepClone();
            }

            if (spec.Str("clusterIP") is { Length: > 0 } ip)
            {
                spec["clusterIPs"] ??= new JsonArray(ip);
            }

            spec["ipFamilies"] ??= new JsonArray("IPv4");
            spec["ipFamilyPolicy"] ??= "SingleStack";
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
    }

    /// <summary>
    /// The Service strategy's dropTypeDependentFields: on an update to a type that does not use them, fields that the
    /// old type had (and may have had allocated) are wiped unless the update changed them too — node ports, the health
    /// check node port, allocateLoadBalancerNodePorts, loadBalancerClass, externalTrafficPolicy, and for ExternalName
    /// the cluster IPs with their families.
    /// </summary>
    private static void DropTypeDependentFields(JsonObject spec, JsonObject old)
    {
        static bool External(string? type) => type is "NodePort" or "LoadBalancer";
        var (type, oldType) = (spec.Str("type"), old.Str("type") ?? "ClusterIP");
        bool Same(string field) => JsonNode.DeepEquals(spec[field], old[field]);
        if (oldType != "ExternalName" && type == "ExternalName")
        {
            if (Same("clusterIP") && Same("clusterIPs"))
            {
                spec.Remove("clusterIP");
                spec.Remove("clusterIPs");
            }

            foreach (var field in IpFamilyFields.Where(Same))
            {
                spec.Remove(field);
            }
        }

        var nodePorts = spec["ports"].Objects().Select(p => p["nodePort"].Int()).OfType<long>().ToList();
        var oldNodePorts = old["ports"].Objects().Select(p => p["nodePort"].Int()).OfType<long>().ToHashSet();
        if (External(oldType) && !External(type) && nodePorts.All(oldNodePorts.Contains))
        {
            foreach (var port in spec["ports"].Objects())
            {
                port.Remove("nodePort");
            }
        }

        if (External(oldType) && !External(type) && Same("externalTrafficPolicy"))
        {
            spec.Remove("externalTrafficPolicy");
        }

        if (oldType == "LoadBalancer" && type != "LoadBalancer")
        {
            foreach (var field in LoadBalancerFields.Where(Same))
            {
                spec.Remove(field);
            }
        }
    }

    /// <summary>Cluster IPs from 10.96.0.0/16 and node ports from 30000-32767, unique across Services.</summary>
    private void Allocate(ResourceKind kind, JsonObject svc, string key)
    {
        if (kind != ResourceKind.Services || svc.Str("spec.type") == "ExternalName")
        {
            return;
        }

        var others = _objects[kind].Where(p => p.Key != key).Select(p => p.Value).ToList();
        var spec = svc.Obj("spec");
        var usedIps = others.Select(o => o.Str("spec.clusterIP")).ToHashSet();
        var errors = new FieldErrors();
        if (spec.Str("clusterIP") is not { Length: > 0 } ip)
        {
            for (var tries = 0; tries < 65534 && spec["clusterIP"] is null; tries++, _nextIp = _nextIp >= 65534 ? 2 : _nextIp + 1)
            {
                var candidate = $"10.96.{_nextIp / 256}.{_nextIp % 256}";
                if (!usedIps.Contains(candidate))
                {
                    spec["clusterIP"] = candidate;
                    spec["clusterIPs"] = new JsonArray(candidate);
                }
            }
        }
        else if (ip != "None" && (usedIps.Contains(ip) || !ServiceRange.Contains(IPAddress.Parse(ip))))
        {
            errors.Invalid("spec.clusterIPs", new JsonArray(ip), $"failed to allocate IP {ip}: "
                + (usedIps.Contains(ip) ? "provided IP is already allocated" : "provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/16"));
        }

        if (spec.Str("type") is "NodePort" or "LoadBalancer")
        {
            var usedPorts = others.SelectMany(o => o.At("spec.ports").Objects()).Select(p => p["nodePort"].Int()).ToHashSet();
            var ports = spec["ports"].Objects().ToList();
            for (var i = 0; i < ports.Count; i++)
            {
                if (ports[i]["nodePort"].Int() is { } given)
                {
                    if (!usedPorts.Add(given))
                    {
                        errors.Invalid($"spec.ports[{i}].nodePort", given, "provided port is already allocated");
                    }
                }
                else
                {
                    var free = Enumerable.Range(30000, 2768).First(p => !usedPorts.Contains(p));
                    usedPorts.Add(free);
                    ports[i]["nodePort"] = free;
                }
            }
        }

        if (errors.Count > 0)
        {
            throw KubeApiException.Invalid(kind, svc.Str("metadata.name") ?? "", errors);
        }
    }
}
