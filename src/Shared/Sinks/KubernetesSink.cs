using System.Text.Json.Nodes;
using k8s;
using k8s.Models;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.Kubernetes;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Runtime;

namespace Wormhole.Tunnel.Sinks;

/// <summary>
/// Makes the generated Services and NetworkPolicies in our namespace exactly those of the plan, by server-side apply
/// as field manager <see cref="FieldManager"/> (a Service is updated in place and keeps its uid and ClusterIP), and
/// deletes every object of ours that the plan does not want — the one rule behind garbage collection at start, after
/// peer removal and after expiry.
/// <para>
/// Ours means: labelled <c>wormhole.glothriel.github.com/exposed-by=wormhole</c> and
/// <c>wormhole.glothriel.github.com/instance=&lt;this side's --name&gt;</c>. An object labelled exposed-by=wormhole
/// without an instance label (made before objects carried it, or by glothriel/wormhole) is ours only when its selector
/// — a Service's <c>spec.selector</c>, a NetworkPolicy's <c>spec.podSelector.matchLabels</c> — equals our pod labels,
/// i.e. it points at our pods; the next apply adopts it (it gains the instance label). Ownership is checked before
/// every write, because a forced apply would take anyone's object over: nothing else is ever applied to or deleted, so
/// several sides can share a namespace. When a remote app's object name is taken by an object that is not ours, that
/// app gets no object of that kind here: a Warning Event on the object and a log line name the clash, once until it
/// goes away or changes; the pass still succeeds, as there is nothing a retry could fix.
/// </para>
/// <para>
/// Writes: an object we own is applied with <c>force</c> (what someone changed in the fields we set is taken back) and
/// with its uid as a precondition (an object made again under the name in the meantime is not touched). A Service
/// with ports the plan does not have (which an apply would leave to whoever added them, next to ours) gets our ports by a
/// JSON patch first. A new object is
/// applied without force after a GET found the name free. Objects written by earlier versions (a POST and merge patches,
/// recorded in managedFields as <c>Update</c> by <see cref="LegacyManagers"/>) first have those entries moved into our
/// <c>Apply</c> entry, as client-go's csaupgrade does, so that fields we stop setting are really removed. Deletes carry
/// the uid as a precondition.
/// </para>
/// <para>
/// Reads: an informer per kind on our namespace (label exposed-by=wormhole) replaces per-pass LISTs. Whatever changes
/// an object we wrote, deleted or left alone, other than the echo of our own write, requests a reconcile pass, which
/// repairs it. <see cref="IsUpToDate"/> is true when the plan's objects are those of the last successful pass and the
/// informers have seen no such change since, so a pass that changes nothing here costs no request at all.
/// </para>
/// <para>
/// The grace after a restart: an unwanted object of ours that existed at start (it was in this sink's first view of
/// its kind), of a peer that is still paired and has not reported its apps since start, waits until that peer's
/// first sync or <c>startupGrace</c> after start, whichever comes first — so a restart does not delete (and re-create
/// with a new ClusterIP) the Services its peers are about to re-sync. Once a peer is in
/// <see cref="Plan.ReportedPeers"/>, its app set is authoritative and its unwanted objects go at once. Objects made
/// after the start, and objects of peers that are not paired, never wait.
/// </para>
/// </summary>
public sealed partial class KubernetesSink : IPlanSink
{
    /// <summary>The reason of the Warning Event on an object whose name a remote app wants but that is not ours.</summary>
    public const string NameClashReason = "WormholeNameClash";

    /// <summary>Our field manager: the Apply entry in managedFields of every generated object.</summary>
    public const string FieldManager = "wormhole-tunnel";

    /// <summary>
    /// Update managers of earlier versions whose fields become ours on an object we own: <c>wormhole-tunnel</c> (this
    /// project before server-side apply: POST and merge patch, named after its User-Agent) and <c>app</c>
    /// (glothriel/wormhole: client-go create and update from the binary <c>/bin/app</c>).
    /// </summary>
    public static readonly IReadOnlyList<string> LegacyManagers = [FieldManager, "app"];

    private static readonly string Selector = $"{KubeNames.ExposedBy}={KubeNames.ExposedByValue}";
    private static readonly TimeSpan RetrySoon = TimeSpan.FromSeconds(1);

    /// <summary>How long a pass waits for the informers' first lists before it fails (and the loop retries).</summary>
    private static readonly TimeSpan ListWait = TimeSpan.FromSeconds(10);

    private readonly KubeApi _client;
    private readonly KubernetesSinkOptions _options;
    private readonly TimeProvider _time;
    private readonly TimeSpan _startupGrace;
    private readonly Func<string, bool> _isKnownPeer;
    private readonly EventRecorder? _events;
    private readonly ILogger _logger;
    private readonly ReconcileSignal? _signal;
    private readonly Kind<V1Service> _services;
    private readonly Kind<V1NetworkPolicy> _policies;
    private readonly DateTimeOffset _started;

    // Clashes already reported, by (kind, name): what the clash was (the object's uid, the peer and app wanting the name).
    private readonly Dictionary<(string Kind, string Name), string> _clashes = [];

    // For the grace: the peers (as label values) that have reported their apps since start.
    private readonly HashSet<string> _reportedSinceStart = new(StringComparer.Ordinal);

    // Under _gate: the state the informers are compared with (each kind's records), whether a pass is running, whether
    // drift was seen since the last pass started, and the objects the last successful pass made (null: none or failed).
    private readonly Lock _gate = new();
    private bool _passing;
    private bool _dirty;
    private string? _applied;

    /// <param name="signal">Requested when an informer sees drift; null when nothing watches (the sink is driven by hand).</param>
    /// <summary>A global app's sites and their health for its Service's annotation (global services on), or null.</summary>
    public Func<string, string?>? GlobalSites { get; init; }

    public KubernetesSink(
        KubeApi client,
        KubernetesSinkOptions options,
        TimeProvider time,
        TimeSpan startupGrace,
        Func<string, bool> isKnownPeer,
        EventRecorder? events,
        ILogger logger,
        ReconcileSignal? signal = null)
    {
        _client = client;
        _options = options;
        _time = time;
        _startupGrace = startupGrace;
        _isKnownPeer = isKnownPeer;
        _events = events;
        _logger = logger;
        _signal = signal;
        _started = time.GetUtcNow();
        _services = new Kind<V1Service>("Service", new ResourceInformer<V1Service>(client, options.Namespace, Selector, time, logger), s => s.Spec?.Selector);
        _policies = new Kind<V1NetworkPolicy>("NetworkPolicy", new ResourceInformer<V1NetworkPolicy>(client, options.Namespace, Selector, time, logger), p => p.Spec?.PodSelector?.MatchLabels);
        _services.Informer.Changed += OnInformerChanged;
        _policies.Informer.Changed += OnInformerChanged;
    }

    public string Name => "kubernetes";

    /// <summary>
    /// True when the plan's objects are those the last pass applied successfully (with nothing deferred) and the
    /// informers have seen no change to our objects since, other than the echoes of our own writes.
    /// </summary>
    public bool IsUpToDate(Plan plan)
    {
        var key = Key(GeneratedObjects.Build(plan, _options, GlobalSites));
        lock (_gate)
        {
            return !_dirty && key == _applied;
        }
    }

    /// <summary>Lists and watches our namespace's generated objects until cancelled (a background loop of the side).</summary>
    public Task RunAsync(CancellationToken cancellationToken) =>
        Task.WhenAll(_services.Informer.RunAsync(cancellationToken), _policies.Informer.RunAsync(cancellationToken));

    public async Task<SinkResult> ApplyAsync(Plan plan, CancellationToken cancellationToken)
    {
        await WaitForInformersAsync(cancellationToken);
        var desired = GeneratedObjects.Build(plan, _options, GlobalSites);
        var wantedBy = new Dictionary<string, (string Peer, string App)>(StringComparer.Ordinal);
        foreach (var listener in plan.RemoteListeners)
        {
            wantedBy.TryAdd(KubeNames.ObjectName(listener.Peer, listener.App), (listener.Peer, listener.App));
        }

        foreach (var global in plan.GlobalListeners)
        {
            wantedBy.TryAdd(GeneratedObjects.GlobalName(global.App), ("every peer (global service)", global.App));
        }

        var graceLeft = _started + _startupGrace - _time.GetUtcNow();
        if (graceLeft > TimeSpan.Zero)
        {
            _reportedSinceStart.UnionWith(plan.ReportedPeers.Select(KubeNames.LabelValue));
        }

        lock (_gate)
        {
            _passing = true;
            _dirty = false;
            _applied = null;
        }

        var succeeded = false;
        TimeSpan? retry = null;
        try
        {
            var services = await SyncAsync(desired.Services, _services, wantedBy, graceLeft, cancellationToken);
            var policies = await SyncAsync(desired.NetworkPolicies, _policies, wantedBy, graceLeft, cancellationToken);
            retry = services is null ? policies : policies is null || services < policies ? services : policies;
            succeeded = true;
            return new SinkResult { RetryAfter = retry };
        }
        finally
        {
            lock (_gate)
            {
                _passing = false;
                _applied = succeeded && retry is null ? Key(desired) : null;
                if (Drifted())
                {
                    _dirty = true;
                    _signal?.Request();
                }
            }
        }
    }

    /// <summary>Returns when to pass again (deletions deferred by the startup grace, a write that lost a race), or null.</summary>
    private async Task<TimeSpan?> SyncAsync<T>(
        IReadOnlyList<T> desired, Kind<T> kind, Dictionary<string, (string Peer, string App)> wantedBy, TimeSpan graceLeft, CancellationToken cancellationToken)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        if (kind.AtStart is null)
        {
            lock (_gate)
            {
                kind.Lists = kind.Informer.ListCount; // the view of the first pass is the baseline; later lists are relists
            }
        }

        var (cached, listed) = View(kind);
        var ours = listed.Values.Where(o => OwnerOf(o, kind) is null).ToDictionary(o => o.Metadata.Name!, StringComparer.Ordinal);
        var others = listed.Values.Where(o => OwnerOf(o, kind) is not null).ToDictionary(o => o.Metadata.Name!, StringComparer.Ordinal);
        kind.AtStart ??= ours.ToDictionary(kv => kv.Key, kv => PeerOf(kv.Value), StringComparer.Ordinal);
        var previous = kind.Records;
        var records = new Dictionary<string, Record>(StringComparer.Ordinal);
        var wanted = new HashSet<string>(StringComparer.Ordinal);
        var clashes = new HashSet<string>(StringComparer.Ordinal);
        TimeSpan? retry = null;
        var completed = false;

        // What the informer may still show of an object before it shows our latest write of it: what it shows now,
        // and our earlier writes (of this pass or the last) whose echoes have not all arrived yet.
        List<string?> Lagging(string name, IEnumerable<string?> written)
        {
            var states = new List<string?> { cached.GetValueOrDefault(name)?.Metadata.ResourceVersion };
            if (previous.TryGetValue(name, out var last) && !last.Settled)
            {
                states.AddRange(last.Before.Append(last.Rv));
            }

            return [.. states.Concat(written).Distinct()];
        }

        try
        {
            foreach (var value in desired)
            {
                var name = value.Metadata.Name!;
                if (!wanted.Add(name))
                {
                    LogNameClash(kind.Name, name);
                    continue;
                }

                var written = new List<string?>();
                var current = ours.GetValueOrDefault(name) ?? others.GetValueOrDefault(name);
                if (current is null)
                {
                    // Not among the labelled objects: the name is free, or taken by an object without our label.
                    current = await _client.GetAsync<T>(_options.Namespace, name, cancellationToken);
                    if (current is null)
                    {
                        var created = await CreateAsync(value, kind, cancellationToken);
                        records[name] = created is null ? Record.Observed(null) : Record.Wrote(KubeJson.Serialize(value), created, Lagging(name, written));
                        retry = created is null ? RetrySoon : retry;
                        continue;
                    }
                }

                if (OwnerOf(current, kind) is { } owner)
                {
                    clashes.Add(name);
                    records[name] = Record.Observed(cached.GetValueOrDefault(name)?.Metadata.ResourceVersion);
                    await ReportClashAsync(current, kind, owner, wantedBy[name], cancellationToken);
                    continue;
                }

                var config = KubeJson.Serialize(value);
                if (previous.TryGetValue(name, out var last) && last.Desired == config && last.Rv == current.Metadata.ResourceVersion && !NeedsMigration(current))
                {
                    records[name] = last; // as we left it: nothing to write
                    continue;
                }

                var updated = await UpdateAsync(value, current, kind, written, cancellationToken);
                records[name] = updated is null ? Record.Observed(cached.GetValueOrDefault(name)?.Metadata.ResourceVersion) : Record.Wrote(config, updated, Lagging(name, written));
                retry = updated is null ? RetrySoon : retry;
            }

            foreach (var gone in _clashes.Keys.Where(k => k.Kind == kind.Name && !clashes.Contains(k.Name)).ToList())
            {
                _clashes.Remove(gone);
            }

            foreach (var (name, current) in ours.Where(kv => !wanted.Contains(kv.Key)))
            {
                var peer = PeerOf(current);
                if (graceLeft > TimeSpan.Zero && peer is not null && kind.AtStart.TryGetValue(name, out var peerAtStart) && peerAtStart == peer
                    && !_reportedSinceStart.Contains(peer) && _isKnownPeer(peer))
                {
                    records[name] = new Record(null, Lagging(name, []), current.Metadata.ResourceVersion);
                    retry = retry is null || graceLeft < retry ? graceLeft : retry;
                    continue;
                }

                try
                {
                    if (await _client.DeleteAsync<T>(_options.Namespace, name, current.Metadata.Uid, cancellationToken))
                    {
                        LogDeleted(kind.Name, name);
                    }
                }
                catch (KubeApiException ex) when (ex.Code == 409)
                {
                    // Another object took the name since the informer saw this one: it is judged on its own next pass.
                    LogLostRace(kind.Name, name, ex.Message);
                    retry = RetrySoon;
                }

                records[name] = new Record(null, Lagging(name, [current.Metadata.ResourceVersion]), null);
            }

            completed = true;
        }
        finally
        {
            // A pass that failed half way keeps the records of what it did not get to (written again next pass).
            foreach (var (name, record) in completed ? [] : previous.Where(p => !records.ContainsKey(p.Key)))
            {
                records[name] = record with { Desired = null };
            }

            lock (_gate)
            {
                kind.Records = records;
            }
        }

        return retry;
    }

    /// <summary>Applies a new object (no force: it must not exist). Null when someone made it in the meantime.</summary>
    private async Task<T?> CreateAsync<T>(T value, Kind<T> kind, CancellationToken cancellationToken)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        var name = value.Metadata.Name!;
        try
        {
            var created = await _client.ApplyAsync(value, FieldManager, force: false, cancellationToken);
            LogCreated(kind.Name, name);
            return created;
        }
        catch (KubeApiException ex) when (ex.Code == 409)
        {
            LogLostRace(kind.Name, name, ex.Message);
            return null;
        }
    }

    /// <summary>
    /// Makes an object of ours as wanted: sets a Service's ports to ours when it has others (an apply cannot remove
    /// what another manager added, and two unnamed ports are invalid), migrates legacy managedFields, applies with force
    /// and the uid as precondition. Returns the object as written, or null when it changed under us; adds the
    /// resourceVersions of the steps before the last to <paramref name="written"/>.
    /// </summary>
    private async Task<T?> UpdateAsync<T>(T value, T current, Kind<T> kind, List<string?> written, CancellationToken cancellationToken)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        var name = value.Metadata.Name!;
        try
        {
            if (current is V1Service live && value is V1Service wanted && ForeignPorts(live, wanted) is { Count: > 0 } foreign)
            {
                // A JSON patch written as an Update by our field manager (a legacy one): the migration below makes its ports ours alone.
                var ports = new JsonArray(
                    new JsonObject { ["op"] = "test", ["path"] = "/metadata/resourceVersion", ["value"] = live.Metadata.ResourceVersion },
                    new JsonObject { ["op"] = "replace", ["path"] = "/spec/ports", ["value"] = JsonNode.Parse(KubeJson.Serialize(wanted))!["spec"]!["ports"]!.DeepClone() });
                current = (T)(object)await _client.JsonPatchAsync<V1Service>(_options.Namespace, name, ports, FieldManager, cancellationToken);
                written.Add(current.Metadata.ResourceVersion);
                LogRemovedPorts(name, string.Join(", ", foreign.Select(i => $"{live.Spec.Ports[i].Port}/{live.Spec.Ports[i].Protocol ?? "TCP"}")));
            }

            if (NeedsMigration(current))
            {
                var migrated = await _client.JsonPatchAsync<T>(_options.Namespace, name, MigrationPatch(current, KubeResource.For<T>().ApiVersion), FieldManager, cancellationToken);
                written.Add(migrated.Metadata.ResourceVersion);
                LogMigrated(kind.Name, name, string.Join(", ", LegacyOwners(current)));
            }

            value.Metadata.Uid = current.Metadata.Uid;
            T applied;
            try
            {
                applied = await _client.ApplyAsync(value, FieldManager, force: true, cancellationToken);
            }
            finally
            {
                value.Metadata.Uid = null;
            }

            if (applied.Metadata.ResourceVersion != current.Metadata.ResourceVersion || written.Count > 0)
            {
                LogUpdated(kind.Name, name);
            }

            return applied;
        }
        catch (KubeApiException ex) when (ChangedUnderUs(ex))
        {
            // The informer brings the news, the next pass decides.
            LogLostRace(kind.Name, name, ex.Message);
            return null;
        }
    }

    /// <summary>
    /// Whether a write failed because the object is not the one we saw: deleted (404), changed (409, or 422 for a JSON
    /// patch's failed resourceVersion test), or made again under the name (422: the apiserver refuses the changed
    /// metadata.uid of an apply as an immutable field).
    /// </summary>
    private static bool ChangedUnderUs(KubeApiException ex) =>
        ex.Code is 404 or 409 || (ex.Code == 422 && (ex.Message.Contains("metadata.uid", StringComparison.Ordinal)
            || ex.Message.Contains("testing value /metadata/resourceVersion", StringComparison.Ordinal)));

    /// <summary>The indexes of the Service's ports that are not in the wanted ones (by port and protocol).</summary>
    private static List<int> ForeignPorts(V1Service live, V1Service wanted)
    {
        var keys = wanted.Spec.Ports.Select(p => (p.Port, p.Protocol ?? "TCP")).ToHashSet();
        var ports = live.Spec?.Ports ?? [];
        return [.. Enumerable.Range(0, ports.Count).Where(i => !keys.Contains((ports[i].Port, ports[i].Protocol ?? "TCP")))];
    }

    private static IEnumerable<string> LegacyOwners(IKubernetesObject<V1ObjectMeta> value) =>
        (value.Metadata?.ManagedFields ?? []).Where(IsLegacy).Select(e => e.Manager).Distinct(StringComparer.Ordinal);

    private static bool NeedsMigration(IKubernetesObject<V1ObjectMeta> value) => (value.Metadata?.ManagedFields ?? []).Any(IsLegacy);

    private static bool IsLegacy(V1ManagedFieldsEntry entry) =>
        entry.Operation == "Update" && string.IsNullOrEmpty(entry.Subresource) && LegacyManagers.Contains(entry.Manager, StringComparer.Ordinal);

    /// <summary>
    /// The JSON patch that moves the fields of the legacy Update entries (of our apiVersion) into our Apply entry — made
    /// from the newest of them when there is none yet — and drops them, guarded by the resourceVersion the entries are from.
    /// </summary>
    internal static JsonArray MigrationPatch(IKubernetesObject<V1ObjectMeta> value, string apiVersion)
    {
        var entries = new JsonArray((value.Metadata.ManagedFields ?? []).Select(ToJson).ToArray());
        static bool Legacy(JsonNode? e) => (string?)e?["operation"] == "Update" && string.IsNullOrEmpty((string?)e["subresource"])
            && LegacyManagers.Contains((string?)e["manager"] ?? "", StringComparer.Ordinal);
        var apply = entries.FirstOrDefault(e => (string?)e?["manager"] == FieldManager && (string?)e["operation"] == "Apply" && string.IsNullOrEmpty((string?)e["subresource"]));
        if (apply is null)
        {
            // managedFields are sorted newest first within each operation: take the newest legacy entry of our apiVersion.
            var newest = entries.Where(Legacy).FirstOrDefault(e => (string?)e!["apiVersion"] == apiVersion) ?? entries.First(Legacy);
            apply = newest!.DeepClone();
            apply["manager"] = FieldManager;
            apply["operation"] = "Apply";
            entries.Insert(0, apply);
        }

        var fields = apply["fieldsV1"] as JsonObject ?? [];
        foreach (var legacy in entries.Where(e => e != apply && Legacy(e) && (string?)e!["apiVersion"] == (string?)apply["apiVersion"]))
        {
            fields = FieldsUnion(fields, legacy!["fieldsV1"] as JsonObject ?? []);
        }

        apply["fieldsType"] = "FieldsV1";
        apply["fieldsV1"] = fields;
        var kept = new JsonArray(entries.Where(e => e == apply || !Legacy(e)).Select(e => e!.DeepClone()).ToArray());
        return new JsonArray(
            new JsonObject { ["op"] = "test", ["path"] = "/metadata/resourceVersion", ["value"] = value.Metadata.ResourceVersion },
            new JsonObject { ["op"] = "replace", ["path"] = "/metadata/managedFields", ["value"] = kept });
    }

    /// <summary>A managedFields entry as the apiserver writes it (the library's JSON context cannot write its FieldsV1).</summary>
    private static JsonNode ToJson(V1ManagedFieldsEntry entry)
    {
        var json = new JsonObject { ["manager"] = entry.Manager, ["operation"] = entry.Operation, ["apiVersion"] = entry.ApiVersion };
        if (entry.Time is { } time)
        {
            json["time"] = time.ToUniversalTime().ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture);
        }

        json["fieldsType"] = entry.FieldsType ?? "FieldsV1";
        json["fieldsV1"] = entry.FieldsV1 switch
        {
            System.Text.Json.JsonElement element => JsonNode.Parse(element.GetRawText()),
            JsonNode node => node.DeepClone(),
            null => new JsonObject(),
            var other => JsonNode.Parse(other.ToString() ?? "{}"),
        };
        if (!string.IsNullOrEmpty(entry.Subresource))
        {
            json["subresource"] = entry.Subresource;
        }

        return json;
    }

    /// <summary>
    /// The union of two FieldsV1 sets. A key is a path element; its value <c>{}</c> is a member without children, an
    /// object with <c>".": {}</c> a member with children, any other object a path leading to members.
    /// </summary>
    internal static JsonObject FieldsUnion(JsonObject a, JsonObject b)
    {
        var result = new JsonObject();
        foreach (var key in a.Concat(b).Select(p => p.Key).Where(k => k != ".").Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToList())
        {
            var (x, y) = (a[key] as JsonObject, b[key] as JsonObject);
            if (x is null || y is null)
            {
                result[key] = (x ?? y ?? []).DeepClone();
                continue;
            }

            var children = FieldsUnion(x, y);
            var member = x.Count == 0 || y.Count == 0 || x.ContainsKey(".") || y.ContainsKey(".");
            if (member && children.Count > 0)
            {
                var node = new JsonObject { ["."] = new JsonObject() };
                foreach (var (k, v) in children.ToList())
                {
                    children.Remove(k);
                    node[k] = v;
                }

                children = node;
            }

            result[key] = children;
        }

        return result;
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
            return instance == _options.InstanceLabel ? null : $"it is labelled {KubeNames.Instance}={instance}";
        }

        return MapEquals(kind.Selector(value), _options.PodLabels) ? null : $"it has no {KubeNames.Instance} label and selects other pods than ours";
    }

    /// <summary>A Warning Event on the object and a log line, once per clash (until it goes away or changes).</summary>
    private async Task ReportClashAsync<T>(T current, Kind<T> kind, string owner, (string Peer, string App) wantedBy, CancellationToken cancellationToken)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        var name = current.Metadata.Name!;
        var clash = $"{current.Metadata.Uid}|{wantedBy.Peer}|{wantedBy.App}";
        if (_clashes.TryGetValue((kind.Name, name), out var reported) && reported == clash)
        {
            return;
        }

        _clashes[(kind.Name, name)] = clash;
        LogNotOurs(kind.Name, _options.Namespace, name, owner, LogText.Of(wantedBy.App), LogText.Of(wantedBy.Peer));
        if (_events is not null)
        {
            await _events.RecordAsync(
                current,
                EventRecorder.Warning,
                NameClashReason,
                $"{kind.Name} {name} is left alone: it was not made by wormhole '{_options.Instance}' ({owner}). Remote app '{wantedBy.App}' of peer " +
                $"'{wantedBy.Peer}' maps to this name and gets no {kind.Name} here; rename the app on that peer (annotation {KubeNames.LabelPrefix}name) or this object.",
                cancellationToken);
        }
    }

    /// <summary>
    /// The informer's objects in our namespace by name (<c>Cached</c>), and the same as of our own writes (<c>View</c>):
    /// where the informer still shows an object as it was before a write of ours (the echo is on its way), the object
    /// as we wrote it, or none when we deleted it.
    /// </summary>
    private (Dictionary<string, T> Cached, Dictionary<string, T> View) View<T>(Kind<T> kind)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        var cached = kind.Informer.Snapshot().Where(o => o.Metadata?.NamespaceProperty == _options.Namespace && o.Metadata.Name is not null)
            .ToDictionary(o => o.Metadata.Name!, StringComparer.Ordinal);
        var view = new Dictionary<string, T>(cached, StringComparer.Ordinal);
        lock (_gate)
        {
            foreach (var (name, record) in kind.Records.Where(r => !r.Value.Settled))
            {
                var state = cached.TryGetValue(name, out var seen) ? seen.Metadata.ResourceVersion : null;
                if (state == record.Rv || !record.Before.Contains(state))
                {
                    continue;
                }

                if (record.Object is T written)
                {
                    view[name] = written;
                }
                else if (record.Rv is null)
                {
                    view.Remove(name);
                }
            }
        }

        return (cached, view);
    }

    /// <summary>The first lists of both informers, or a failure saying why they are not there (the loop retries).</summary>
    private async Task WaitForInformersAsync(CancellationToken cancellationToken)
    {
        var ready = Task.WhenAll(_services.Informer.ReadyAsync(cancellationToken), _policies.Informer.ReadyAsync(cancellationToken));
        try
        {
            await ready.WaitAsync(ListWait, _time, cancellationToken);
        }
        catch (TimeoutException)
        {
            var problem = _services.Informer.LastProblem ?? _policies.Informer.LastProblem ?? "no answer yet";
            throw new KubeApiException(0, "NotListed", $"the generated objects in namespace {_options.Namespace} are not listed yet: {problem}", $"LIST /{KubeResource.Services.Path(_options.Namespace)}");
        }
    }

    /// <summary>On every informer change (the informer's loop): requests a pass when something other than our own writes moved.</summary>
    private void OnInformerChanged()
    {
        lock (_gate)
        {
            if (_passing || _dirty)
            {
                return; // a running pass looks at the informers when it ends; a pending one will see everything anyway
            }

            if (Drifted())
            {
                _dirty = true;
                _signal?.Request();
            }
        }
    }

    /// <summary>Under <see cref="_gate"/>: whether an informer shows an object of ours (or one whose name we want) other than as the last pass left it.</summary>
    private bool Drifted() => Drifted(_services) | Drifted(_policies);

    private bool Drifted<T>(Kind<T> kind)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        if (kind.AtStart is null)
        {
            return kind.Informer.ReadyAsync(CancellationToken.None).IsCompletedSuccessfully; // no pass yet: anything listed is news
        }

        var lists = kind.Informer.ListCount;
        var relisted = lists != kind.Lists;
        kind.Lists = lists;
        var seen = kind.Informer.Snapshot().Where(o => o.Metadata?.NamespaceProperty == _options.Namespace && o.Metadata.Name is not null)
            .ToDictionary(o => o.Metadata.Name!, StringComparer.Ordinal);
        var drifted = false;
        foreach (var (name, record) in kind.Records)
        {
            if (relisted)
            {
                record.Settled = true; // a relist may have skipped our echo: only the state we wrote is as expected now
            }

            var state = seen.TryGetValue(name, out var live) ? live.Metadata.ResourceVersion : null;
            if (state == record.Rv)
            {
                record.Settled = true;
            }
            else if (record.Settled || !record.Before.Contains(state))
            {
                LogDrift(kind.Name, name, record.Rv ?? "absent", state ?? "absent");
                drifted = true;
            }
        }

        foreach (var (name, live) in seen.Where(kv => !kind.Records.ContainsKey(kv.Key) && OwnerOf(kv.Value, kind) is null))
        {
            LogDrift(kind.Name, name, "absent", live.Metadata.ResourceVersion ?? "");
            drifted = true;
        }

        return drifted;
    }

    /// <summary>The objects of a plan as one string: equal strings, equal objects.</summary>
    private static string Key(GeneratedObjects objects) =>
        string.Join('\n', objects.Services.Select(s => KubeJson.Serialize(s)).Concat(objects.NetworkPolicies.Select(p => KubeJson.Serialize(p))));

    private static bool MapEquals(IEnumerable<KeyValuePair<string, string>>? a, IEnumerable<KeyValuePair<string, string>>? b)
    {
        var left = a?.ToList() ?? [];
        var right = b?.ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal) ?? [];
        return left.Count == right.Count && left.All(kv => right.TryGetValue(kv.Key, out var v) && v == kv.Value);
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

    [LoggerMessage(EventId = 1605, Level = LogLevel.Information, Message = "{Kind} {Name}: the fields written by {Managers} (an earlier version) are now owned by our server-side apply")]
    private partial void LogMigrated(string kind, string name, string managers);

    [LoggerMessage(EventId = 1606, Level = LogLevel.Information, Message = "Service {Name}: replaced ports the plan does not have ({Ports})")]
    private partial void LogRemovedPorts(string name, string ports);

    [LoggerMessage(EventId = 1607, Level = LogLevel.Debug, Message = "{Kind} {Name} changed outside our writes (resourceVersion {Expected} expected, {Seen} seen): repairing")]
    private partial void LogDrift(string kind, string name, string expected, string seen);

    [LoggerMessage(EventId = 1608, Level = LogLevel.Debug, Message = "{Kind} {Name} changed while we wrote it; deciding again shortly: {Reason}")]
    private partial void LogLostRace(string kind, string name, string reason);

    /// <summary>
    /// One object as the last pass left it: <see cref="Rv"/> its resourceVersion then (null: absent), <see cref="Before"/>
    /// the states the informer may show until the echo of our last write arrives (what it showed, our earlier writes),
    /// <see cref="Desired"/> what we applied (null when we did not: deleted, deferred, not ours).
    /// </summary>
    private sealed record Record(string? Desired, IReadOnlyList<string?> Before, string? Rv)
    {
        /// <summary>The informer has shown <see cref="Rv"/> (or can no longer be trusted to show it): any other state is drift.</summary>
        public bool Settled { get; set; } = Before.All(b => b == Rv);

        /// <summary>The object as we wrote it (null when we did not write it).</summary>
        public IKubernetesObject<V1ObjectMeta>? Object { get; init; }

        public static Record Observed(string? rv) => new(null, [], rv);

        public static Record Wrote(string desired, IKubernetesObject<V1ObjectMeta> written, IReadOnlyList<string?> before) =>
            new(desired, before, written.Metadata.ResourceVersion) { Object = written };
    }

    /// <summary>What the sink keeps per kind: its informer, its pod selector, its view at start and its records.</summary>
    private sealed class Kind<T>(string name, ResourceInformer<T> informer, Func<T, IDictionary<string, string>?> selector)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        public string Name { get; } = name;

        public ResourceInformer<T> Informer { get; } = informer;

        public Func<T, IDictionary<string, string>?> Selector { get; } = selector;

        /// <summary>Our objects in the first pass's view (name → exposed-peer label), for the grace; null before it.</summary>
        public Dictionary<string, string?>? AtStart { get; set; }

        public Dictionary<string, Record> Records { get; set; } = new(StringComparer.Ordinal);

        /// <summary>The informer's <see cref="ResourceInformer{T}.ListCount"/> when its records were last compared.</summary>
        public long Lists { get; set; }
    }
}
