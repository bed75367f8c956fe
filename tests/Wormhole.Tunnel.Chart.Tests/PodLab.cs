using System.Net;
using Wormhole.Tunnel.Chart.Tests.Infrastructure;

namespace Wormhole.Tunnel.Chart.Tests;

[CollectionDefinition("pods")]
public sealed class PodCollection : ICollectionFixture<PodLab>;

/// <summary>
/// Two clusters on one podman network, each side as the chart's pod from the images: the hub (release <c>server</c>,
/// namespace <c>server</c>) and a spoke (release <c>client</c>, namespace <c>client</c>) as <c>podman kube play</c> runs
/// what <c>helm template</c> renders, with NetworkPolicies on as in the reference's k3d suite. Each cluster's API is an
/// emulator on the network's gateway, reached through the in-cluster path (service account, KUBERNETES_SERVICE_*).
/// The hub's public Service is stood in for by the hub pod's address (the spoke resolves
/// <c>wormhole-server.server.svc.cluster.local</c> to it), each cluster's <c>nginx.nginx</c> by an HTTP backend
/// container. The spoke is started first, and the hub's first LIST is throttled: what the probes answered meanwhile is
/// kept for <see cref="ProbeTests"/>.
/// </summary>
public sealed class PodLab : IAsyncLifetime
{
    public const string Exposed = "wormhole.glothriel.github.com/exposed";
    public const string ExposedBy = "wormhole.glothriel.github.com/exposed-by=wormhole";
    public const string ConsumesApp = "wormhole.glothriel.github.com/network-policy-consumes-app";
    public const string HubHost = "wormhole-server.server.svc.cluster.local";
    public const string ClientBody = "Hello world from the client cluster!";
    public const string ServerBody = "Hello world from the server cluster!";
    private const string Psk = "pods-correct-horse-battery";

    /// <summary>The images scripts/images builds, as chart values.</summary>
    public static readonly string[] ImageValues =
        ["docker.registry=localhost", "docker.image=wormhole-server", "docker.clientImage=wormhole-client", $"docker.version={Podman.Tag}"];

    public PodmanNetwork Net { get; private set; } = null!;

    /// <summary>The hub's cluster (namespace <c>server</c>).</summary>
    public EmulatedCluster Server { get; private set; } = null!;

    /// <summary>The spoke's cluster (namespace <c>client</c>).</summary>
    public EmulatedCluster Client { get; private set; } = null!;

    public ChartPod Hub { get; private set; } = null!;

    public ChartPod Spoke { get; private set; } = null!;

    /// <summary>The spoke's startup and liveness probes before the hub existed: (startup status, body, liveness status).</summary>
    public (HttpStatusCode Startup, string Body, HttpStatusCode Liveness) SpokeBeforeHub { get; private set; }

    /// <summary>The hub's readiness probe while its first LIST was being refused with 429: (status, body).</summary>
    public (HttpStatusCode Status, string Body) HubBeforeFirstList { get; private set; }

    public string[] ServerValues(params string[] extra) =>
    [
        .. ImageValues, "server.enabled=true", "networkPolicies.enabled=true", $"server.wg.publicHost={HubHost}", "server.service.type=ClusterIP",
        "wireguard.mountTunDevice=true", $"peering.psk={Psk}", $"fullnameOverride={Net.Named("server")}", "server.extraArgs[0]=--stuck-after=3s", .. extra,
    ];

    public string[] ClientValues(params string[] extra) =>
    [
        .. ImageValues, "client.enabled=true", "networkPolicies.enabled=true", "client.name=client", $"client.serverDsn=http://{HubHost}:8080",
        "wireguard.mountTunDevice=true", $"peering.psk={Psk}", $"fullnameOverride={Net.Named("client")}",
        "client.extraArgs[0]=--stuck-after=3s", .. extra,
    ];

    public async Task InitializeAsync()
    {
        if (Podman.MissingReason is not null && string.IsNullOrEmpty(Environment.GetEnvironmentVariable("CI")))
        {
            return; // every test of the collection is skipped
        }

        Net = await PodmanNetwork.CreateAsync("pods");
        // The backends first: the network's bridge (and the gateway address the APIs listen on) exists once a container is on it.
        await Net.RunBackendAsync("nginx-client", Net.Address(20), ClientBody);
        await Net.RunBackendAsync("nginx-server", Net.Address(21), ServerBody);
        Server = await EmulatedCluster.StartAsync(Net.Gateway, "server");
        Client = await EmulatedCluster.StartAsync(Net.Gateway, "client");
        await ResetMocksAsync();

        Hub = new ChartPod(Net, Server, "server", "server", "server", Net.Address(10));
        Hub.Hosts["nginx.nginx"] = Hub.Hosts["nginx-two-ports.nginx"] = Net.Address(21);
        Spoke = new ChartPod(Net, Client, "client", "client", "client", Net.Address(11));
        Spoke.Hosts["nginx.nginx"] = Spoke.Hosts["nginx-two-ports.nginx"] = Net.Address(20);
        Spoke.Hosts[HubHost] = Hub.Address;

        // The spoke before its hub: its start-up (pairing) cannot end yet; its liveness is fine meanwhile.
        await Spoke.PlayAsync(ClientValues());
        await Eventually.Async(async () => (await Spoke.ProbeAsync("startupProbe")).Status == HttpStatusCode.ServiceUnavailable, "the spoke's API answers", TimeSpan.FromSeconds(60), Spoke.LogsAsync);
        var startup = await Spoke.ProbeAsync("startupProbe");
        SpokeBeforeHub = (startup.Status, startup.Body, (await Spoke.ProbeAsync("livenessProbe")).Status);

        // The hub, whose API answers its first LIST with 429 three times (Retry-After 3 s, as priority and fairness would).
        Server.Api.ThrottleNext(3, retryAfterSeconds: 3);
        await Hub.PlayAsync(ServerValues());
        await Eventually.Async(
            async () =>
            {
                HubBeforeFirstList = await Hub.ProbeAsync("readinessProbe");
                return HubBeforeFirstList.Status == HttpStatusCode.ServiceUnavailable;
            },
            "the hub's API answers before its first LIST is in",
            TimeSpan.FromSeconds(60),
            Hub.DiagnosticsAsync);
        await Hub.WaitReadyAsync();
        await Spoke.WaitReadyAsync();
    }

    public async Task DisposeAsync()
    {
        if (Net is null)
        {
            return;
        }

        await Net.DisposeAsync();
        if (Server is not null)
        {
            await Server.DisposeAsync();
        }

        if (Client is not null)
        {
            await Client.DisposeAsync();
        }
    }

    /// <summary>Before each test: both pods up and paired, the mocks fresh and unannotated, no generated Service left.</summary>
    public async Task ResetAsync()
    {
        foreach (var pod in new[] { Hub, Spoke })
        {
            if ((await Podman.TryAsync("inspect", "--format", "{{.State.Running}}", pod.Container)).StandardOutput.Trim() != "true")
            {
                await Podman.RunAsync("start", pod.Container);
            }

            await pod.WaitReadyAsync();
        }

        await Eventually.Async(async () => (await Hub.ApiAsync("/api/peers/v1")).ToJsonString().Contains("\"client\"", StringComparison.Ordinal), "the spoke is paired", TimeSpan.FromSeconds(90));
        await ResetMocksAsync();
        await Eventually.Async(
            () => Task.FromResult(Server.Generated("server").Count == 0 && Client.Generated("client").Count == 0),
            "no generated object is left on either side",
            TimeSpan.FromSeconds(60));
    }

    /// <summary>Annotates a mock Service in the spoke's cluster (the reference's k3d suite shares one cluster).</summary>
    public Task AnnotateAsync(EmulatedCluster cluster, string service, params string[] annotations) =>
        cluster.KubectlAsync(["annotate", "svc", service, "-n", "nginx", "--overwrite", .. annotations]);

    /// <summary>Waits until the Service exists in the side's namespace.</summary>
    public static Task WaitForServiceAsync(EmulatedCluster cluster, string ns, string name) =>
        Eventually.Async(() => Task.FromResult(cluster.Get("services", ns, name) is not null), $"Service {ns}/{name} exists", TimeSpan.FromSeconds(60));

    public static Task WaitForServiceGoneAsync(EmulatedCluster cluster, string ns, string name) =>
        Eventually.Async(() => Task.FromResult(cluster.Get("services", ns, name) is null), $"Service {ns}/{name} is gone", TimeSpan.FromSeconds(60));

    /// <summary>
    /// GET / through a generated Service: the pods its selector matches are the side's pod (asserted), so the request
    /// goes where kube-proxy would send it, to the pod's address on the Service's targetPort. Null while there is no
    /// such Service.
    /// </summary>
    public static async Task<string?> ThroughServiceAsync(ChartPod side, string ns, string service)
    {
        if (side.Cluster.Get("services", ns, service) is not { } svc)
        {
            return null;
        }

        var selector = svc["spec"]!["selector"]!.AsObject().ToDictionary(p => p.Key, p => (string)p.Value!);
        side.PodLabels.Should().Contain(selector, $"Service {service} selects the {side.Role}'s pod");
        var targetPort = svc["spec"]!["ports"]![0]!["targetPort"]!.GetValue<int>();
        var curl = await Tools.RunAsync("curl", ["-sS", "-m", "10", $"http://{side.Address}:{targetPort}/"]);
        return curl.StandardOutput;
    }

    private async Task ResetMocksAsync()
    {
        foreach (var cluster in new[] { Server, Client })
        {
            await cluster.TryKubectlAsync("delete", "svc", "nginx", "nginx-two-ports", "-n", "nginx", "--ignore-not-found");
            await cluster.ApplyAsync("""
                apiVersion: v1
                kind: Namespace
                metadata: {name: nginx}
                ---
                apiVersion: v1
                kind: Service
                metadata: {name: nginx, namespace: nginx}
                spec:
                  selector: {app: nginx}
                  ports: [{name: http, port: 80, targetPort: 80}]
                ---
                apiVersion: v1
                kind: Service
                metadata: {name: nginx-two-ports, namespace: nginx}
                spec:
                  selector: {app: nginx}
                  ports: [{name: http, port: 80, targetPort: 80}, {name: https, port: 443, targetPort: 433}]
                """);
        }
    }
}
