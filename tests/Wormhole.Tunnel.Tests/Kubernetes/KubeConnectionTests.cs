using System.Globalization;
using System.Security.Authentication;
using System.Text;
using System.Text.Json.Nodes;
using k8s;
using k8s.Models;
using Microsoft.Extensions.Logging.Abstractions;
using Wormhole.Tunnel.Kubernetes;
using Emulator = Wormhole.Tunnel.KubeEmulator.KubeEmulator;
using EmulatorOptions = Wormhole.Tunnel.KubeEmulator.KubeEmulatorOptions;

namespace Wormhole.Tunnel.Tests.Kubernetes;

/// <summary>
/// The kubeconfig matrix against the apiserver emulator (HTTPS with its own CA, bearer tokens): where the
/// configuration comes from, how the user authenticates, and what happens when the token rotates or the server throttles.
/// </summary>
public sealed class KubeConnectionTests : IAsyncLifetime
{
    private static readonly Func<string, string?> NoEnvironment = _ => null;

    private readonly string _dir = Directory.CreateTempSubdirectory("wormhole-kubeconfig-").FullName;
    private Emulator _api = null!;

    public async Task InitializeAsync() => _api = await Emulator.StartAsync();

    public async Task DisposeAsync()
    {
        await _api.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    [Fact]
    public async Task Static_token_of_the_current_context_reaches_the_apiserver_and_its_namespace_is_read()
    {
        var path = _api.WriteKubeconfig(Path.Combine(_dir, "config"));

        using var connection = Load(Isolated with { Kubeconfig = path });

        (await NamesAsync(connection)).Should().Contain("kubernetes");
        connection.Namespace.Should().Be("default");
        connection.Context.Should().Be("emulator");
        connection.CanReloadCredentials.Should().BeFalse("a static token cannot be reloaded");
        connection.ToString().Should().NotContain(_api.Token);
    }

    [Fact]
    public async Task Token_file_is_read_again_after_a_401_when_the_token_rotated()
    {
        var tokenFile = Path.Combine(_dir, "token");
        File.WriteAllText(tokenFile, _api.Token + "\n");
        var written = File.GetLastWriteTimeUtc(tokenFile);
        using var connection = Load(Isolated with { Kubeconfig = Kubeconfig(user: "tokenFile: token") });
        await NamesAsync(connection);

        // The token rotates; the file is rewritten with the same timestamp, so only the 401 can tell.
        _api.RotateToken("rotated-token");
        File.WriteAllText(tokenFile, "rotated-token\n");
        File.SetLastWriteTimeUtc(tokenFile, written);
        var before = _api.Requests.Count;
        (await NamesAsync(connection)).Should().Contain("kubernetes");

        _api.Requests.Skip(before).Should().HaveCount(2, "one refused with 401, then the same request with the new token");
    }

    [Fact]
    public async Task Exec_plugin_token_is_used_and_the_plugin_runs_again_after_a_401()
    {
        var plugin = ExecPlugin(TimeSpan.FromHours(1));
        using var connection = Load(Isolated with { Kubeconfig = Kubeconfig(user: plugin.User) });
        await NamesAsync(connection);
        await NamesAsync(connection);
        var runs = plugin.Runs();

        _api.RotateToken("after-rotation");
        File.WriteAllText(plugin.TokenPath, "after-rotation");
        (await NamesAsync(connection)).Should().Contain("kubernetes");

        connection.CanReloadCredentials.Should().BeTrue();
        plugin.Runs().Should().Be(runs + 1, "the token is kept until it expires or is refused, then the plugin runs once more");
    }

    [Fact]
    public async Task Exec_token_close_to_its_expiration_timestamp_is_fetched_again_before_use()
    {
        var plugin = ExecPlugin(TimeSpan.FromSeconds(20)); // within the 30 s margin: stale at once
        using var connection = Load(Isolated with { Kubeconfig = Kubeconfig(user: plugin.User) });
        await NamesAsync(connection);
        var runs = plugin.Runs();

        await NamesAsync(connection);

        plugin.Runs().Should().Be(runs + 1);
    }

    [Fact]
    public async Task KUBECONFIG_files_are_merged_and_the_first_to_set_a_key_wins()
    {
        // first: current-context and the right user; second (another directory, relative CA path): the cluster, the
        // context, a wrong user of the same name and another current-context.
        var first = Path.Combine(_dir, "first");
        File.WriteAllText(first, $$"""
            apiVersion: v1
            kind: Config
            current-context: emu
            users:
            - name: emu-user
              user:
                token: {{_api.Token}}
            """);
        var other = Directory.CreateDirectory(Path.Combine(_dir, "other")).FullName;
        File.WriteAllText(Path.Combine(other, "ca.crt"), _api.CertificateAuthorityPem);
        var second = Path.Combine(other, "second");
        File.WriteAllText(second, $$"""
            apiVersion: v1
            kind: Config
            current-context: elsewhere
            clusters:
            - name: emu
              cluster:
                server: {{_api.Url}}
                certificate-authority: ca.crt
            contexts:
            - name: emu
              context: {cluster: emu, user: emu-user, namespace: merged}
            - name: elsewhere
              context: {cluster: emu, user: emu-user}
            users:
            - name: emu-user
              user:
                token: wrong
            """);
        var missing = Path.Combine(_dir, "missing");

        using var connection = Load(Isolated with { Environment = Env(("KUBECONFIG", $"{first}:{missing}:{second}")) });

        (await NamesAsync(connection)).Should().Contain("kubernetes");
        connection.Context.Should().Be("emu");
        connection.Namespace.Should().Be("merged");
        connection.Source.Should().Be($"$KUBECONFIG {first}:{second}", "files of the list that do not exist are skipped");
    }

    [Fact]
    public async Task Kube_context_overrides_the_current_context()
    {
        var path = Kubeconfig(extraContexts: "- name: broken\n  context: {cluster: nowhere, user: tester}\n", currentContext: "broken");

        using var connection = Load(Isolated with { Kubeconfig = path, Context = "test" });

        (await NamesAsync(connection)).Should().Contain("kubernetes");
        connection.Context.Should().Be("test");
    }

    [Fact]
    public void Unknown_kube_context_is_a_one_sentence_error_listing_the_contexts()
    {
        var path = Kubeconfig();

        var act = () => Load(Isolated with { Kubeconfig = path, Context = "prod" });

        act.Should().Throw<KubeConfigException>().WithMessage("*has no context named prod (--kube-context); it has: test.");
    }

    [Fact]
    public async Task Kubeconfig_flag_beats_KUBECONFIG()
    {
        var good = Kubeconfig();
        var bad = Kubeconfig(file: "bad", server: "https://127.0.0.1:1");

        using var connection = Load(Isolated with { Kubeconfig = good, Environment = Env(("KUBECONFIG", bad)) });

        (await NamesAsync(connection)).Should().Contain("kubernetes");
        connection.Source.Should().Be($"--kubeconfig {good}");
    }

    [Fact]
    public async Task KUBECONFIG_beats_in_cluster()
    {
        var path = Kubeconfig();
        var inClusterAsked = false;

        using var connection = Load(Isolated with
        {
            Environment = Env(("KUBECONFIG", path), ("KUBERNETES_SERVICE_HOST", "10.96.0.1"), ("KUBERNETES_SERVICE_PORT", "443")),
            InCluster = () => inClusterAsked = true,
        });

        (await NamesAsync(connection)).Should().Contain("kubernetes");
        inClusterAsked.Should().BeFalse();
    }

    [Fact]
    public async Task In_cluster_beats_the_home_kube_config_and_its_token_file_is_read_again_after_a_401()
    {
        // The library reads the service account from a fixed directory; its configuration is stood in for here.
        Directory.CreateDirectory(Path.Combine(_dir, ".kube"));
        File.Copy(Kubeconfig(file: "home", server: "https://127.0.0.1:1"), Path.Combine(_dir, ".kube", "config"));
        var token = Path.Combine(_dir, "sa-token");
        File.WriteAllText(token, _api.Token);
        var written = File.GetLastWriteTimeUtc(token);
        var ca = new System.Security.Cryptography.X509Certificates.X509Certificate2Collection();
        ca.ImportFromPem(_api.CertificateAuthorityPem);

        using var connection = Load(Isolated with
        {
            Environment = NoEnvironment,
            Home = _dir,
            InCluster = () => true,
            InClusterConfig = () => (new KubernetesClientConfiguration { Host = _api.Url, SslCaCerts = ca, Namespace = "wormhole\n" }, token),
        });
        await NamesAsync(connection);
        _api.RotateToken("bound-token-2");
        File.WriteAllText(token, "bound-token-2");
        File.SetLastWriteTimeUtc(token, written);

        (await NamesAsync(connection)).Should().Contain("kubernetes");
        connection.Source.Should().Be("in-cluster");
        connection.Namespace.Should().Be("wormhole");
    }

    [Fact]
    public void In_cluster_with_a_kube_context_is_refused()
    {
        var act = () => Load(Isolated with { Environment = NoEnvironment, Context = "prod", InCluster = () => true });

        act.Should().Throw<KubeConfigException>().WithMessage("--kube-context prod needs a kubeconfig*");
    }

    [Fact]
    public void Nothing_found_names_every_place_looked_at()
    {
        var act = () => Load(Isolated with { Environment = NoEnvironment, Home = _dir, InCluster = () => false });

        act.Should().Throw<KubeConfigException>().WithMessage($"No Kubernetes configuration found*{Path.Combine(_dir, ".kube", "config")} does not exist.");
    }

    [Fact]
    public async Task Tls_server_name_is_the_name_the_server_certificate_is_checked_against()
    {
        await using var named = await Emulator.StartAsync(new EmulatorOptions { CertificateDnsNames = ["apiserver.cluster.test"] });
        var ca = Convert.ToBase64String(Encoding.ASCII.GetBytes(named.CertificateAuthorityPem!));
        var cluster = $"certificate-authority-data: {ca}";

        using var without = Load(Isolated with { Kubeconfig = Kubeconfig(file: "without", server: named.Url, cluster: cluster, user: $"token: {named.Token}") });
        using var with = Load(Isolated with
        {
            Kubeconfig = Kubeconfig(file: "with", server: named.Url, cluster: cluster + "\n    tls-server-name: apiserver.cluster.test", user: $"token: {named.Token}"),
        });

        var refused = () => NamesAsync(without);
        (await refused.Should().ThrowAsync<HttpRequestException>()).WithInnerException<AuthenticationException>();
        (await NamesAsync(with)).Should().Contain("kubernetes");
        named.Requests.Should().HaveCount(1, "the token never reached the server whose certificate did not name the address");
    }

    [Fact]
    public async Task Impersonation_sends_the_user_and_the_group_on_lists_and_watches()
    {
        using var connection = Load(Isolated with { Kubeconfig = Kubeconfig(user: $"token: {_api.Token}\n    as: alice\n    as-groups: [devs]") });
        using var api = new KubeApi(connection, TimeProvider.System, NullLogger.Instance);

        var list = await api.ListAsync<V1Service>("default", null, CancellationToken.None);
        using var stop = new CancellationTokenSource();
        await using var watch = api.WatchAsync<V1Service>("default", null, list.ResourceVersion!, stop.Token).GetAsyncEnumerator();
        _api.Apply("""{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"default"},"spec":{"ports":[{"port":80}]}}""");
        (await watch.MoveNextAsync()).Should().BeTrue();

        _api.Impersonations.Select(i => (i.Request, i.User, string.Join(",", i.Groups))).Should().Equal(
            ("GET /api/v1/namespaces/default/services", "alice", "devs"),
            ("GET /api/v1/namespaces/default/services", "alice", "devs"));
        await stop.CancelAsync();
    }

    [Fact]
    public void Impersonating_several_groups_is_refused_rather_than_sent_as_one_joined_group()
    {
        var path = Kubeconfig(user: $"token: {_api.Token}\n    as: alice\n    as-groups: [devs, ops]");

        var act = () => Load(Isolated with { Kubeconfig = path });

        act.Should().Throw<KubeConfigException>().WithMessage("*impersonates 2 groups*only one is supported*");
    }

    [Fact]
    public void Auth_provider_is_refused_naming_the_exec_plugin_to_use()
    {
        var path = Kubeconfig(user: "auth-provider:\n      name: oidc\n      config: {id-token: x, idp-issuer-url: https://issuer.example}");

        var act = () => Load(Isolated with { Kubeconfig = path });

        act.Should().Throw<KubeConfigException>().WithMessage("*auth-provider 'oidc'*not support*exec credential plugin*");
    }

    [Fact]
    public async Task Throttled_requests_wait_for_retry_after_and_then_succeed()
    {
        var time = new ManualTimeProvider();
        using var connection = Load(Isolated with { Kubeconfig = _api.WriteKubeconfig(Path.Combine(_dir, "config")) });
        using var api = new KubeApi(connection, time, NullLogger.Instance);
        _api.ThrottleNext(2, retryAfterSeconds: 7);

        var list = api.ListAsync<V1Service>("default", null, CancellationToken.None);
        for (var throttled = 1; throttled <= 2; throttled++)
        {
            await Eventually.HoldsAsync(() => time.PendingTimers.Contains(TimeSpan.FromSeconds(7)), $"retry {throttled} to wait for Retry-After");
            list.IsCompleted.Should().BeFalse();
            time.Advance(TimeSpan.FromSeconds(7));
        }

        (await list.WaitAsync(TimeSpan.FromSeconds(10))).Items.Select(s => s.Metadata.Name).Should().Contain("kubernetes");
        _api.Requests.Should().HaveCount(3);
    }

    [Fact]
    public async Task Lists_are_read_page_by_page_with_limit_and_continue()
    {
        _api.Apply(new JsonObject { ["apiVersion"] = "v1", ["kind"] = "Namespace", ["metadata"] = new JsonObject { ["name"] = "paged" } });
        for (var i = 0; i < 25; i++)
        {
            _api.Apply($$$"""{"apiVersion":"v1","kind":"Service","metadata":{"name":"svc-{{{i.ToString("00", CultureInfo.InvariantCulture)}}}","namespace":"paged"},"spec":{"ports":[{"port":80}]}}""");
        }

        using var connection = Load(Isolated with { Kubeconfig = _api.WriteKubeconfig(Path.Combine(_dir, "config")) });
        using var api = new KubeApi(connection, TimeProvider.System, NullLogger.Instance) { PageSize = 4 };

        var list = await api.ListAsync<V1Service>("paged", null, CancellationToken.None);

        list.Items.Select(s => s.Metadata.Name).Should().Equal(Enumerable.Range(0, 25).Select(i => $"svc-{i:00}"));
        list.ResourceVersion.Should().Be(_api.ResourceVersion.ToString(CultureInfo.InvariantCulture));
        var pages = _api.Requests.Where(r => r.StartsWith("GET /api/v1/namespaces/paged/services", StringComparison.Ordinal)).ToList();
        pages.Should().HaveCount(7).And.OnlyContain(r => r.Contains("limit=4", StringComparison.Ordinal));
        pages.Skip(1).Should().OnlyContain(r => r.Contains("continue=", StringComparison.Ordinal));
    }

    /// <summary>Nothing from this machine: no environment, no home directory, not in a cluster.</summary>
    private static KubeConfigSources Isolated => new() { Environment = NoEnvironment, Home = null, InCluster = () => false };

    private static KubeConnection Load(KubeConfigSources sources) => KubeConnection.Load(sources);

    private static Func<string, string?> Env(params (string Name, string Value)[] variables) => name => variables.FirstOrDefault(v => v.Name == name).Value;

    private async Task<List<string>> NamesAsync(KubeConnection connection)
    {
        var api = new KubeApi(connection.Transport, TimeProvider.System, NullLogger.Instance, connection.CanReloadCredentials ? connection.ReloadCredentials : null);
        return [.. (await api.ListAsync<V1Service>("default", null, CancellationToken.None)).Items.Select(s => s.Metadata.Name)];
    }

    /// <summary>A sh script printing an ExecCredential whose token is the content of a file; it counts its runs.</summary>
    private (string User, string TokenPath, Func<int> Runs) ExecPlugin(TimeSpan expiresIn)
    {
        var tokenPath = Path.Combine(_dir, "exec-token");
        var runs = Path.Combine(_dir, "exec-runs");
        File.WriteAllText(tokenPath, _api.Token);
        var script = Path.Combine(_dir, "plugin.sh");
        var expires = DateTime.UtcNow.Add(expiresIn).ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture);
        File.WriteAllText(script, $$$"""
            #!/bin/sh
            echo run >> "$PLUGIN_DIR/exec-runs"
            printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"%s","expirationTimestamp":"{{{expires}}}"}}' "$(cat "$PLUGIN_DIR/exec-token")"
            """);
        var user = $"""
            exec:
                  apiVersion: client.authentication.k8s.io/v1
                  command: /bin/sh
                  args: [{script}]
                  env:
                  - name: PLUGIN_DIR
                    value: {_dir}
            """;
        return (user, tokenPath, () => File.Exists(runs) ? File.ReadAllLines(runs).Length : 0);
    }

    private string Kubeconfig(string? server = null, string? cluster = null, string? user = null, string file = "config", string extraContexts = "", string currentContext = "test")
    {
        cluster ??= $"certificate-authority-data: {Convert.ToBase64String(Encoding.ASCII.GetBytes(_api.CertificateAuthorityPem!))}";
        user ??= $"token: {_api.Token}";
        var path = Path.Combine(_dir, file);
        File.WriteAllText(path, $$"""
            apiVersion: v1
            kind: Config
            current-context: {{currentContext}}
            clusters:
            - name: nowhere
              cluster:
                server: https://127.0.0.1:1
            - name: emu
              cluster:
                server: {{server ?? _api.Url}}
                {{cluster}}
            contexts:
            - name: test
              context: {cluster: emu, user: tester}
            {{extraContexts}}
            users:
            - name: tester
              user:
                {{user}}
            """);
        return path;
    }
}
