using System.Net;
using System.Text.Json.Nodes;
using Wormhole.Tunnel.KubeEmulator;

namespace Wormhole.Tunnel.Chart.Tests.Infrastructure;

/// <summary>
/// A cluster's Kubernetes API for pods: the strict emulator (TLS) listening on the podman network's gateway, a
/// service-account directory (token, ca.crt, namespace) for pods to mount where the apiserver's admission would, and
/// kubectl against it with a kubeconfig, as a user drives a cluster.
/// </summary>
public sealed class EmulatedCluster : IAsyncDisposable
{
    private readonly KubeEmulator.KubeEmulator _api;
    private readonly TempDirectory _work;

    private EmulatedCluster(KubeEmulator.KubeEmulator api, TempDirectory work, IPAddress address, string kubeconfig)
    {
        _api = api;
        _work = work;
        Address = address;
        Kubeconfig = kubeconfig;
    }

    public IPAddress Address { get; }

    public int Port => new Uri(_api.Url).Port;

    public string Kubeconfig { get; }

    /// <summary>token, ca.crt and namespace, as /var/run/secrets/kubernetes.io/serviceaccount holds them.</summary>
    public string ServiceAccountDirectory => Path.Combine(_work.Path, "serviceaccount");

    public KubeEmulator.KubeEmulator Api => _api;

    /// <param name="ns">The namespace of the release (the service account's).</param>
    public static async Task<EmulatedCluster> StartAsync(IPAddress address, string ns)
    {
        var api = await KubeEmulator.KubeEmulator.StartAsync(new KubeEmulatorOptions { Address = address, Port = 0 });
        var work = new TempDirectory("whpod-cluster-");
        var kubeconfig = api.WriteKubeconfig(Path.Combine(work.Path, "kubeconfig"));
        var cluster = new EmulatedCluster(api, work, address, kubeconfig);
        Directory.CreateDirectory(cluster.ServiceAccountDirectory);
        await File.WriteAllTextAsync(Path.Combine(cluster.ServiceAccountDirectory, "token"), api.Token);
        await File.WriteAllTextAsync(Path.Combine(cluster.ServiceAccountDirectory, "ca.crt"), api.CertificateAuthorityPem);
        await File.WriteAllTextAsync(Path.Combine(cluster.ServiceAccountDirectory, "namespace"), ns);
        await cluster.KubectlAsync("create", "namespace", ns);
        return cluster;
    }

    public Task<ProcessResult> TryKubectlAsync(params string[] args) => Tools.RunAsync(Tools.Kubectl, ["--kubeconfig", Kubeconfig, .. args]);

    public async Task<string> KubectlAsync(params string[] args)
    {
        var result = await TryKubectlAsync(args);
        return result.Succeeded ? result.StandardOutput : throw new InvalidOperationException($"kubectl {string.Join(' ', args)} failed: {result}");
    }

    public async Task ApplyAsync(string yaml)
    {
        var result = await Tools.RunAsync(Tools.Kubectl, ["--kubeconfig", Kubeconfig, "apply", "-f", "-"], input: yaml);
        if (!result.Succeeded)
        {
            throw new InvalidOperationException($"kubectl apply failed: {result}");
        }
    }

    /// <summary>The object straight from the API's store (no kubectl start-up), or null.</summary>
    public JsonObject? Get(string resource, string ns, string name) => _api.Get(resource, ns, name);

    public IReadOnlyList<string> ServiceNames(string ns, string? selector = null) =>
        [.. _api.List("services", ns, selector).Select(s => (string)s["metadata"]!["name"]!).Order(StringComparer.Ordinal)];

    /// <summary>Generated objects in <paramref name="ns"/>: "Kind/name" → "uid clusterIP".</summary>
    public Dictionary<string, string> Generated(string ns) =>
        _api.List("services", ns, PodLab.ExposedBy).Concat(_api.List("networkpolicies", ns, PodLab.ExposedBy)).ToDictionary(
            o => $"{(string)o["kind"]!}/{(string)o["metadata"]!["name"]!}",
            o => $"{(string)o["metadata"]!["uid"]!} {(string?)o["spec"]!["clusterIP"]}");

    public async ValueTask DisposeAsync()
    {
        await _api.DisposeAsync();
        _work.Dispose();
    }
}
