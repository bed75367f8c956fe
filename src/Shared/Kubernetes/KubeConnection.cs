using System.Net.Http.Headers;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using k8s;
using k8s.Authentication;
using k8s.KubeConfigModels;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Wormhole.Tunnel.Kubernetes;

/// <summary>The Kubernetes connection settings are missing or unusable; the message is one sentence for the user.</summary>
/// <param name="nothingFound">No configuration anywhere (rather than one that is wrong).</param>
public sealed class KubeConfigException(string message, Exception? inner = null, bool nothingFound = false) : Exception(message, inner)
{
    public bool NothingFound { get; } = nothingFound;
}

/// <summary>Where the configuration comes from, as kubectl looks for it; every piece can be replaced in tests.</summary>
public sealed record KubeConfigSources
{
    /// <summary>--kubeconfig: this file alone.</summary>
    public string? Kubeconfig { get; init; }

    /// <summary>--kube-context: overrides the current-context.</summary>
    public string? Context { get; init; }

    public Func<string, string?> Environment { get; init; } = System.Environment.GetEnvironmentVariable;

    /// <summary>The home directory holding <c>.kube/config</c>; null when there is none.</summary>
    public string? Home { get; init; } = System.Environment.GetFolderPath(System.Environment.SpecialFolder.UserProfile) is { Length: > 0 } home ? home : null;

    /// <summary>Whether the service account is mounted and KUBERNETES_SERVICE_HOST/PORT are set (the library's check by default).</summary>
    public Func<bool> InCluster { get; init; } = KubernetesClientConfiguration.IsInCluster;

    /// <summary>The in-cluster configuration and the token file it authenticates with.</summary>
    public Func<(KubernetesClientConfiguration Config, string TokenFile)> InClusterConfig { get; init; } = static () =>
        (KubernetesClientConfiguration.InClusterConfig(), "/var/run/secrets/kubernetes.io/serviceaccount/token");
}

/// <summary>
/// A connection to one apiserver, configured as kubectl is: <c>--kubeconfig</c>, else <c>$KUBECONFIG</c> (a colon-separated
/// list, merged: the first file to set a key wins), else in-cluster (service-account token and CA), else
/// <c>~/.kube/config</c>. Parsing and running exec plugins are KubernetesClient's; the transport is
/// <see cref="KubeTransport"/> (built from the library's configuration, without the library's client). On top of the
/// library this adds what its AOT flavour lacks: the merge with per-file relative paths, <c>tokenFile</c>, impersonation
/// (<c>as</c>, <c>as-groups</c>, <c>as-user-extra</c>), a server certificate check that also checks the name, and
/// credentials that can be reloaded after a 401 (exec plugin run again, token file read again).
/// Holds credentials: <see cref="ToString"/> names only where they come from.
/// </summary>
public sealed class KubeConnection : IDisposable
{
    private readonly IReloadableCredential? _credential;

    private KubeConnection(KubeTransport transport, string source, string? context, string server, string? ns, string? tlsServerName, IReloadableCredential? credential)
    {
        Transport = transport;
        Source = source;
        Context = context;
        Server = server;
        Namespace = ns;
        TlsServerName = tlsServerName;
        _credential = credential;
    }

    /// <summary>The transport every request goes through (TLS, credentials, impersonation).</summary>
    public KubeTransport Transport { get; }

    /// <summary>"in-cluster", "--kubeconfig FILE", "$KUBECONFIG FILE:FILE" or "~/.kube/config FILE".</summary>
    public string Source { get; }

    /// <summary>The context used; null in-cluster.</summary>
    public string? Context { get; }

    public string Server { get; }

    /// <summary>The context's namespace, or the service account's in-cluster.</summary>
    public string? Namespace { get; }

    /// <summary>The cluster's tls-server-name: the name the server certificate is checked against (and sent as SNI).</summary>
    public string? TlsServerName { get; }

    /// <summary>Forgets the cached credential so the next request fetches a fresh one; false when it is static (nothing to reload).</summary>
    public bool ReloadCredentials()
    {
        if (_credential is null)
        {
            return false;
        }

        _credential.Invalidate();
        return true;
    }

    /// <summary>Whether a 401 can be answered by reloading (exec plugin, token file, service-account token).</summary>
    public bool CanReloadCredentials => _credential is not null;

    public static KubeConnection Load(KubeConfigSources sources)
    {
        if (!string.IsNullOrEmpty(sources.Kubeconfig))
        {
            var path = Path.GetFullPath(sources.Kubeconfig);
            if (!File.Exists(path))
            {
                throw new KubeConfigException($"The kubeconfig file {sources.Kubeconfig} (--kubeconfig) does not exist.");
            }

            return FromFiles([path], $"--kubeconfig {path}", sources.Context);
        }

        var list = sources.Environment("KUBECONFIG");
        if (!string.IsNullOrWhiteSpace(list))
        {
            // As kubectl: files of the list that do not exist are skipped.
            var files = list.Split(':', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(Path.GetFullPath).Distinct().ToList();
            var existing = files.Where(File.Exists).ToList();
            return existing.Count > 0
                ? FromFiles(existing, $"$KUBECONFIG {string.Join(':', existing)}", sources.Context)
                : throw new KubeConfigException($"None of the files in $KUBECONFIG exist ({string.Join(", ", files)}).");
        }

        if (sources.InCluster())
        {
            if (!string.IsNullOrEmpty(sources.Context))
            {
                throw new KubeConfigException($"--kube-context {sources.Context} needs a kubeconfig, but the configuration is in-cluster (no --kubeconfig, $KUBECONFIG unset).");
            }

            return InCluster(sources);
        }

        var home = sources.Home is null ? null : Path.Combine(sources.Home, ".kube", "config");
        return home is not null && File.Exists(home)
            ? FromFiles([home], $"~/.kube/config {home}", sources.Context)
            : throw new KubeConfigException(
                $"No Kubernetes configuration found: --kubeconfig not given, $KUBECONFIG unset, not in a cluster and {home ?? "~/.kube/config"} does not exist.", nothingFound: true);
    }

    public void Dispose() => Transport.Dispose();

    public override string ToString() => $"{Source}{(Context is null ? "" : $" (context {Context})")}, server {Server}";

    private static KubeConnection InCluster(KubeConfigSources sources)
    {
        KubernetesClientConfiguration config;
        string tokenFile;
        try
        {
            (config, tokenFile) = sources.InClusterConfig();
        }
        catch (Exception ex) when (ex is k8s.Exceptions.KubeConfigException or IOException or System.Security.Cryptography.CryptographicException)
        {
            throw new KubeConfigException($"The in-cluster Kubernetes configuration is unusable: {ex.Message}", ex);
        }

        var credential = new TokenFileCredential(tokenFile);
        config.TokenProvider = credential;
        config.Namespace = config.Namespace?.Trim();
        return Build(config, "in-cluster", null, credential, null);
    }

    private static KubeConnection FromFiles(IReadOnlyList<string> files, string source, string? contextOverride)
    {
        var merged = Merge(files, out var tokenFiles);
        var contextName = string.IsNullOrEmpty(contextOverride) ? merged.CurrentContext : contextOverride;
        if (string.IsNullOrEmpty(contextName))
        {
            throw new KubeConfigException($"The Kubernetes configuration from {source} has no current-context; pass --kube-context.");
        }

        var context = merged.Contexts.FirstOrDefault(c => string.Equals(c.Name, contextName, StringComparison.Ordinal))
            ?? throw new KubeConfigException(
                $"The Kubernetes configuration from {source} has no context named {contextName}{(contextOverride is null ? "" : " (--kube-context)")}; it has: {string.Join(", ", merged.Contexts.Select(c => c.Name))}.");
        var user = context.ContextDetails?.User is { Length: > 0 } userName
            ? merged.Users.FirstOrDefault(u => string.Equals(u.Name, userName, StringComparison.Ordinal))
            : null;
        var credentials = user?.UserCredentials;
        if (credentials?.AuthProvider is { } provider)
        {
            throw new KubeConfigException(
                $"The user {user!.Name} in {source} authenticates with the auth-provider '{provider.Name}', which KubernetesClient.Aot does not support; " +
                "use an exec credential plugin instead (kubelogin for OIDC and Azure, gke-gcloud-auth-plugin for GKE).");
        }

        string? tokenFile = null;
        if (credentials is not null && string.IsNullOrWhiteSpace(credentials.Token) && tokenFiles.TryGetValue(user!.Name, out var file))
        {
            // The library's model has no tokenFile: hand it the file's token so it accepts the user, then read the file ourselves.
            tokenFile = file;
            credentials.Token = TokenFileCredential.Read(file, $"the tokenFile of user {user.Name} in {source}");
        }

        KubernetesClientConfiguration config;
        try
        {
            config = KubernetesClientConfiguration.BuildConfigFromConfigObject(merged, contextName);
        }
        catch (Exception ex) when (ex is k8s.Exceptions.KubeConfigException or IOException or FormatException or System.Security.Cryptography.CryptographicException)
        {
            throw new KubeConfigException($"The Kubernetes configuration from {source} (context {contextName}) is unusable: {ex.Message}", ex);
        }

        IReloadableCredential? credential = null;
        if (tokenFile is not null)
        {
            credential = new TokenFileCredential(tokenFile);
        }
        else if (credentials?.ExternalExecution is { } exec && config.TokenProvider is not null)
        {
            credential = new ExecCredential(exec);
        }

        if (credential is not null)
        {
            config.TokenProvider = (ITokenProvider)credential;
        }

        var impersonation = credentials is null ? null : ImpersonationHandler.For(credentials);
        return Build(config, source, context.Name, credential, impersonation);
    }

    private static KubeConnection Build(KubernetesClientConfiguration config, string source, string? context, IReloadableCredential? credential, DelegatingHandler? impersonation)
    {
        config.UserAgent = "wormhole-tunnel"; // the field manager of our Updates, and how our requests are told apart in logs
        KubeTransport transport;
        try
        {
            transport = KubeTransport.Create(config, impersonation);
        }
        catch (KubeConfigException ex)
        {
            throw new KubeConfigException($"The Kubernetes configuration from {source} is unusable: {ex.Message}", ex);
        }

        return new KubeConnection(transport, source, context, config.Host, config.Namespace, transport.TlsServerName, credential);
    }

    /// <summary>
    /// Loads each file with the library and merges them as kubectl does: the first file to set current-context, or to
    /// define a cluster, user or context of a name, wins. Relative paths are made absolute against the file that holds them.
    /// </summary>
    private static K8SConfiguration Merge(IReadOnlyList<string> files, out Dictionary<string, string> tokenFiles)
    {
        K8SConfiguration? merged = null;
        tokenFiles = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var file in files)
        {
            K8SConfiguration config;
            try
            {
                config = KubernetesClientConfiguration.LoadKubeConfig(new FileInfo(file), useRelativePaths: true);
            }
            catch (Exception ex) when (ex is YamlException or k8s.Exceptions.KubeConfigException or IOException or UnauthorizedAccessException)
            {
                throw new KubeConfigException($"The kubeconfig file {file} cannot be read: {ex.Message}", ex);
            }

            var directory = Path.GetDirectoryName(file)!;
            string? Absolute(string? path) => string.IsNullOrEmpty(path) || Path.IsPathRooted(path) ? path : Path.Combine(directory, path);
            config.Clusters ??= [];
            config.Users ??= [];
            config.Contexts ??= [];
            foreach (var cluster in config.Clusters.Where(c => c.ClusterEndpoint is not null))
            {
                cluster.ClusterEndpoint.CertificateAuthority = Absolute(cluster.ClusterEndpoint.CertificateAuthority);
            }

            foreach (var user in config.Users.Where(u => u.UserCredentials is not null))
            {
                user.UserCredentials.ClientCertificate = Absolute(user.UserCredentials.ClientCertificate);
                user.UserCredentials.ClientKey = Absolute(user.UserCredentials.ClientKey);
            }

            foreach (var (user, tokenFile) in TokenFiles(file))
            {
                tokenFiles.TryAdd(user, Absolute(tokenFile)!);
            }

            if (merged is null)
            {
                merged = config;
                continue;
            }

            merged.CurrentContext ??= config.CurrentContext;
            merged.Clusters.AddRange(config.Clusters.Where(c => merged.Clusters.All(m => m.Name != c.Name)));
            merged.Users.AddRange(config.Users.Where(u => merged.Users.All(m => m.Name != u.Name)));
            merged.Contexts.AddRange(config.Contexts.Where(c => merged.Contexts.All(m => m.Name != c.Name)));
        }

        return merged!;
    }

    /// <summary><c>users[].user.tokenFile</c>, which the library's kubeconfig model does not carry; read from the YAML tree.</summary>
    private static IEnumerable<(string User, string TokenFile)> TokenFiles(string file)
    {
        var yaml = new YamlStream();
        using (var reader = new StreamReader(file))
        {
            yaml.Load(reader);
        }

        if (yaml.Documents.Count == 0 || yaml.Documents[0].RootNode is not YamlMappingNode root
            || !root.Children.TryGetValue(new YamlScalarNode("users"), out var users) || users is not YamlSequenceNode list)
        {
            yield break;
        }

        foreach (var entry in list.OfType<YamlMappingNode>())
        {
            if (entry.Children.TryGetValue(new YamlScalarNode("name"), out var name) && name is YamlScalarNode { Value: { } userName }
                && entry.Children.TryGetValue(new YamlScalarNode("user"), out var user) && user is YamlMappingNode details
                && details.Children.TryGetValue(new YamlScalarNode("tokenFile"), out var path) && path is YamlScalarNode { Value: { Length: > 0 } tokenFile })
            {
                yield return (userName, tokenFile);
            }
        }
    }
}

/// <summary>A credential whose cached value can be dropped so the next request fetches it again (after a 401).</summary>
internal interface IReloadableCredential
{
    void Invalidate();
}

/// <summary>
/// A bearer token file, read again whenever it changes (bound service-account tokens rotate; the kubelet swaps a
/// <c>..data</c> link, so the link is followed before its time is compared) or after <see cref="Invalidate"/>.
/// </summary>
internal sealed class TokenFileCredential(string path) : ITokenProvider, IReloadableCredential
{
    private readonly Lock _gate = new();
    private (string Target, DateTime Written) _stamp;
    private AuthenticationHeaderValue? _header;

    public static string Read(string path, string what)
    {
        try
        {
            return File.ReadAllText(path).Trim();
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new KubeConfigException($"{char.ToUpperInvariant(what[0])}{what[1..]} ({path}) cannot be read: {ex.Message}", ex);
        }
    }

    public Task<AuthenticationHeaderValue> GetAuthenticationHeaderAsync(CancellationToken cancellationToken)
    {
        var file = new FileInfo(path);
        var target = file.LinkTarget is null ? file : file.ResolveLinkTarget(returnFinalTarget: true) ?? file;
        var stamp = (target.FullName, target.LastWriteTimeUtc);
        lock (_gate)
        {
            if (_header is null || stamp != _stamp)
            {
                try
                {
                    _header = new AuthenticationHeaderValue("Bearer", File.ReadAllText(path).Trim());
                    _stamp = stamp;
                }
                catch (IOException) when (_header is not null)
                {
                    // Mid-rotation: keep the previous token and read again on the next request.
                }
            }

            return Task.FromResult(_header);
        }
    }

    public void Invalidate()
    {
        lock (_gate)
        {
            _header = null;
        }
    }

    public override string ToString() => $"token file {path}";
}

/// <summary>
/// An exec credential plugin run through the library (<see cref="KubernetesClientConfiguration.ExecuteExternalCommand"/>):
/// its token is kept until 30 s before its expirationTimestamp, or until <see cref="Invalidate"/>.
/// </summary>
internal sealed class ExecCredential(ExternalExecution exec) : ITokenProvider, IReloadableCredential
{
    private readonly SemaphoreSlim _gate = new(1, 1);
    private volatile Cached? _cached;

    public async Task<AuthenticationHeaderValue> GetAuthenticationHeaderAsync(CancellationToken cancellationToken)
    {
        if (_cached is { } fresh && fresh.IsFresh)
        {
            return fresh.Header;
        }

        await _gate.WaitAsync(cancellationToken);
        try
        {
            if (_cached is { } again && again.IsFresh)
            {
                return again.Header;
            }

            var response = await Task.Run(() => KubernetesClientConfiguration.ExecuteExternalCommand(exec), cancellationToken);
            var token = response.Status?.Token;
            if (string.IsNullOrEmpty(token))
            {
                throw new KubeConfigException($"The exec credential plugin {exec.Command} printed no token.");
            }

            var expires = response.Status!.ExpirationTimestamp is { } at ? DateTime.SpecifyKind(at, at.Kind == DateTimeKind.Unspecified ? DateTimeKind.Utc : at.Kind).ToUniversalTime() : (DateTime?)null;
            var cached = new Cached(new AuthenticationHeaderValue("Bearer", token), expires);
            _cached = cached;
            return cached.Header;
        }
        finally
        {
            _gate.Release();
        }
    }

    public void Invalidate() => _cached = null;

    public override string ToString() => $"exec plugin {exec.Command}";

    private sealed record Cached(AuthenticationHeaderValue Header, DateTime? ExpiresUtc)
    {
        public bool IsFresh => ExpiresUtc is not { } at || DateTime.UtcNow.AddSeconds(30) < at;

        public override string ToString() => $"exec token (expires {ExpiresUtc?.ToString("o") ?? "never"})";
    }
}

/// <summary>Impersonate-User / Impersonate-Group / Impersonate-Extra-* on every request, from the user's as, as-groups and as-user-extra.</summary>
internal sealed class ImpersonationHandler : DelegatingHandler
{
    private readonly string? _user;
    private readonly IReadOnlyList<string> _groups;
    private readonly IReadOnlyDictionary<string, string> _extra;

    private ImpersonationHandler(string? user, IReadOnlyList<string> groups, IReadOnlyDictionary<string, string> extra)
    {
        _user = user;
        _groups = groups;
        _extra = extra;
    }

    public static ImpersonationHandler? For(UserCredentials credentials)
    {
        var groups = credentials.ImpersonateGroups?.Where(g => !string.IsNullOrEmpty(g)).ToList() ?? [];
        var extra = credentials.ImpersonateUserExtra ?? [];
        if (string.IsNullOrEmpty(credentials.Impersonate) && groups.Count == 0 && extra.Count == 0)
        {
            return null;
        }

        if (string.IsNullOrEmpty(credentials.Impersonate))
        {
            throw new KubeConfigException("The kubeconfig user sets as-groups or as-user-extra without as: impersonating groups needs a user to impersonate.");
        }

        if (groups.Count > 1)
        {
            // The apiserver wants one Impersonate-Group header line per group; HttpClient joins repeated values into one
            // line ("a, b"), which would impersonate a single group of that name.
            throw new KubeConfigException(
                $"The kubeconfig user impersonates {groups.Count} groups (as-groups); only one is supported here, as .NET's HttpClient cannot send a header line per group.");
        }

        return new ImpersonationHandler(credentials.Impersonate, groups, new Dictionary<string, string>(extra, StringComparer.Ordinal));
    }

    protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        request.Headers.TryAddWithoutValidation("Impersonate-User", _user);
        foreach (var group in _groups)
        {
            request.Headers.TryAddWithoutValidation("Impersonate-Group", group);
        }

        foreach (var (key, value) in _extra)
        {
            request.Headers.TryAddWithoutValidation($"Impersonate-Extra-{Uri.EscapeDataString(key)}", value);
        }

        return base.SendAsync(request, cancellationToken);
    }
}
