using System.Diagnostics;
using System.Text.Json.Nodes;
using Wormhole.Tunnel.Chart.Tests.Infrastructure;

namespace Wormhole.Tunnel.Chart.Tests.K3d;

[CollectionDefinition("k3d")]
public sealed class K3dCollection : ICollectionFixture<K3dCluster>;

/// <summary>
/// A k3d cluster set up like glothriel/wormhole's integration tests: images built from docker/ and imported, the hub
/// installed from helm/ as release <c>server</c> in namespace <c>server</c>, a spoke as release <c>client</c> in
/// namespace <c>client</c> (both NetworkPolicies on), the nginx mocks in <c>nginx</c> and two curl pods in
/// <c>default</c>. Hub and spoke share the cluster, so every exposure happens in both directions.
/// WORMHOLE_K3D_CLUSTER names the cluster (default wormhole-tests); REUSE_CLUSTER=1 keeps it afterwards.
/// </summary>
public sealed class K3dCluster : IAsyncLifetime
{
    public const string ConsumesApp = "wormhole.glothriel.github.com/network-policy-consumes-app";
    public const string Exposed = "wormhole.glothriel.github.com/exposed";
    public const string ExposedBy = "wormhole.glothriel.github.com/exposed-by=wormhole";
    public static readonly TimeSpan Patience = TimeSpan.FromMinutes(6); // the reference: 360 tries, 1 s apart

    private const string ImageTag = "k3d";

    private readonly string _cluster = Environment.GetEnvironmentVariable("WORMHOLE_K3D_CLUSTER") is { Length: > 0 } name ? name : "wormhole-tests";
    private readonly bool _reuse = Environment.GetEnvironmentVariable("REUSE_CLUSTER") is "1" or "true" or "yes";
    private string _kubeconfig = "";

    public static string[] ServerValues =>
    [
        "server.enabled=true", "networkPolicies.enabled=true", "server.wg.publicHost=wormhole-server.server.svc.cluster.local",
        "server.service.type=ClusterIP", .. ImageValues("server"),
    ];

    public static string[] ClientValues =>
    [
        "client.enabled=true", "networkPolicies.enabled=true", "client.name=client",
        "client.serverDsn=http://wormhole-server.server.svc.cluster.local:8080", .. ImageValues("client"),
    ];

    public async Task InitializeAsync()
    {
        if (ClusterFactAttribute.MissingReason is not null)
        {
            return; // every test of the collection is skipped
        }

        var clusters = await Tools.RunCheckedAsync("k3d", ["cluster", "list", "-o", "json"]);
        if (!JsonNode.Parse(clusters)!.AsArray().Any(c => (string?)c!["name"] == _cluster))
        {
            await Tools.RunCheckedAsync("k3d", ["cluster", "create", _cluster, "--wait"], timeout: TimeSpan.FromMinutes(5));
        }

        _kubeconfig = (await Tools.RunCheckedAsync("k3d", ["kubeconfig", "write", _cluster])).Trim();
        foreach (var role in new[] { "server", "client" })
        {
            await Tools.RunCheckedAsync("docker", ["build", "-f", $"docker/{role}.Dockerfile", "-t", $"wormhole-{role}:{ImageTag}", "."], timeout: TimeSpan.FromMinutes(15));
        }

        await Tools.RunCheckedAsync("k3d", ["image", "import", "-c", _cluster, $"wormhole-server:{ImageTag}", $"wormhole-client:{ImageTag}"], timeout: TimeSpan.FromMinutes(5));
        await HelmAsync(["upgrade", "--install", "server", Repository.Chart, "-n", "server", "--create-namespace", "--wait", "--timeout", "5m", .. Sets(ServerValues)]);
        await HelmAsync(["upgrade", "--install", "client", Repository.Chart, "-n", "client", "--create-namespace", "--wait", "--timeout", "5m", .. Sets(ClientValues)]);
        await ApplyAsync(CurlPods);
        await KubectlAsync("wait", "--for=condition=Ready", "pod/curl-with-labels", "pod/curl-no-labels", "-n", "default", "--timeout=5m");
    }

    public async Task DisposeAsync()
    {
        if (ClusterFactAttribute.MissingReason is null && !_reuse)
        {
            await Tools.RunAsync("k3d", ["cluster", "delete", _cluster], timeout: TimeSpan.FromMinutes(5));
        }
    }

    /// <summary>Before each test: the nginx mocks fresh and unannotated, and no generated Service left on either side.</summary>
    public async Task ResetAsync()
    {
        await KubectlAsync("delete", "namespace", "nginx", "--ignore-not-found", "--wait", "--timeout=5m");
        foreach (var ns in new[] { "server", "client" })
        {
            await EventuallyAsync(async () => (await ServiceNamesAsync(ns, ExposedBy)).Count == 0, $"no generated Service is left in {ns}");
        }

        await ApplyAsync(NginxMocks);
        await KubectlAsync("rollout", "status", "deployment/nginx", "-n", "nginx", "--timeout=5m");
        await KubectlAsync("rollout", "status", "deployment/wormhole-server", "-n", "server", "--timeout=5m");
        await KubectlAsync("rollout", "status", "deployment/wormhole-client", "-n", "client", "--timeout=5m");
    }

    public Task<ProcessResult> TryKubectlAsync(params string[] args) =>
        Tools.RunAsync(Tools.Kubectl, ["--kubeconfig", _kubeconfig, .. args], timeout: Patience + TimeSpan.FromMinutes(1));

    public async Task<string> KubectlAsync(params string[] args)
    {
        var result = await TryKubectlAsync(args);
        return result.Succeeded ? result.StandardOutput : throw new InvalidOperationException($"kubectl {string.Join(' ', args)} failed: {result}");
    }

    public Task<string> HelmAsync(IEnumerable<string> args) =>
        Tools.RunCheckedAsync(Tools.Helm, ["--kubeconfig", _kubeconfig, .. args], timeout: TimeSpan.FromMinutes(6));

    public Task AnnotateAsync(string service, params string[] annotations) =>
        KubectlAsync(["annotate", "svc", service, "-n", "nginx", "--overwrite", .. annotations]);

    /// <summary>Waits (a watch, not a poll) until the Service exists.</summary>
    public Task WaitForServiceAsync(string ns, string name) =>
        KubectlAsync("wait", "--for=create", $"service/{name}", "-n", ns, $"--timeout={Patience.TotalSeconds:0}s");

    /// <summary>Waits (a watch, not a poll) until the Service is gone; returns at once when it does not exist.</summary>
    public Task WaitForServiceGoneAsync(string ns, string name) =>
        KubectlAsync("wait", "--for=delete", $"service/{name}", "-n", ns, $"--timeout={Patience.TotalSeconds:0}s");

    public async Task<bool> ServiceExistsAsync(string ns, string name) =>
        (await TryKubectlAsync("get", "service", name, "-n", ns, "-o", "name")).Succeeded;

    public async Task<IReadOnlyList<string>> ServiceNamesAsync(string ns, string? selector = null)
    {
        var json = JsonNode.Parse(await KubectlAsync(["get", "services", "-n", ns, "-o", "json", .. selector is null ? Array.Empty<string>() : ["-l", selector]]))!;
        return json["items"]!.AsArray().Select(i => (string)i!["metadata"]!["name"]!).Order(StringComparer.Ordinal).ToList();
    }

    /// <summary>curl from one of the curl pods; the result carries curl's exit code and body.</summary>
    public Task<ProcessResult> CurlAsync(string pod, params string[] args) =>
        TryKubectlAsync(["exec", "-n", "default", pod, "--", "curl", "-s", "-m", "10", .. args]);

    public Task<string> LogsAsync(string ns, string release) =>
        KubectlAsync("logs", "-n", ns, "-l", $"application=wormhole-{release}", "-c", "wormhole", "--tail=-1");

    /// <summary>Polls a condition about the cluster (once a second, as the reference's retries) until it holds or time runs out.</summary>
    public static async Task EventuallyAsync(Func<Task<bool>> condition, string what, TimeSpan? timeout = null)
    {
        var watch = Stopwatch.StartNew();
        var limit = timeout ?? Patience;
        while (!await condition())
        {
            if (watch.Elapsed > limit)
            {
                throw new TimeoutException($"Timed out after {limit.TotalSeconds:0} s waiting until {what}.");
            }

            await Task.Delay(TimeSpan.FromSeconds(1));
        }
    }

    private async Task ApplyAsync(string yaml)
    {
        var result = await Tools.RunAsync(Tools.Kubectl, ["--kubeconfig", _kubeconfig, "apply", "-f", "-"], input: yaml);
        if (!result.Succeeded)
        {
            throw new InvalidOperationException($"kubectl apply failed: {result}");
        }
    }

    private static string[] ImageValues(string role) =>
        ["docker.registry=", "docker.image=wormhole-server", "docker.clientImage=wormhole-client", $"docker.version={ImageTag}",
            $"{role}.pullPolicy=Never", "wireguard.mountTunDevice=true"];

    private static IEnumerable<string> Sets(IEnumerable<string> sets) => sets.SelectMany(s => new[] { "--set", s });

    /// <summary>glothriel/wormhole's kubernetes/raw/mocks: nginx answering "Hello world!", Services nginx and nginx-two-ports.</summary>
    private const string NginxMocks = """
        apiVersion: v1
        kind: Namespace
        metadata: {name: nginx}
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: nginx, namespace: nginx}
        data:
          default.conf: |
            server { listen 80; location / { default_type text/plain; return 200 'Hello world!'; } }
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: nginx, namespace: nginx}
        spec:
          replicas: 1
          selector: {matchLabels: {app: nginx}}
          template:
            metadata: {labels: {app: nginx}}
            spec:
              containers:
                - name: nginx
                  image: nginx:alpine
                  ports: [{name: http, containerPort: 80}]
                  volumeMounts: [{name: conf, mountPath: /etc/nginx/conf.d}]
              volumes: [{name: conf, configMap: {name: nginx}}]
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
        """;

    private const string CurlPods = $$"""
        apiVersion: v1
        kind: Pod
        metadata:
          name: curl-with-labels
          namespace: default
          labels: {"{{ConsumesApp}}": nginx-nginx}
        spec:
          containers: [{name: curl, image: curlimages/curl, command: [sleep, infinity]}]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: curl-no-labels, namespace: default}
        spec:
          containers: [{name: curl, image: curlimages/curl, command: [sleep, infinity]}]
        """;
}
