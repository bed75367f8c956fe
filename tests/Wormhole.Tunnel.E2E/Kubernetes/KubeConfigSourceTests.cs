using System.Diagnostics;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Wormhole.Tunnel.E2E.Infrastructure;

namespace Wormhole.Tunnel.E2E.Kubernetes;

/// <summary>
/// Where the executables find the Kubernetes API, as <c>--check</c> reports it. The in-cluster cases run the client in
/// a private mount namespace with a service account mounted where the library reads it
/// (<c>/var/run/secrets/kubernetes.io/serviceaccount</c>, a fixed path it offers no way to change).
/// </summary>
public sealed class KubeConfigSourceTests : IDisposable
{
    private const string KubernetesFlags = "--name c1 --kubernetes --kubernetes-namespace wormhole --kubernetes-labels app=wormhole --check";

    private readonly string _dir = Directory.CreateTempSubdirectory("wormhole-kube-source-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [RootFact]
    public async Task In_cluster_service_account_beats_the_home_kube_config()
    {
        var home = WriteHome("https://home.example:6443");

        var (code, stdout, stderr) = await RunInClusterAsync(home, kubeconfigEnv: null);

        code.Should().Be(0, stderr);
        stdout.Should().Contain("Kubernetes API in-cluster, server https://10.96.0.1:6443").And.NotContain("home.example");
    }

    [RootFact]
    public async Task KUBECONFIG_beats_the_in_cluster_service_account()
    {
        var home = WriteHome("https://home.example:6443");
        var kubeconfig = WriteKubeconfig(Path.Combine(_dir, "env-config"), "https://from-env.example:6443", "from-env");

        var (code, stdout, stderr) = await RunInClusterAsync(home, kubeconfig);

        code.Should().Be(0, stderr);
        stdout.Should().Contain($"Kubernetes API $KUBECONFIG {kubeconfig} (context from-env), server https://from-env.example:6443");
    }

    [Fact]
    public async Task Kube_context_is_used_and_shown_by_check()
    {
        var kubeconfig = WriteKubeconfig(Path.Combine(_dir, "config"), "https://current.example:6443", "current", ("other", "https://other.example:6443"));

        var (code, stdout, stderr) = await RunAsync(Executables.Client, null, $"{KubernetesFlags} --kubeconfig {kubeconfig} --kube-context other");

        code.Should().Be(0, stderr);
        stdout.Should().Contain($"Kubernetes API --kubeconfig {kubeconfig} (context other), server https://other.example:6443");
    }

    [Fact]
    public async Task Unknown_kube_context_fails_the_check_with_one_sentence()
    {
        var kubeconfig = WriteKubeconfig(Path.Combine(_dir, "config"), "https://current.example:6443", "current");

        var (code, stdout, stderr) = await RunAsync(Executables.Client, null, $"{KubernetesFlags} --kubeconfig {kubeconfig} --kube-context prod");

        code.Should().Be(2);
        stdout.Should().BeEmpty();
        stderr.Trim().Split('\n').Should().ContainSingle().Which.Should().Contain("no context named prod");
    }

    /// <summary>Runs the client's --check in its own mount namespace, with a service account mounted as the kubelet does.</summary>
    private async Task<(int Code, string Stdout, string Stderr)> RunInClusterAsync(string home, string? kubeconfigEnv)
    {
        var account = Directory.CreateDirectory(Path.Combine(_dir, "serviceaccount")).FullName;
        using (var key = ECDsa.Create(ECCurve.NamedCurves.nistP256))
        {
            using var ca = new CertificateRequest("CN=cluster-ca", key, HashAlgorithmName.SHA256).CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
            File.WriteAllText(Path.Combine(account, "ca.crt"), ca.ExportCertificatePem());
        }

        File.WriteAllText(Path.Combine(account, "token"), "service-account-token");
        File.WriteAllText(Path.Combine(account, "namespace"), "wormhole\n");
        var script = "mount -t tmpfs tmpfs /run && mkdir -p /run/secrets/kubernetes.io/serviceaccount "
            + "&& cp \"$SA\"/* /run/secrets/kubernetes.io/serviceaccount/ && exec \"$EXE\" " + KubernetesFlags;
        var environment = new Dictionary<string, string?>
        {
            ["SA"] = account, ["EXE"] = Executables.Client, ["HOME"] = home, ["KUBECONFIG"] = kubeconfigEnv,
            ["KUBERNETES_SERVICE_HOST"] = "10.96.0.1", ["KUBERNETES_SERVICE_PORT"] = "6443",
        };
        return await RunAsync("unshare", environment, "--mount --propagation private sh -c", script);
    }

    private string WriteHome(string server)
    {
        var home = Directory.CreateDirectory(Path.Combine(_dir, "home", ".kube")).Parent!.FullName;
        WriteKubeconfig(Path.Combine(home, ".kube", "config"), server, "home");
        return home;
    }

    private static string WriteKubeconfig(string path, string server, string context, params (string Name, string Server)[] more)
    {
        var clusters = new[] { (Name: context, Server: server) }.Concat(more).ToList();
        File.WriteAllText(path, $"""
            apiVersion: v1
            kind: Config
            current-context: {context}
            clusters:
            {string.Join("\n", clusters.Select(c => $"- name: {c.Name}\n  cluster:\n    server: {c.Server}\n    insecure-skip-tls-verify: true"))}
            contexts:
            {string.Join("\n", clusters.Select(c => $"- name: {c.Name}\n  context: {{cluster: {c.Name}, user: u}}"))}
            users:
            - name: u
              user:
                token: t
            """);
        return path;
    }

    /// <param name="arguments">Space-separated; a last argument after them is passed whole (a shell script).</param>
    private static async Task<(int Code, string Stdout, string Stderr)> RunAsync(string exe, Dictionary<string, string?>? environment, string arguments, string? last = null)
    {
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in arguments.Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            psi.ArgumentList.Add(a);
        }

        if (last is not null)
        {
            psi.ArgumentList.Add(last);
        }

        psi.Environment.Remove("KUBECONFIG");
        foreach (var (name, value) in environment ?? [])
        {
            if (value is null)
            {
                psi.Environment.Remove(name);
            }
            else
            {
                psi.Environment[name] = value;
            }
        }

        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(cts.Token);
        return (process.ExitCode, await stdout, await stderr);
    }
}
