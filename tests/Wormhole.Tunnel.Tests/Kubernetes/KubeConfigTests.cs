using System.Net.Http;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Wormhole.Tunnel.Kubernetes;
using static Wormhole.Tunnel.Tests.Kubernetes.FakeApiServer;

namespace Wormhole.Tunnel.Tests.Kubernetes;

/// <summary>kubeconfig and in-cluster loading, checked by talking to a real (fake) apiserver over HTTP and HTTPS.</summary>
public sealed class KubeConfigTests : IDisposable
{
    private static readonly Func<string, string?> NoEnvironment = _ => null;

    private readonly string _dir = Directory.CreateTempSubdirectory("wormhole-kubeconfig-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task Token_of_the_current_context_is_sent_as_bearer_and_its_namespace_is_exposed()
    {
        await using var api = await StartApiAsync();
        var path = WriteKubeconfig(api.Url, user: "token: s3cr3t-token", ns: "team-a");

        var config = KubeConfig.Load(path);
        await ListAsync(config);

        config.Namespace.Should().Be("team-a");
        config.Server.Should().Be(api.Url);
        api.Requests.Single().Authorization.Should().Be("Bearer s3cr3t-token");
    }

    [Fact]
    public async Task Token_file_is_read_again_when_it_changes()
    {
        await using var api = await StartApiAsync();
        var tokenFile = Path.Combine(_dir, "token");
        File.WriteAllText(tokenFile, "first\n");
        File.SetLastWriteTimeUtc(tokenFile, DateTime.UtcNow.AddMinutes(-5));
        var config = KubeConfig.Load(WriteKubeconfig(api.Url, user: "tokenFile: token"));

        await ListAsync(config);
        File.WriteAllText(tokenFile, "second\n");
        File.SetLastWriteTimeUtc(tokenFile, DateTime.UtcNow);
        await ListAsync(config);

        api.Requests.Select(r => r.Authorization).Should().Equal("Bearer first", "Bearer second");
    }

    [Fact]
    public async Task Username_and_password_are_sent_as_basic_auth()
    {
        await using var api = await StartApiAsync();

        await ListAsync(KubeConfig.Load(WriteKubeconfig(api.Url, user: "username: admin\n    password: pa55")));

        api.Requests.Single().Authorization.Should().Be($"Basic {Convert.ToBase64String(Encoding.UTF8.GetBytes("admin:pa55"))}");
    }

    [Fact]
    public async Task Certificate_authority_data_trusts_a_server_certificate_it_issued()
    {
        using var ca = new TestCertificateAuthority("cluster-ca");
        await using var api = await StartApiAsync(ca.IssueServer());
        var cluster = $"certificate-authority-data: {Base64(ca.Pem)}";

        var list = await ListAsync(KubeConfig.Load(WriteKubeconfig(api.Url, cluster: cluster, user: "token: t")));

        list.Metadata.ResourceVersion.Should().Be("1");
        api.Url.Scheme.Should().Be("https");
    }

    [Fact]
    public async Task Server_certificate_from_another_authority_is_rejected()
    {
        using var ca = new TestCertificateAuthority("cluster-ca");
        using var stranger = new TestCertificateAuthority("someone-else");
        await using var api = await StartApiAsync(stranger.IssueServer());
        var config = KubeConfig.Load(WriteKubeconfig(api.Url, cluster: $"certificate-authority-data: {Base64(ca.Pem)}", user: "token: t"));

        var act = () => ListAsync(config);

        (await act.Should().ThrowAsync<HttpRequestException>()).WithInnerException<AuthenticationException>();
        api.Requests.Should().BeEmpty("the token must not reach an untrusted server");
    }

    [Fact]
    public async Task Insecure_skip_tls_verify_accepts_any_server_certificate()
    {
        using var stranger = new TestCertificateAuthority("someone-else");
        await using var api = await StartApiAsync(stranger.IssueServer());

        var list = await ListAsync(KubeConfig.Load(WriteKubeconfig(api.Url, cluster: "insecure-skip-tls-verify: true")));

        list.Items.Should().BeEmpty();
    }

    [Fact]
    public async Task Client_certificate_data_is_presented_to_the_server()
    {
        using var ca = new TestCertificateAuthority("cluster-ca");
        await using var api = await StartApiAsync(ca.IssueServer(), requireClientCertificate: true);
        using var client = ca.IssueClient("system:wormhole");
        var (certificate, key) = TestCertificateAuthority.ToPem(client);
        var user = $"client-certificate-data: {Base64(certificate)}\n    client-key-data: {Base64(key)}";

        await ListAsync(KubeConfig.Load(WriteKubeconfig(api.Url, cluster: $"certificate-authority-data: {Base64(ca.Pem)}", user: user)));

        api.Requests.Single().ClientCertificateSubject.Should().Be("CN=system:wormhole");
        api.Requests.Single().Authorization.Should().BeNull();
    }

    [Fact]
    public async Task Certificate_files_are_found_relative_to_the_kubeconfig()
    {
        using var ca = new TestCertificateAuthority("cluster-ca");
        await using var api = await StartApiAsync(ca.IssueServer(), requireClientCertificate: true);
        using var client = ca.IssueClient("file-user");
        var (certificate, key) = TestCertificateAuthority.ToPem(client);
        Directory.CreateDirectory(Path.Combine(_dir, "pki"));
        File.WriteAllText(Path.Combine(_dir, "pki", "ca.crt"), ca.Pem);
        File.WriteAllText(Path.Combine(_dir, "pki", "user.crt"), certificate);
        File.WriteAllText(Path.Combine(_dir, "pki", "user.key"), key);
        var path = WriteKubeconfig(api.Url, cluster: "certificate-authority: pki/ca.crt", user: "client-certificate: pki/user.crt\n    client-key: pki/user.key");

        await ListAsync(KubeConfig.Load(path));

        api.Requests.Single().ClientCertificateSubject.Should().Be("CN=file-user");
    }

    [Fact]
    public async Task In_cluster_uses_the_service_account_token_ca_and_namespace_and_follows_token_rotation()
    {
        using var ca = new TestCertificateAuthority("cluster-ca");
        await using var api = await StartApiAsync(ca.IssueServer());
        var account = Directory.CreateDirectory(Path.Combine(_dir, "serviceaccount")).FullName;
        ProjectServiceAccount(account, "..2026_01_01", "bound-token-1", ca.Pem);
        foreach (var file in new[] { "token", "ca.crt", "namespace" })
        {
            File.CreateSymbolicLink(Path.Combine(account, file), Path.Combine("..data", file));
        }

        var environment = Environment(("KUBERNETES_SERVICE_HOST", "127.0.0.1"), ("KUBERNETES_SERVICE_PORT", api.Url.Port.ToString()), ("KUBECONFIG", "/nowhere"));

        var config = KubeConfig.Load(null, environment, account, home: null);
        await ListAsync(config);
        ProjectServiceAccount(account, "..2026_01_02", "bound-token-2", ca.Pem);
        await ListAsync(config);

        config.Source.Should().Be("in-cluster");
        config.Server.Should().Be(new Uri($"https://127.0.0.1:{api.Url.Port}"));
        config.Namespace.Should().Be("wormhole");
        api.Requests.Select(r => r.Authorization).Should().Equal("Bearer bound-token-1", "Bearer bound-token-2");
    }

    [Fact]
    public void Without_a_service_account_the_first_file_of_KUBECONFIG_is_used()
    {
        var first = WriteKubeconfig(new Uri("https://first.example:6443"), file: "first");
        var second = WriteKubeconfig(new Uri("https://second.example:6443"), file: "second");
        var environment = Environment(("KUBERNETES_SERVICE_HOST", "10.0.0.1"), ("KUBERNETES_SERVICE_PORT", "443"), ("KUBECONFIG", $"{first}:{second}"));

        var config = KubeConfig.Load(null, environment, Path.Combine(_dir, "no-serviceaccount"), home: null);

        config.Server.Should().Be(new Uri("https://first.example:6443"));
    }

    [Fact]
    public void Without_KUBECONFIG_the_home_kube_config_is_used()
    {
        Directory.CreateDirectory(Path.Combine(_dir, ".kube"));
        File.Move(WriteKubeconfig(new Uri("https://home.example:6443")), Path.Combine(_dir, ".kube", "config"));

        var config = KubeConfig.Load(null, NoEnvironment, Path.Combine(_dir, "no-serviceaccount"), home: _dir);

        config.Server.Should().Be(new Uri("https://home.example:6443"));
    }

    [Fact]
    public void Missing_file_is_a_one_sentence_error_naming_it()
    {
        var path = Path.Combine(_dir, "absent");

        var act = () => KubeConfig.Load(path);

        act.Should().Throw<KubeConfigException>().WithMessage($"The kubeconfig file {path} does not exist.");
    }

    [Fact]
    public void Current_context_that_is_not_defined_is_an_error_naming_it()
    {
        var path = Path.Combine(_dir, "config");
        File.WriteAllText(path, "apiVersion: v1\nkind: Config\ncurrent-context: prod\ncontexts: []\n");

        var act = () => KubeConfig.Load(path);

        act.Should().Throw<KubeConfigException>().WithMessage($"The kubeconfig file {path} has no context named prod.");
    }

    [Fact]
    public void Exec_credential_plugins_are_refused_as_unsupported()
    {
        var path = WriteKubeconfig(
            new Uri("https://eks.example"), user: "exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: aws\n      args: [eks, get-token]");

        var act = () => KubeConfig.Load(path);

        act.Should().Throw<KubeConfigException>().WithMessage("*exec credential plugin (aws)*not supported*");
    }

    private static async Task<FakeApiServer> StartApiAsync(X509Certificate2? certificate = null, bool requireClientCertificate = false)
    {
        var api = await StartAsync(certificate, requireClientCertificate);
        api.Handler = (c, _) => Respond(c, 200, ServiceList("1"));
        return api;
    }

    private static async Task<KubeList<Service>> ListAsync(KubeConfig config)
    {
        using var client = new KubernetesClient(config);
        return await client.ListAsync<Service>("apps", null, CancellationToken.None);
    }

    /// <summary>Writes the files as the kubelet does: into a fresh timestamped directory, then points the ..data link at it.</summary>
    private static void ProjectServiceAccount(string account, string version, string token, string caPem)
    {
        var directory = Directory.CreateDirectory(Path.Combine(account, version)).FullName;
        File.WriteAllText(Path.Combine(directory, "token"), token);
        File.WriteAllText(Path.Combine(directory, "ca.crt"), caPem);
        File.WriteAllText(Path.Combine(directory, "namespace"), "wormhole\n");
        var data = Path.Combine(account, "..data");
        File.Delete(data); // the kubelet renames a new link over the old one; delete-and-link is the same for one reader
        File.CreateSymbolicLink(data, version);
    }

    private static string Base64(string text) => Convert.ToBase64String(Encoding.UTF8.GetBytes(text));

    private static Func<string, string?> Environment(params (string Name, string Value)[] variables) =>
        name => variables.FirstOrDefault(v => v.Name == name).Value;

    private string WriteKubeconfig(Uri server, string cluster = "", string user = "token: t", string? ns = null, string file = "config")
    {
        var path = Path.Combine(_dir, file);
        File.WriteAllText(path, $$"""
            apiVersion: v1
            kind: Config
            current-context: test
            preferences: {}
            clusters:
            - name: other
              cluster:
                server: https://other.example
            - name: fake
              cluster:
                server: {{server.AbsoluteUri.TrimEnd('/')}}
                {{cluster}}
            contexts:
            - name: test
              context:
                cluster: fake
                user: tester
                {{(ns is null ? "" : $"namespace: {ns}")}}
            users:
            - name: tester
              user:
                {{user}}
            """);
        return path;
    }
}
