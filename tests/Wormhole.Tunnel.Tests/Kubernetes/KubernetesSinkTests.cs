using System.Net;
using System.Text.Json.Nodes;
using k8s;
using k8s.Models;
using Microsoft.Extensions.Logging.Abstractions;
using Wormhole.Tunnel.Kubernetes;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Runtime;
using Wormhole.Tunnel.Sinks;
using Emulator = Wormhole.Tunnel.KubeEmulator.KubeEmulator;
using EmulatorOptions = Wormhole.Tunnel.KubeEmulator.KubeEmulatorOptions;

namespace Wormhole.Tunnel.Tests.Kubernetes;

/// <summary>
/// The Kubernetes sink against the apiserver emulator (in-process, real HTTP, the apiserver's defaulting, validation
/// and resourceVersions): what it creates, patches and deletes, and above all what it leaves alone.
/// </summary>
public sealed class KubernetesSinkTests : IAsyncLifetime
{
    private const string Ns = "wormhole";
    private static readonly Dictionary<string, string> HubPods = new() { ["application"] = "wormhole-server" };
    private static readonly string[] Dev1Names = ["server-nginx", "server-shared"];

    private readonly ManualTimeProvider _time = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _informers = [];
    private Emulator _api = null!;
    private KubeTransport _kubernetes = null!;
    private KubeApi _client = null!;

    public async Task InitializeAsync()
    {
        _api = await Emulator.StartAsync(new EmulatorOptions { Tls = false });
        _api.Apply(new JsonObject { ["apiVersion"] = "v1", ["kind"] = "Namespace", ["metadata"] = new JsonObject { ["name"] = Ns } });
        _kubernetes = KubeTransport.Create(new KubernetesClientConfiguration { Host = _api.Url, AccessToken = _api.Token });
        _client = new KubeApi(_kubernetes, TimeProvider.System, NullLogger.Instance);
    }

    public async Task DisposeAsync()
    {
        await _stop.CancelAsync();
        await Task.WhenAll(_informers).WaitAsync(TimeSpan.FromSeconds(10));
        _stop.Dispose();
        _kubernetes.Dispose();
        await _api.DisposeAsync();
    }

    [Fact]
    public async Task A_name_taken_by_an_object_that_is_not_ours_is_left_untouched_and_reported_once()
    {
        // What the chart installs for release "server": its public Service and (networkPolicies.enabled) its own policy.
        var chartLabels = """{"app.kubernetes.io/instance":"server","app.kubernetes.io/managed-by":"Helm","app.kubernetes.io/part-of":"wormhole"}""";
        _api.Apply($$$"""
            {"apiVersion":"v1","kind":"Service","metadata":{"name":"wormhole-server","namespace":"{{{Ns}}}","labels":{{{chartLabels}}}},
             "spec":{"type":"LoadBalancer","selector":{"application":"wormhole-server"},
                     "ports":[{"name":"peering","port":8080,"targetPort":"peering","protocol":"TCP"},{"name":"data","port":51820,"targetPort":"wireguard","protocol":"UDP"}]}}
            """);
        _api.Apply($$$"""
            {"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"wormhole-server","namespace":"{{{Ns}}}","labels":{{{chartLabels}}}},
             "spec":{"podSelector":{"matchLabels":{"application":"wormhole-server"}},"policyTypes":["Ingress"],
                     "ingress":[{"ports":[{"protocol":"TCP","port":8080},{"protocol":"UDP","port":51820}]}]}}
            """);
        var service = Snapshot("services", "wormhole-server");
        var policy = Snapshot("networkpolicies", "wormhole-server");
        var log = new RecordingLogger();
        var sink = NewSink("server", HubPods, log);

        // A PSK holder paired as "wormhole" offers an app "server": its object name is wormhole-server.
        var plan = PlanOf(("wormhole", "server", 25001), ("client", "nginx-nginx", 25002));
        for (var pass = 0; pass < 3; pass++)
        {
            (await sink.ApplyAsync(plan, CancellationToken.None)).RetryAfter.Should().BeNull("a clash is not something a retry can fix");
        }

        Snapshot("services", "wormhole-server").Should().Be(service, "the chart's Service keeps its spec, labels and resourceVersion");
        Snapshot("networkpolicies", "wormhole-server").Should().Be(policy);
        _api.Requests.Should().NotContain(r => r.Contains("/wormhole-server", StringComparison.Ordinal) && !r.StartsWith("GET ", StringComparison.Ordinal));

        var warnings = _api.List("events", Ns).Where(e => (string?)e["reason"] == KubernetesSink.NameClashReason).ToList();
        warnings.Select(e => ((string)e["involvedObject"]!["kind"]!, (string)e["involvedObject"]!["name"]!, (string)e["type"]!, (int)e["count"]!))
            .Should().BeEquivalentTo([("Service", "wormhole-server", "Warning", 1), ("NetworkPolicy", "wormhole-server", "Warning", 1)]);
        warnings.Should().OnlyContain(e => ((string)e["message"]!).Contains("app 'server' of peer 'wormhole'", StringComparison.Ordinal));
        log.Lines.Where(l => l.EventId == 1604).Should().HaveCount(2, "one line per clashing object, not one per pass")
            .And.OnlyContain(l => l.Message.Contains(" wormhole/wormhole-server is not ours", StringComparison.Ordinal) && l.Message.Contains("app server of peer wormhole", StringComparison.Ordinal));

        _api.Get("services", Ns, "client-nginx-nginx").Should().NotBeNull("the other remote app is exposed as usual");
        _api.Get("networkpolicies", Ns, "client-nginx-nginx").Should().NotBeNull();

        // Once the clash has gone (the app withdrawn) and comes back, it is reported again.
        await sink.ApplyAsync(PlanOf(("client", "nginx-nginx", 25002)), CancellationToken.None);
        await sink.ApplyAsync(plan, CancellationToken.None);
        log.Lines.Where(l => l.EventId == 1604).Should().HaveCount(4);
        Snapshot("services", "wormhole-server").Should().Be(service);
    }

    [Fact]
    public async Task Two_instances_in_one_namespace_neither_patch_nor_delete_each_others_objects()
    {
        var dev1 = NewSink("dev1", new Dictionary<string, string> { ["application"] = "wormhole-dev1" }, new RecordingLogger());
        var dev2Log = new RecordingLogger();
        var dev2 = NewSink("dev2", new Dictionary<string, string> { ["application"] = "wormhole-dev2" }, dev2Log);

        await dev1.ApplyAsync(PlanOf(("server", "nginx", 25001), ("server", "shared", 25002)), CancellationToken.None);
        await dev2.ApplyAsync(PlanOf(("server", "web", 25001), ("server", "shared", 25003)), CancellationToken.None);
        var dev1Objects = Snapshots("server-nginx", "server-shared");

        // dev2 offers nothing any more and collects its garbage; dev1 passes again with its plan.
        await dev2.ApplyAsync(Plan.Empty, CancellationToken.None);
        await dev1.ApplyAsync(PlanOf(("server", "nginx", 25001), ("server", "shared", 25002)), CancellationToken.None);

        Snapshots("server-nginx", "server-shared")
            .Should().Equal(dev1Objects, "dev1's objects are untouched by dev2 (same resourceVersions)");
        _api.Get("services", Ns, "server-shared")!["spec"]!["selector"]!["application"]!.GetValue<string>().Should().Be("wormhole-dev1");
        _api.Get("services", Ns, "server-web").Should().BeNull("dev2 deleted its own object");
        _api.Get("networkpolicies", Ns, "server-web").Should().BeNull();
        dev2Log.Lines.Should().Contain(l => l.EventId == 1604 && l.Message.Contains("server-shared", StringComparison.Ordinal) && l.Message.Contains("instance=dev1", StringComparison.Ordinal));
        _api.List("services", Ns, $"{KubeNames.Instance}=dev1").Select(s => (string)s["metadata"]!["name"]!).Should().BeEquivalentTo(Dev1Names);
    }

    [Fact]
    public async Task Objects_made_before_the_instance_label_are_adopted_or_collected_only_when_they_select_our_pods()
    {
        // As glothriel/wormhole and earlier versions labelled them: exposed-by, exposed-app, exposed-peer; selector = pod labels.
        Legacy("client-web", "client", "web", HubPods);
        Legacy("client-old", "client", "old", HubPods);
        Legacy("client-db", "client", "db", new Dictionary<string, string> { ["application"] = "wormhole-other" });
        Legacy("other-thing", "other", "thing", new Dictionary<string, string> { ["application"] = "wormhole-other" });
        var webUid = (string)_api.Get("services", Ns, "client-web")!["metadata"]!["uid"]!;
        var foreign = Snapshots("client-db", "other-thing");
        var log = new RecordingLogger();

        await NewSink("server", HubPods, log).ApplyAsync(PlanOf(("client", "web", 25001), ("client", "db", 25002)), CancellationToken.None);

        var web = _api.Get("services", Ns, "client-web")!;
        ((string)web["metadata"]!["uid"]!).Should().Be(webUid, "adopted in place: same object, same ClusterIP");
        web["metadata"]!["labels"]![KubeNames.Instance]!.GetValue<string>().Should().Be("server");
        web["spec"]!["ports"]![0]!["targetPort"]!.GetValue<int>().Should().Be(25001);
        _api.Get("networkpolicies", Ns, "client-web")!["metadata"]!["labels"]![KubeNames.Instance]!.GetValue<string>().Should().Be("server");
        _api.Get("services", Ns, "client-old").Should().BeNull("it points at our pods and is not wanted: collected");
        _api.Get("networkpolicies", Ns, "client-old").Should().BeNull();
        Snapshots("client-db", "other-thing")
            .Should().Equal(foreign, "objects selecting other pods are someone else's, wanted or not");
        log.Lines.Should().Contain(l => l.EventId == 1604 && l.Message.Contains("client-db", StringComparison.Ordinal));
    }

    [Fact]
    public async Task After_a_restart_objects_from_before_it_wait_for_their_peers_first_sync_and_no_longer()
    {
        // The previous run made objects for four peers.
        await NewSink("server", HubPods, new RecordingLogger()).ApplyAsync(
            PlanOf(("client", "web", 25001), ("client", "old", 25002), ("silent", "app", 25003), ("unpaired", "app", 25004)),
            CancellationToken.None);
        var webUid = (string)_api.Get("services", Ns, "client-web")!["metadata"]!["uid"]!;

        // Restarted: nobody has synced yet, so the plan wants nothing.
        var sink = NewSink("server", HubPods, new RecordingLogger(), grace: TimeSpan.FromSeconds(15), isKnownPeer: p => p != "unpaired");
        (await sink.ApplyAsync(Plan.Empty, CancellationToken.None)).RetryAfter.Should().Be(TimeSpan.FromSeconds(15), "a pass is due when the grace ends");
        Names().Should().BeEquivalentTo(["client-web", "client-old", "silent-app"], "objects of paired peers wait; those of a peer that is not paired go at once");

        // client's first sync after the start: its app set is authoritative at once, well within the grace.
        _time.Advance(TimeSpan.FromSeconds(1));
        await sink.ApplyAsync(PlanOf(("client", "web", 25001)), CancellationToken.None);
        Names().Should().BeEquivalentTo(["client-web", "silent-app"], "client no longer offers 'old'");
        ((string)_api.Get("services", Ns, "client-web")!["metadata"]!["uid"]!).Should().Be(webUid, "kept in place, same ClusterIP");

        // Withdrawn later within the grace: gone at once too.
        await sink.ApplyAsync(Plan.Empty with { ReportedPeers = ["client"] }, CancellationToken.None);
        Names().Should().BeEquivalentTo(["silent-app"]);

        // A paired peer that stays silent loses its objects when the grace ends.
        _time.Advance(TimeSpan.FromSeconds(14));
        (await sink.ApplyAsync(Plan.Empty with { ReportedPeers = ["client"] }, CancellationToken.None)).RetryAfter.Should().BeNull();
        Names().Should().BeEmpty();
        _api.List("networkpolicies", Ns).Should().BeEmpty();
    }

    [Fact]
    public async Task Objects_made_after_the_start_are_deleted_at_once_within_the_grace()
    {
        var sink = NewSink("server", HubPods, new RecordingLogger(), grace: TimeSpan.FromSeconds(15));
        await sink.ApplyAsync(PlanOf(("client", "nginx-nginx", 25001)), CancellationToken.None);
        Names().Should().Equal("client-nginx-nginx");

        _time.Advance(TimeSpan.FromSeconds(2));
        (await sink.ApplyAsync(Plan.Empty with { ReportedPeers = ["client"] }, CancellationToken.None)).RetryAfter.Should().BeNull("nothing waits");
        Names().Should().BeEmpty("exposed=no in the first 15 s after a start takes effect at once");
        _api.List("networkpolicies", Ns).Should().BeEmpty();
    }

    [Fact]
    public async Task Objects_are_written_by_server_side_apply_updated_in_place_and_not_written_again_when_unchanged()
    {
        var sink = NewSink("server", HubPods, new RecordingLogger());

        await sink.ApplyAsync(PlanOf(("client", "web", 25001)), CancellationToken.None);

        var created = _api.Get("services", Ns, "client-web")!;
        Managers(created).Should().Equal(["wormhole-tunnel/Apply"], "the object is ours alone, by server-side apply");
        Managers(_api.Get("networkpolicies", Ns, "client-web")!).Should().Equal(["wormhole-tunnel/Apply"]);
        Writes().Should().Equal(
            "PATCH /api/v1/namespaces/wormhole/services/client-web?fieldManager=wormhole-tunnel&force=false",
            "PATCH /apis/networking.k8s.io/v1/namespaces/wormhole/networkpolicies/client-web?fieldManager=wormhole-tunnel&force=false");

        var before = _api.Requests.Count;
        await sink.ApplyAsync(PlanOf(("client", "web", 25002)), CancellationToken.None);

        var updated = _api.Get("services", Ns, "client-web")!;
        ((string)updated["metadata"]!["uid"]!).Should().Be((string)created["metadata"]!["uid"]!, "updated in place");
        ((string)updated["spec"]!["clusterIP"]!).Should().Be((string)created["spec"]!["clusterIP"]!);
        updated["spec"]!["ports"]!.AsArray().Select(p => (int)p!["targetPort"]!).Should().Equal(25002);
        _api.Requests.Skip(before).Should().OnlyContain(r => r.StartsWith("PATCH ", StringComparison.Ordinal) && r.Contains("force=true", StringComparison.Ordinal))
            .And.HaveCount(2, "one forced apply per object, nothing listed");

        before = _api.Requests.Count;
        await sink.ApplyAsync(PlanOf(("client", "web", 25002)), CancellationToken.None);
        _api.Requests.Skip(before).Should().BeEmpty("the informer shows both objects as the last pass left them");
        sink.IsUpToDate(PlanOf(("client", "web", 25002))).Should().BeTrue();
        sink.IsUpToDate(PlanOf(("client", "web", 25003))).Should().BeFalse("the plan wants another targetPort");
    }

    [Fact]
    public async Task Each_change_to_our_objects_requests_one_pass_which_repairs_it_and_our_own_writes_request_none()
    {
        var signal = new ReconcileSignal();
        var sink = NewSink("server", HubPods, new RecordingLogger(), signal: signal);
        var plan = PlanOf(("client", "web", 25001));
        await sink.ApplyAsync(plan, CancellationToken.None);
        var passes = 0;
        var finished = 0;
        using var loop = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
        var driver = Task.Run(async () =>
        {
            // What the reconcile loop does with a sink: on every request, a pass unless the sink is up to date.
            while (!loop.IsCancellationRequested)
            {
                await signal.WaitAsync(loop.Token);
                if (!sink.IsUpToDate(plan))
                {
                    Interlocked.Increment(ref passes);
                    await sink.ApplyAsync(plan, loop.Token);
                    Interlocked.Increment(ref finished);
                }
            }
        });
        using var intruder = KubeTransport.Create(new KubernetesClientConfiguration { Host = _api.Url, AccessToken = _api.Token, UserAgent = "kubectl-edit" });
        var edits = new KubeApi(intruder, TimeProvider.System, NullLogger.Instance);
        var wanted = Snapshot("services", "client-web");
        string Uid() => (string?)_api.Get("services", Ns, "client-web")?["metadata"]!["uid"] ?? "";
        bool Restored() => _api.Get("services", Ns, "client-web") is { } svc && JsonNode.DeepEquals(Wanted(svc), Wanted(JsonNode.Parse(wanted)!));
        var uid = Uid();

        // Another side's object in the namespace is not ours: its changes request nothing (the next step's pass count shows it).
        await RepairedAsync(
            () =>
            {
                _api.Apply(ForeignService("server-other", "dev9"));
                _api.Delete("services", Ns, "client-web");
                return Task.CompletedTask;
            },
            () => Uid() is { Length: > 0 } now && now != uid,
            "the deleted Service is made again");
        await RepairedAsync(
            () => edits.JsonPatchAsync<V1Service>(Ns, "client-web", [new JsonObject { ["op"] = "replace", ["path"] = "/spec/ports/0/port", ["value"] = 81 }], "kubectl-edit", CancellationToken.None),
            Restored,
            "the port is 80 again, and port 81 is gone");
        await RepairedAsync(
            () => edits.MergePatchAsync<V1Service>(Ns, "client-web", JsonNode.Parse("""{"spec":{"selector":{"application":"someone-else"},"type":"NodePort"}}""")!, CancellationToken.None),
            Restored,
            "selector and type are ours again");
        await RepairedAsync(
            () => edits.MergePatchAsync<V1Service>(Ns, "client-web", new JsonObject { ["metadata"] = new JsonObject { ["labels"] = new JsonObject { [KubeNames.ExposedApp] = "renamed" } } }, CancellationToken.None),
            Restored,
            "the label is ours again");
        await RepairedAsync(
            () => Task.FromResult(_api.Delete("networkpolicies", Ns, "client-web")),
            () => _api.Get("networkpolicies", Ns, "client-web") is not null,
            "the deleted NetworkPolicy is made again");

        await loop.CancelAsync();
        await driver.ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
        passes.Should().Be(5, "one pass per change, none for the echoes of our own writes or another side's object");
        _api.Get("services", Ns, "server-other")!["metadata"]!["labels"]![KubeNames.Instance]!.GetValue<string>().Should().Be("dev9");

        async Task RepairedAsync(Func<Task> change, Func<bool> repaired, string what)
        {
            var before = Volatile.Read(ref passes);
            await change();
            await Eventually.HoldsAsync(() => repaired() && Volatile.Read(ref finished) == Volatile.Read(ref passes), what + ", and the pass is over");
            Volatile.Read(ref passes).Should().Be(before + 1, "one pass repairs it: {0}", what);
        }
    }

    [Fact]
    public async Task An_object_written_by_an_earlier_version_is_migrated_to_our_apply_and_loses_the_fields_we_no_longer_set()
    {
        // The way this project wrote objects before server-side apply: POST, then merge patches; its User-Agent
        // "wormhole-tunnel" names the Update entry. Written then: a label this version no longer sets.
        using var old = KubeTransport.Create(new KubernetesClientConfiguration { Host = _api.Url, AccessToken = _api.Token, UserAgent = "wormhole-tunnel" });
        var oldApi = new KubeApi(old, TimeProvider.System, NullLogger.Instance);
        var service = KubernetesJson.Deserialize<V1Service>(OldStyle("client-web", "Service", "v1").ToJsonString());
        service.Spec = new V1ServiceSpec { Type = "ClusterIP", Selector = new Dictionary<string, string>(HubPods), Ports = [new V1ServicePort { Protocol = "TCP", Port = 80, TargetPort = 25009 }] };
        var uid = (await oldApi.CreateAsync(service, CancellationToken.None)).Metadata.Uid;
        await oldApi.MergePatchAsync<V1Service>(Ns, "client-web", JsonNode.Parse("""{"spec":{"ports":[{"protocol":"TCP","port":80,"targetPort":25010}]}}""")!, CancellationToken.None);
        // glothriel/wormhole's objects: client-go create and update from /bin/app, named "app".
        var policy = OldStyle("client-web", "NetworkPolicy", "networking.k8s.io/v1");
        policy["spec"] = JsonNode.Parse("""{"podSelector":{"matchLabels":{"application":"wormhole-server"}},"ingress":[{"ports":[{"port":25009}]}]}""");
        _api.Apply(policy, "app");
        Managers(_api.Get("services", Ns, "client-web")!).Should().Equal(["wormhole-tunnel/Update"]);

        var log = new RecordingLogger();
        await NewSink("server", HubPods, log).ApplyAsync(PlanOf(("client", "web", 25001)), CancellationToken.None);

        foreach (var resource in new[] { "services", "networkpolicies" })
        {
            var obj = _api.Get(resource, Ns, "client-web")!;
            Managers(obj).Should().Equal(["wormhole-tunnel/Apply"], "the earlier version's fields moved to our apply ({0})", resource);
            obj["metadata"]!["labels"]!.AsObject().Select(l => l.Key).Should().NotContain(Stale, "only the earlier version set it ({0})", resource)
                .And.Contain(KubeNames.Instance);
        }

        var svc = _api.Get("services", Ns, "client-web")!;
        ((string)svc["metadata"]!["uid"]!).Should().Be(uid, "adopted in place");
        svc["spec"]!["ports"]!.AsArray().Select(p => (int)p!["targetPort"]!).Should().Equal(25001);
        log.Lines.Where(l => l.EventId == 1605).Select(l => l.Message).Should().BeEquivalentTo(
            [
                "Service client-web: the fields written by wormhole-tunnel (an earlier version) are now owned by our server-side apply",
                "NetworkPolicy client-web: the fields written by app (an earlier version) are now owned by our server-side apply",
            ]);
    }

    [Fact]
    public async Task A_delete_or_an_apply_never_reaches_an_object_made_again_under_the_name_since_the_informer_saw_ours()
    {
        // The informer stops, so its view stays at our first objects while the names get new objects.
        using var watching = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
        var log = new RecordingLogger();
        var sink = NewSink("server", HubPods, log, watching: watching.Token);
        await sink.ApplyAsync(PlanOf(("client", "web", 25001), ("client", "db", 25002)), CancellationToken.None);
        await watching.CancelAsync();
        _api.Delete("services", Ns, "client-web");
        var webAgain = _api.Apply(ForeignService("client-web", "server")); // ours by its labels, but another object
        _api.Delete("services", Ns, "client-db");
        var dbAgain = _api.Apply(new JsonObject
        {
            ["apiVersion"] = "v1", ["kind"] = "Service",
            ["metadata"] = new JsonObject { ["name"] = "client-db", ["namespace"] = Ns },
            ["spec"] = new JsonObject { ["ports"] = new JsonArray(new JsonObject { ["port"] = 5432 }) },
        });

        // web is no longer wanted (a delete of the old uid); db wants another targetPort (an apply with the old uid).
        var result = await sink.ApplyAsync(PlanOf(("client", "db", 25003)), CancellationToken.None);

        result.RetryAfter.Should().Be(TimeSpan.FromSeconds(1), "the informer will tell what the names hold now; a pass is due soon anyway");
        _api.Get("services", Ns, "client-web")!.ToJsonString().Should().Be(webAgain.ToJsonString(), "the uid precondition kept the DELETE off it");
        _api.Get("services", Ns, "client-db")!.ToJsonString().Should().Be(dbAgain.ToJsonString(), "the uid in the applied object kept the apply off it");
        _api.Requests.Should().Contain(r => r.StartsWith("DELETE /api/v1/namespaces/wormhole/services/client-web", StringComparison.Ordinal));
        log.Lines.Where(l => l.EventId == 1608).Should().HaveCount(2);
    }

    /// <summary>A sink with its informers running (until the test ends, or <paramref name="watching"/> is cancelled).</summary>
    private KubernetesSink NewSink(
        string instance,
        IReadOnlyDictionary<string, string> podLabels,
        RecordingLogger log,
        TimeSpan? grace = null,
        Func<string, bool>? isKnownPeer = null,
        ReconcileSignal? signal = null,
        CancellationToken? watching = null)
    {
        var sink = new KubernetesSink(
            _client,
            new KubernetesSinkOptions(Ns, podLabels, NetworkPolicies: true, instance),
            _time,
            grace ?? TimeSpan.Zero,
            isKnownPeer ?? (_ => true),
            new EventRecorder(_client, "wormhole-" + instance, _time, log),
            log,
            signal);
        _informers.Add(sink.RunAsync(watching ?? _stop.Token));
        return sink;
    }

    /// <summary>A plan as the planner builds it: the remote apps, and their peers as the peers that reported.</summary>
    private static Plan PlanOf(params (string Peer, string App, int Port)[] apps) => Plan.Empty with
    {
        RemoteListeners = [.. apps.Select(a => new RemoteListener(a.Peer, a.App, a.Port, IPAddress.Parse("10.188.0.2"), 20000, 80, ""))],
        ReportedPeers = [.. apps.Select(a => a.Peer).Distinct().Order(StringComparer.Ordinal)],
    };

    /// <summary>The names of the Services in our namespace.</summary>
    private List<string> Names() => [.. _api.List("services", Ns).Select(s => (string)s["metadata"]!["name"]!)];

    /// <summary>The object as stored (resourceVersion included), for before/after comparisons.</summary>
    private string Snapshot(string resource, string name) =>
        _api.Get(resource, Ns, name)?.ToJsonString() ?? throw new InvalidOperationException($"{resource}/{name} does not exist");

    /// <summary>The Service and the NetworkPolicy of each name, as stored.</summary>
    private List<string> Snapshots(params string[] names) => [.. names.SelectMany(n => new[] { Snapshot("services", n), Snapshot("networkpolicies", n) })];

    private const string Stale = KubeNames.LabelPrefix + "stale";

    /// <summary>Our object as an earlier version labelled it: the labels of today, the instance label, and one more.</summary>
    private static JsonObject OldStyle(string name, string kind, string apiVersion) => new()
    {
        ["apiVersion"] = apiVersion,
        ["kind"] = kind,
        ["metadata"] = new JsonObject
        {
            ["name"] = name, ["namespace"] = Ns,
            ["labels"] = new JsonObject
            {
                [KubeNames.ExposedBy] = KubeNames.ExposedByValue, [KubeNames.ExposedApp] = "web", [KubeNames.ExposedPeer] = "client",
                [KubeNames.Instance] = "server", [Stale] = "yes",
            },
        },
    };

    /// <summary>A generated-looking Service of another side (instance <paramref name="instance"/>).</summary>
    private static JsonObject ForeignService(string name, string instance) => new()
    {
        ["apiVersion"] = "v1",
        ["kind"] = "Service",
        ["metadata"] = new JsonObject
        {
            ["name"] = name, ["namespace"] = Ns,
            ["labels"] = new JsonObject { [KubeNames.ExposedBy] = KubeNames.ExposedByValue, [KubeNames.Instance] = instance },
        },
        ["spec"] = new JsonObject
        {
            ["selector"] = new JsonObject { ["application"] = "wormhole-" + instance },
            ["ports"] = new JsonArray(new JsonObject { ["port"] = 80, ["targetPort"] = 25099 }),
        },
    };

    /// <summary>managedFields as "manager/operation", in order.</summary>
    private static List<string> Managers(JsonNode obj) =>
        [.. (obj["metadata"]!["managedFields"]?.AsArray() ?? []).Select(e => $"{(string)e!["manager"]!}/{(string)e["operation"]!}")];

    /// <summary>The writes so far (everything but GET and watch), as "METHOD /path?query".</summary>
    private List<string> Writes() => [.. _api.Requests.Where(r => !r.StartsWith("GET ", StringComparison.Ordinal) && !r.Contains("/events", StringComparison.Ordinal))];

    /// <summary>What a generated Service must keep: labels, type, selector, ports.</summary>
    private static JsonObject Wanted(JsonNode svc) =>
        new JsonObject
        {
            ["labels"] = svc["metadata"]!["labels"]!.DeepClone(),
            ["type"] = svc["spec"]!["type"]!.DeepClone(),
            ["selector"] = svc["spec"]!["selector"]!.DeepClone(),
            ["ports"] = svc["spec"]!["ports"]!.DeepClone(),
        };

    private void Legacy(string name, string peer, string app, Dictionary<string, string> selector)
    {
        var labels = new JsonObject
        {
            [KubeNames.ExposedBy] = KubeNames.ExposedByValue,
            [KubeNames.ExposedApp] = app,
            [KubeNames.ExposedPeer] = peer,
        };
        var matchLabels = new JsonObject(selector.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value)));
        _api.Apply(new JsonObject
        {
            ["apiVersion"] = "v1",
            ["kind"] = "Service",
            ["metadata"] = new JsonObject { ["name"] = name, ["namespace"] = Ns, ["labels"] = labels.DeepClone() },
            ["spec"] = new JsonObject { ["selector"] = matchLabels.DeepClone(), ["ports"] = new JsonArray(new JsonObject { ["port"] = 80, ["targetPort"] = 25009 }) },
        });
        _api.Apply(new JsonObject
        {
            ["apiVersion"] = "networking.k8s.io/v1",
            ["kind"] = "NetworkPolicy",
            ["metadata"] = new JsonObject { ["name"] = name, ["namespace"] = Ns, ["labels"] = labels.DeepClone() },
            ["spec"] = new JsonObject
            {
                ["podSelector"] = new JsonObject { ["matchLabels"] = matchLabels.DeepClone() },
                ["policyTypes"] = new JsonArray("Ingress"),
                ["ingress"] = new JsonArray(new JsonObject { ["ports"] = new JsonArray(new JsonObject { ["protocol"] = "TCP", ["port"] = 25009 }) }),
            },
        });
    }
}
