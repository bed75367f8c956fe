using System.Text;
using k8s.Models;
using Microsoft.Extensions.Logging.Abstractions;
using Wormhole.Tunnel.Kubernetes;

namespace Wormhole.Tunnel.Tests.Kubernetes;

/// <summary>
/// The credentials our own transport carries that the emulator does not check: a client certificate and key (as data in
/// the kubeconfig and as files next to it) presented to an apiserver that requires one, and basic auth.
/// </summary>
public sealed class KubeTransportTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("wormhole-kubetransport-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_client_certificate_from_the_kubeconfig_is_presented_to_an_apiserver_that_requires_one(bool asData)
    {
        using var authority = new TestCertificateAuthority("test-ca");
        using var serving = authority.IssueServer();
        using var client = authority.IssueClient("spoke-user");
        await using var server = await FakeApiServer.StartAsync(serving, requireClientCertificate: true);
        server.Handler = (context, _) => FakeApiServer.Respond(context, 200, FakeApiServer.ServiceJson("web", "7"));
        var (certificate, key) = TestCertificateAuthority.ToPem(client);
        string user;
        if (asData)
        {
            user = $"client-certificate-data: {B64(certificate)}\n    client-key-data: {B64(key)}";
        }
        else
        {
            File.WriteAllText(Path.Combine(_dir, "client.crt"), certificate);
            File.WriteAllText(Path.Combine(_dir, "client.key"), key);
            user = "client-certificate: client.crt\n    client-key: client.key";
        }

        using var api = new KubeApi(Load(server.Url, $"certificate-authority-data: {B64(authority.Pem)}", user), TimeProvider.System, NullLogger.Instance);

        (await api.GetAsync<V1Service>("apps", "web", CancellationToken.None))!.Metadata.ResourceVersion.Should().Be("7");
        server.Requests.Should().ContainSingle().Which.ClientCertificateSubject.Should().Be("CN=spoke-user");
    }

    [Fact]
    public async Task Basic_auth_of_the_kubeconfig_user_is_sent_on_every_request()
    {
        await using var server = await FakeApiServer.StartAsync();
        server.Handler = (context, _) => FakeApiServer.Respond(context, 200, FakeApiServer.ServiceJson("web", "3"));
        using var api = new KubeApi(Load(server.Url, "", "username: admin\n    password: s3cr:et"), TimeProvider.System, NullLogger.Instance);

        await api.GetAsync<V1Service>("apps", "web", CancellationToken.None);
        await api.GetAsync<V1Service>("apps", "web", CancellationToken.None);

        server.Requests.Select(r => r.Authorization).Should().Equal([$"Basic {B64("admin:s3cr:et")}", $"Basic {B64("admin:s3cr:et")}"]);
    }

    private static string B64(string text) => Convert.ToBase64String(Encoding.UTF8.GetBytes(text));

    private KubeConnection Load(Uri server, string cluster, string user)
    {
        var path = Path.Combine(_dir, "config");
        File.WriteAllText(path, $"""
            apiVersion: v1
            kind: Config
            current-context: c
            clusters:
            - name: k
              cluster:
                server: {server.ToString().TrimEnd('/')}
                {cluster}
            users:
            - name: u
              user:
                {user}
            contexts:
            - name: c
              context:
                cluster: k
                user: u
                namespace: apps
            """);
        return KubeConnection.Load(new KubeConfigSources { Kubeconfig = path, Environment = _ => null, Home = null, InCluster = () => false });
    }
}
