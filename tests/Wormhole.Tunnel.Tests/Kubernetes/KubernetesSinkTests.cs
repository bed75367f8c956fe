using System.Net;
using System.Text.Json.Nodes;
using k8s;
using Microsoft.Extensions.Logging.Abstractions;
using Wormhole.Tunnel.Kubernetes;
using Wormhole.Tunnel.Planning;
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
    private Emulator _api = null!;
    private k8s.Kubernetes _kubernetes = null!;
    private KubeApi _client = null!;

    public async Task InitializeAsync()
    {
        _api = await Emulator.StartAsync(new EmulatorOptions { Tls = false });
        _api.Apply(new JsonObject { ["apiVersion"] = "v1", ["kind"] = "Namespace", ["metadata"] = new JsonObject { ["name"] = Ns } });
        _kubernetes = new k8s.Kubernetes(new KubernetesClientConfiguration { Host = _api.Url, AccessToken = _api.Token });
        _client = new KubeApi(_kubernetes, TimeProvider.System, NullLogger.Instance);
    }

    public async Task DisposeAsync()
    {
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

    private KubernetesSink NewSink(string instance, IReadOnlyDictionary<string, string> podLabels, RecordingLogger log, TimeSpan? grace = null, Func<string, bool>? isKnownPeer = null) =>
        new(
            _client,
            new KubernetesSinkOptions(Ns, podLabels, NetworkPolicies: true, instance),
            _time,
            grace ?? TimeSpan.Zero,
            isKnownPeer ?? (_ => true),
            new EventRecorder(_client, "wormhole-" + instance, _time, log),
            log);

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
