using System.Net;
using System.Text;
using System.Text.Json.Nodes;

namespace Wormhole.Tunnel.Chart.Tests.Infrastructure;

/// <summary>
/// One side's release, rendered with <c>helm template</c> and run with <c>podman kube play</c>: the rendered
/// Deployment, ConfigMap and PersistentVolumeClaim as they are, the rendered Secret as podman's secret store holds it.
/// Added to the pod, as a cluster adds them: the service-account token and CA at the standard path (admission's
/// projected volume), <c>KUBERNETES_SERVICE_HOST</c>/<c>PORT</c> (the kubelet's), and <c>hostAliases</c> for the
/// cluster DNS names the pod must resolve (kube-dns). Of the chart's own, the container's <c>ports</c> list is left out
/// and emptyDir volumes are renamed per pod, for podman 4.3's sake (see <see cref="PlayAsync"/>): args, env, volume
/// contents, mounts, probes and security context are as rendered.
/// </summary>
public sealed class ChartPod(PodmanNetwork network, EmulatedCluster cluster, string role, string release, string ns, IPAddress address)
{
    private Manifests? _manifests;

    public string Role { get; } = role;

    public IPAddress Address { get; } = address;

    public EmulatedCluster Cluster { get; } = cluster;

    /// <summary>The rendered objects of the last <see cref="PlayAsync"/>.</summary>
    public Manifests Manifests => _manifests ?? throw new InvalidOperationException("Play the pod first.");

    /// <summary>The Deployment's name: the chart's fullname.</summary>
    public string Fullname => Manifests.Name(Manifests.Deployment);

    /// <summary>What podman kube play names the pod's one container.</summary>
    public string Container => $"{Fullname}-pod-0-{(string)Manifests.Container["name"]!}";

    /// <summary>Cluster DNS names this pod resolves (hostAliases), name → address.</summary>
    public Dictionary<string, IPAddress> Hosts { get; } = [];

    /// <summary>Renders the release with <paramref name="values"/> and (re)places its pod (<c>podman kube play</c>).</summary>
    public async Task PlayAsync(IReadOnlyList<string> values)
    {
        var m = await HelmChart.TemplateAsync(release, ns, [.. values]);
        _manifests = m;
        using var work = new TempDirectory("whpod-play-");
        foreach (var secret in m.OfKind("Secret"))
        {
            // podman 4.3 stores a Secret document of a played file as YAML and then cannot read it ("secret ... is not
            // valid JSON"); its secret store wants what the apiserver keeps: key → base64 of the value.
            var data = new JsonObject(secret["stringData"]!.AsObject().Select(p => KeyValuePair.Create(p.Key, (JsonNode?)Convert.ToBase64String(Encoding.UTF8.GetBytes((string)p.Value!)))));
            var file = Path.Combine(work.Path, "secret.json");
            await File.WriteAllTextAsync(file, data.ToJsonString());
            var name = Manifests.Name(secret);
            await Podman.TryAsync("secret", "rm", name);
            await Podman.RunAsync("secret", "create", name, file);
            network.OwnsSecret(name);
        }

        var documents = m.Documents.Where(d => Manifests.Kind(d) is "Deployment" or "ConfigMap" or "PersistentVolumeClaim").Select(d => d.DeepClone().AsObject()).ToList();
        var deployment = documents.Single(d => Manifests.Kind(d) == "Deployment");
        var pod = deployment["spec"]!["template"]!["spec"]!.AsObject();
        var container = pod["containers"]!.AsArray().Single()!.AsObject();
        // podman 4.3 publishes every containerPort on the host as well (as if it were a hostPort), so two pods with
        // port 8082 cannot both start; in Kubernetes the list only names ports. The probes' named ports are resolved
        // from the rendered manifest (ProbeAsync), so nothing else depends on it here.
        container.Remove("ports");
        pod["volumes"]!.AsArray().Add(new JsonObject { ["name"] = "kube-api-access", ["hostPath"] = new JsonObject { ["path"] = Cluster.ServiceAccountDirectory, ["type"] = "Directory" } });
        container["volumeMounts"]!.AsArray().Add(new JsonObject { ["name"] = "kube-api-access", ["mountPath"] = "/var/run/secrets/kubernetes.io/serviceaccount", ["readOnly"] = true });
        container["env"]!.AsArray().Add(new JsonObject { ["name"] = "KUBERNETES_SERVICE_HOST", ["value"] = Cluster.Address.ToString() });
        container["env"]!.AsArray().Add(new JsonObject { ["name"] = "KUBERNETES_SERVICE_PORT", ["value"] = Cluster.Port.ToString(System.Globalization.CultureInfo.InvariantCulture) });
        if (Hosts.Count > 0)
        {
            pod["hostAliases"] = new JsonArray([.. Hosts.GroupBy(h => h.Value).Select(g => (JsonNode)new JsonObject { ["ip"] = g.Key.ToString(), ["hostnames"] = new JsonArray([.. g.Select(h => (JsonNode)h.Key)]) })]);
        }

        // podman 4.3 makes an emptyDir a named volume called as the pod's volume ("tmp", "wireguard-run"), shared by
        // every pod with a volume of that name: two sides' wireguard-go would meet on one control socket. Named after
        // the pod here, and removed with the pod, they are what an emptyDir is: the pod's own, kept across restarts of
        // its container, gone with the pod.
        var emptyDirs = new List<string>();
        foreach (var volume in pod["volumes"]!.AsArray().Where(v => v!["emptyDir"] is not null))
        {
            var name = (string)volume!["name"]!;
            volume["name"] = $"{Fullname}-{name}";
            foreach (var mount in container["volumeMounts"]!.AsArray().Where(m => (string)m!["name"]! == name))
            {
                mount!["name"] = $"{Fullname}-{name}";
            }

            emptyDirs.Add($"{Fullname}-{name}");
        }

        foreach (var claim in documents.Where(d => Manifests.Kind(d) == "PersistentVolumeClaim").ToList())
        {
            network.OwnsVolume(Manifests.Name(claim));
            if ((await Podman.TryAsync("volume", "exists", Manifests.Name(claim))).Succeeded)
            {
                // Bound already (an upgrade): podman 4.3 refuses to play a claim whose volume exists; the pod mounts it by name.
                documents.Remove(claim);
            }
        }

        var file2 = Path.Combine(work.Path, "play.yaml");
        await File.WriteAllTextAsync(file2, string.Join("\n---\n", documents.Select(d => d.ToJsonString())));
        network.OwnsPod($"{Fullname}-pod-0");
        emptyDirs.ForEach(network.OwnsVolume);

        // A rollout: the old pod goes, with its emptyDirs; the claim stays.
        await Podman.TryAsync("pod", "rm", "-f", "-t", "10", $"{Fullname}-pod-0");
        foreach (var emptyDir in emptyDirs)
        {
            await Podman.TryAsync("volume", "rm", "-f", emptyDir);
        }

        var played = await Podman.TryAsync(["kube", "play", "--network", network.Name, "--ip", Address.ToString(), file2], TimeSpan.FromMinutes(2));
        if (!played.Succeeded)
        {
            throw new InvalidOperationException($"podman kube play of {Fullname} failed: {played}");
        }
    }

    /// <summary>GETs what the rendered probe (<c>startupProbe</c>, <c>readinessProbe</c>, <c>livenessProbe</c>) asks, as the kubelet would.</summary>
    public async Task<(HttpStatusCode Status, string Body)> ProbeAsync(string probe)
    {
        var get = Manifests.Container[probe]!["httpGet"]!;
        var port = get["port"]!.GetValueKind() == System.Text.Json.JsonValueKind.Number
            ? get["port"]!.GetValue<long>()
            : Manifests.Container["ports"]!.AsArray().Single(p => (string)p!["name"]! == (string)get["port"]!)!["containerPort"]!.GetValue<long>();
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(Manifests.Container[probe]!["timeoutSeconds"]!.GetValue<long>()) };
        using var response = await http.GetAsync(new Uri($"http://{Address}:{port}{(string)get["path"]!}"));
        return (response.StatusCode, await response.Content.ReadAsStringAsync());
    }

    /// <summary>Waits until the rendered readiness probe passes.</summary>
    public Task<TimeSpan> WaitReadyAsync(TimeSpan? timeout = null) =>
        Eventually.Async(async () => (await ProbeAsync("readinessProbe")).Status == HttpStatusCode.OK, $"{Fullname} is ready", timeout ?? TimeSpan.FromSeconds(90), DiagnosticsAsync);

    /// <summary>The probes' answers and the container's log, for a failure message.</summary>
    public async Task<string> DiagnosticsAsync()
    {
        var text = new StringBuilder();
        foreach (var probe in new[] { "readinessProbe", "livenessProbe" })
        {
            try
            {
                var (status, body) = await ProbeAsync(probe);
                text.Append(probe).Append(": ").Append((int)status).Append(' ').AppendLine(body);
            }
            catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException)
            {
                text.Append(probe).Append(": ").AppendLine(ex.Message);
            }
        }

        return text.Append(await LogsAsync()).ToString();
    }

    public Task<string> LogsAsync() => Podman.LogsAsync(Container);

    /// <summary>
    /// kill -9 of the container's main process, as a crash or the OOM killer would; podman restarts the container in
    /// the same pod (restartPolicy Always), as the kubelet does. Returns once it runs again.
    /// (<c>podman kill</c> would count as a stop by the user, after which podman does not restart it.)
    /// </summary>
    public async Task CrashAsync()
    {
        var pid = await Podman.PidAsync(Container);
        (await Tools.RunAsync("kill", ["-KILL", pid.ToString(System.Globalization.CultureInfo.InvariantCulture)])).Succeeded.Should().BeTrue();
        await Eventually.Async(
            async () => (await Podman.TryAsync("inspect", "--format", "{{.State.Running}} {{.State.Pid}}", Container)).StandardOutput.Trim() is var state
                && state.StartsWith("true ", StringComparison.Ordinal) && state != $"true {pid}",
            $"podman restarts {Container}",
            TimeSpan.FromSeconds(60));
    }

    /// <summary>The admin API (port 8082) of this pod.</summary>
    public async Task<JsonNode> ApiAsync(string path)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        return JsonNode.Parse(await http.GetStringAsync(new Uri($"http://{Address}:8082{path}")))!;
    }

    /// <summary>The labels of the pod the Deployment makes (what a Service's selector is matched against).</summary>
    public IReadOnlyDictionary<string, string> PodLabels =>
        Manifests.Deployment["spec"]!["template"]!["metadata"]!["labels"]!.AsObject().ToDictionary(p => p.Key, p => (string)p.Value!);
}
