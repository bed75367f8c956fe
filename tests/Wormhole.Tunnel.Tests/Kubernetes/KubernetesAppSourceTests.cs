using System.Text.Json.Nodes;
using k8s;
using Microsoft.Extensions.Logging.Abstractions;
using Wormhole.Tunnel.Kubernetes;
using Wormhole.Tunnel.Runtime;
using Wormhole.Tunnel.Sources;
using Emulator = Wormhole.Tunnel.KubeEmulator.KubeEmulator;
using EmulatorOptions = Wormhole.Tunnel.KubeEmulator.KubeEmulatorOptions;

namespace Wormhole.Tunnel.Tests.Kubernetes;

/// <summary>The annotated-Service source against the apiserver emulator: what it publishes, and when it wakes the reconcile loop.</summary>
public sealed class KubernetesAppSourceTests : IAsyncLifetime
{
    private readonly CancellationTokenSource _stop = new();
    private Emulator _api = null!;
    private KubeTransport _kubernetes = null!;
    private KubeApi _client = null!;

    public async Task InitializeAsync()
    {
        _api = await Emulator.StartAsync(new EmulatorOptions { Tls = false });
        _api.Apply(new JsonObject { ["apiVersion"] = "v1", ["kind"] = "Namespace", ["metadata"] = new JsonObject { ["name"] = "shop" } });
        _kubernetes = KubeTransport.Create(new KubernetesClientConfiguration { Host = _api.Url, AccessToken = _api.Token });
        _client = new KubeApi(_kubernetes, TimeProvider.System, NullLogger.Instance);
    }

    public async Task DisposeAsync()
    {
        await _stop.CancelAsync();
        _stop.Dispose();
        _kubernetes.Dispose();
        await _api.DisposeAsync();
    }

    [Fact]
    public async Task A_service_event_that_changes_no_app_leaves_the_app_list_and_the_reconcile_loop_alone()
    {
        _api.Apply(Service("web", new JsonObject { [ServiceApps.Exposed] = "yes" }));
        _api.Apply(Service("db", null));
        var signal = new ReconcileSignal();
        var source = new KubernetesAppSource(_client, "client", signal, new EventRecorder(_client, "wormhole-client", TimeProvider.System, NullLogger.Instance),
            TimeProvider.System, NullLoggerFactory.Instance);
        var run = source.RunAsync(_stop.Token);
        await source.ReadyAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));
        await signal.WaitAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10)); // the first list: web's app
        var published = source.Current;
        published.Select(a => a.Name).Should().Equal("shop-web");

        // Events about Services that change no app: a label on web, a new plain Service, db relabelled; then one the
        // source reports (a Warning Event, no app), so once that Event is there every change before it has been seen.
        _api.Apply(Service("web", new JsonObject { [ServiceApps.Exposed] = "yes" }, new JsonObject { ["tier"] = "front" }));
        _api.Apply(Service("cache", null));
        _api.Apply(Service("db", null, new JsonObject { ["tier"] = "back" }));
        _api.Apply(Service("broken", new JsonObject { [ServiceApps.Exposed] = "yes", [ServiceApps.Ports] = "99999" }));
        await Eventually.HoldsAsync(
            () => _api.List("events", "shop").Any(e => (string?)e["involvedObject"]!["name"] == "broken" && (string?)e["reason"] == "WormholeInvalidExposure"),
            "the Warning Event about 'broken'");

        source.Current.Should().BeSameAs(published, "no app changed, so nothing was published and no pass requested");

        // A change of the app list is published and requests a pass.
        _api.Apply(Service("db", new JsonObject { [ServiceApps.Exposed] = "yes" }));
        await signal.WaitAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));
        source.Current.Select(a => a.Name).Should().Equal("shop-db", "shop-web");
        run.IsCompleted.Should().BeFalse();
    }

    private static JsonObject Service(string name, JsonObject? annotations, JsonObject? labels = null)
    {
        var meta = new JsonObject { ["name"] = name, ["namespace"] = "shop" };
        if (annotations is not null)
        {
            meta["annotations"] = annotations;
        }

        if (labels is not null)
        {
            meta["labels"] = labels;
        }

        return new JsonObject
        {
            ["apiVersion"] = "v1",
            ["kind"] = "Service",
            ["metadata"] = meta,
            ["spec"] = new JsonObject { ["selector"] = new JsonObject { ["app"] = name }, ["ports"] = new JsonArray(new JsonObject { ["port"] = 80 }) },
        };
    }
}
