using System.Text.Json.Nodes;
using Wormhole.Tunnel.Hosting;

namespace Wormhole.Tunnel.E2E.Infrastructure;

/// <summary>
/// A "cluster" for one site: the API emulator running as a process inside the site's namespace on 127.0.0.1:6443,
/// and kubectl run inside the same namespace against it — as a user would drive a real cluster.
/// </summary>
public sealed class KubeCluster
{
    private readonly Site _site;

    private readonly string _token;

    private KubeCluster(Site site, string kubeconfig, string token, ProcessHandle process)
    {
        _site = site;
        _token = token;
        Kubeconfig = kubeconfig;
        Process = process;
    }

    public string Kubeconfig { get; }

    public ProcessHandle Process { get; }

    public static async Task<KubeCluster> StartAsync(TunnelLab lab, Site site)
    {
        Directory.CreateDirectory(lab.WorkDir(site));
        var kubeconfig = Path.Combine(lab.WorkDir(site), "kubeconfig");
        var token = "e2e-" + Guid.NewGuid().ToString("N");
        var process = await site.StartProcessAsync(Executables.KubeEmulator, ["--listen", "127.0.0.1:6443", "--token", token, "--kubeconfig-out", kubeconfig]);
        await process.WaitForOutputAsync("ready", TunnelLab.Patience);
        var cluster = new KubeCluster(site, kubeconfig, token, process);
        await cluster.KubectlAsync("create", "namespace", "wormhole");
        return cluster;
    }

    /// <summary>
    /// The flags that make a hub or spoke use this cluster, as the chart passes them: its defaults (no
    /// --kubernetes-gc-grace: 15 s) plus --network-policies (networkPolicies.enabled), since glothriel/wormhole's
    /// integration tests, which these mirror, check the generated NetworkPolicy.
    /// </summary>
    public IEnumerable<string> Flags(string podLabels, bool networkPolicies = true) =>
        new[] { "--kubernetes", "--kubeconfig", Kubeconfig, "--kubernetes-namespace", "wormhole", "--kubernetes-labels", podLabels }
            .Concat(networkPolicies ? ["--network-policies"] : []);

    public Task<ProcessResult> TryKubectlAsync(params string[] args) =>
        _site.RunAsync("kubectl", ["--kubeconfig", Kubeconfig, .. args]);

    /// <summary>Runs kubectl; a failure throws with its stderr.</summary>
    public async Task<string> KubectlAsync(params string[] args)
    {
        var result = await TryKubectlAsync(args);
        if (!result.Succeeded)
        {
            throw new InvalidOperationException($"kubectl {string.Join(' ', args)} failed: {result.StandardError}");
        }

        return result.StandardOutput;
    }

    /// <summary>kubectl apply -f of a manifest written to a file.</summary>
    public async Task ApplyAsync(string yaml)
    {
        var path = Path.Combine(Path.GetTempPath(), $"wh-manifest-{Guid.NewGuid():N}.yaml");
        await File.WriteAllTextAsync(path, yaml);
        try
        {
            await KubectlAsync("apply", "-f", path);
        }
        finally
        {
            File.Delete(path);
        }
    }

    public async Task<IReadOnlyList<string>> ServiceNamesAsync(string ns)
    {
        var json = JsonNode.Parse(await KubectlAsync("get", "svc", "-n", ns, "-o", "json"))!;
        return json["items"]!.AsArray().Select(i => (string)i!["metadata"]!["name"]!).Order(StringComparer.Ordinal).ToList();
    }

    /// <summary>Whether a Service exists, asked straight from the API (no kubectl start-up), for precise timings.</summary>
    public async Task<bool> ServiceExistsAsync(string ns, string name)
    {
        // The emulator speaks HTTPS with a throwaway CA of its own, written into the kubeconfig: trust exactly that CA.
        var caData = System.Text.RegularExpressions.Regex.Match(await File.ReadAllTextAsync(Kubeconfig), @"certificate-authority-data:\s*(\S+)").Groups[1].Value;
        using var ca = System.Security.Cryptography.X509Certificates.X509Certificate2.CreateFromPem(System.Text.Encoding.ASCII.GetString(Convert.FromBase64String(caData)));
        using var handler = new SocketsHttpHandler
        {
            UseProxy = false,
            ConnectCallback = async (context, ct) => new System.Net.Sockets.NetworkStream(
                await _site.ConnectTcpAsync(System.Net.IPAddress.Loopback, context.DnsEndPoint.Port, ct), ownsSocket: true),
            SslOptions =
            {
                RemoteCertificateValidationCallback = (_, certificate, _, _) =>
                {
                    using var chain = new System.Security.Cryptography.X509Certificates.X509Chain();
                    chain.ChainPolicy.TrustMode = System.Security.Cryptography.X509Certificates.X509ChainTrustMode.CustomRootTrust;
                    chain.ChainPolicy.CustomTrustStore.Add(ca);
                    chain.ChainPolicy.RevocationMode = System.Security.Cryptography.X509Certificates.X509RevocationMode.NoCheck;
                    return certificate is System.Security.Cryptography.X509Certificates.X509Certificate2 c && chain.Build(c);
                },
            },
        };
        using var client = new HttpClient(handler) { Timeout = TimeSpan.FromSeconds(5) };
        using var request = new HttpRequestMessage(HttpMethod.Get, $"https://127.0.0.1:6443/api/v1/namespaces/{ns}/services/{name}");
        request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", _token);
        using var response = await client.SendAsync(request);
        return response.IsSuccessStatusCode;
    }

    public async Task<JsonNode?> GetAsync(string kind, string ns, string name)
    {
        var result = await TryKubectlAsync("get", kind, name, "-n", ns, "-o", "json");
        return result.Succeeded ? JsonNode.Parse(result.StandardOutput) : null;
    }
}
