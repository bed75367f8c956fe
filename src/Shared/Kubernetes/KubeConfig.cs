using System.Net.Http.Headers;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using YamlDotNet.Core;
using YamlDotNet.Serialization;
using YamlDotNet.Serialization.NamingConventions;

namespace Wormhole.Tunnel.Kubernetes;

/// <summary>The Kubernetes connection settings are missing or unusable; the message is one sentence for the user.</summary>
public sealed class KubeConfigException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// Where the apiserver is and how to authenticate to it: the in-cluster service account or a kubeconfig file
/// (token, token file, client certificate, basic auth; exec and auth-provider plugins are refused).
/// Holds credentials: never log it.
/// </summary>
public sealed class KubeConfig
{
    internal const string ServiceAccountDirectory = "/var/run/secrets/kubernetes.io/serviceaccount";

    private static readonly IDeserializer Yaml = new DeserializerBuilder()
        .WithNamingConvention(CamelCaseNamingConvention.Instance)
        .IgnoreUnmatchedProperties()
        .Build();

    private readonly X509Certificate2Collection? _trust;
    private readonly bool _insecure;
    private readonly X509Certificate2? _clientCertificate;
    private readonly Func<AuthenticationHeaderValue?> _authorization;

    private KubeConfig(
        Uri server, string? ns, string source, X509Certificate2Collection? trust, bool insecure, X509Certificate2? clientCertificate, Func<AuthenticationHeaderValue?> authorization)
    {
        Server = server;
        Namespace = ns;
        Source = source;
        _trust = trust;
        _insecure = insecure;
        _clientCertificate = clientCertificate;
        _authorization = authorization;
    }

    /// <summary>The apiserver's base address.</summary>
    public Uri Server { get; }

    /// <summary>The context's namespace, or the service account's namespace in-cluster; null when unset.</summary>
    public string? Namespace { get; }

    /// <summary>"in-cluster" or "&lt;file&gt; (context &lt;name&gt;)", for startup logs.</summary>
    public string Source { get; }

    /// <summary>
    /// In-cluster when <paramref name="kubeconfigPath"/> is null and the service account is mounted; otherwise the given file,
    /// else the first file of <c>$KUBECONFIG</c>, else <c>~/.kube/config</c>.
    /// </summary>
    public static KubeConfig Load(string? kubeconfigPath) =>
        Load(kubeconfigPath, Environment.GetEnvironmentVariable, ServiceAccountDirectory, Environment.GetFolderPath(Environment.SpecialFolder.UserProfile));

    internal static KubeConfig Load(string? kubeconfigPath, Func<string, string?> environment, string serviceAccountDirectory, string? home)
    {
        if (!string.IsNullOrEmpty(kubeconfigPath))
        {
            return FromFile(kubeconfigPath);
        }

        var host = environment("KUBERNETES_SERVICE_HOST");
        var port = environment("KUBERNETES_SERVICE_PORT");
        var tokenPath = Path.Combine(serviceAccountDirectory, "token");
        if (!string.IsNullOrEmpty(host) && !string.IsNullOrEmpty(port) && File.Exists(tokenPath))
        {
            return InCluster(host, port, serviceAccountDirectory, tokenPath);
        }

        var fromEnvironment = environment("KUBECONFIG")?.Split(':', StringSplitOptions.RemoveEmptyEntries).FirstOrDefault();
        if (fromEnvironment is not null)
        {
            return FromFile(fromEnvironment);
        }

        if (string.IsNullOrEmpty(home))
        {
            throw new KubeConfigException("No Kubernetes configuration found: not in a cluster, $KUBECONFIG is unset and there is no home directory; pass --kubeconfig.");
        }

        var fallback = Path.Combine(home, ".kube", "config");
        return File.Exists(fallback)
            ? FromFile(fallback)
            : throw new KubeConfigException($"No Kubernetes configuration found: not in a cluster, $KUBECONFIG is unset and {fallback} does not exist; pass --kubeconfig.");
    }

    /// <summary>A handler that trusts the configured CA (only it), presents the client certificate, and honours insecure-skip-tls-verify.</summary>
    public HttpMessageHandler CreateHandler()
    {
        var ssl = new SslClientAuthenticationOptions();
        if (_insecure)
        {
#pragma warning disable CA5359 // The user asked for it with insecure-skip-tls-verify.
            ssl.RemoteCertificateValidationCallback = static (_, _, _, _) => true;
#pragma warning restore CA5359
        }
        else if (_trust is not null)
        {
            ssl.RemoteCertificateValidationCallback = ValidateAgainstTrust;
        }

        if (_clientCertificate is not null)
        {
            ssl.ClientCertificates = [_clientCertificate];
            ssl.LocalCertificateSelectionCallback = (_, _, _, _, _) => _clientCertificate;
        }

        return new SocketsHttpHandler { SslOptions = ssl, ConnectTimeout = TimeSpan.FromSeconds(15) };
    }

    /// <summary>The Authorization header for the next request (token files are re-read when they change); null when none.</summary>
    public AuthenticationHeaderValue? Authorization() => _authorization();

    private bool ValidateAgainstTrust(object sender, X509Certificate? certificate, X509Chain? presented, SslPolicyErrors errors)
    {
        if (certificate is not X509Certificate2 leaf || (errors & (SslPolicyErrors.RemoteCertificateNotAvailable | SslPolicyErrors.RemoteCertificateNameMismatch)) != 0)
        {
            return false;
        }

        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(_trust!);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        if (presented is not null)
        {
            foreach (var element in presented.ChainElements)
            {
                chain.ChainPolicy.ExtraStore.Add(element.Certificate);
            }
        }

        return chain.Build(leaf);
    }

    private static KubeConfig InCluster(string host, string port, string directory, string tokenPath)
    {
        var server = new Uri($"https://{(host.Contains(':', StringComparison.Ordinal) ? $"[{host}]" : host)}:{port}");
        var caPath = Path.Combine(directory, "ca.crt");
        var trust = File.Exists(caPath) ? Certificates(File.ReadAllText(caPath), caPath) : null;
        var nsPath = Path.Combine(directory, "namespace");
        var ns = File.Exists(nsPath) ? File.ReadAllText(nsPath).Trim() : null;
        var token = new TokenFile(tokenPath);
        return new KubeConfig(server, ns, "in-cluster", trust, false, null, token.Header);
    }

    private static KubeConfig FromFile(string path)
    {
        if (!File.Exists(path))
        {
            throw new KubeConfigException($"The kubeconfig file {path} does not exist.");
        }

        KubeConfigFile file;
        try
        {
            file = Yaml.Deserialize<KubeConfigFile?>(File.ReadAllText(path)) ?? new KubeConfigFile();
        }
        catch (YamlException ex)
        {
            throw new KubeConfigException($"The kubeconfig file {path} is not a valid kubeconfig (line {ex.Start.Line}).", ex);
        }

        var contextName = file.CurrentContext;
        if (string.IsNullOrEmpty(contextName))
        {
            throw new KubeConfigException($"The kubeconfig file {path} has no current-context.");
        }

        var context = file.Contexts?.FirstOrDefault(c => c.Name == contextName)?.Context
            ?? throw new KubeConfigException($"The kubeconfig file {path} has no context named {contextName}.");
        var cluster = file.Clusters?.FirstOrDefault(c => c.Name == context.Cluster)?.Cluster
            ?? throw new KubeConfigException($"The kubeconfig file {path} has no cluster named {context.Cluster} (used by context {contextName}).");
        if (!Uri.TryCreate(cluster.Server, UriKind.Absolute, out var server))
        {
            throw new KubeConfigException($"The cluster {context.Cluster} in {path} has no valid server address.");
        }

        var user = context.User is null
            ? new KubeUser()
            : file.Users?.FirstOrDefault(u => u.Name == context.User)?.User
                ?? throw new KubeConfigException($"The kubeconfig file {path} has no user named {context.User} (used by context {contextName}).");
        var directory = Path.GetDirectoryName(Path.GetFullPath(path))!;
        string Resolve(string file) => Path.IsPathRooted(file) ? file : Path.Combine(directory, file);
        string Pem(string? data, string? file, string what) =>
            data is not null ? Base64(data, what, path) : ReadFile(Resolve(file!), what);

        if (user.Exec is not null)
        {
            throw new KubeConfigException(
                $"The user {context.User} in {path} authenticates with an exec credential plugin ({user.Exec.Command}), which is not supported: use a token, a tokenFile or a client certificate.");
        }

        if (user.AuthProvider is not null)
        {
            throw new KubeConfigException(
                $"The user {context.User} in {path} authenticates with the auth-provider {user.AuthProvider.Name}, which is not supported: use a token, a tokenFile or a client certificate.");
        }

        var trust = cluster.CertificateAuthorityData is null && cluster.CertificateAuthority is null
            ? null
            : Certificates(Pem(cluster.CertificateAuthorityData, cluster.CertificateAuthority, "certificate-authority"), path);

        X509Certificate2? clientCertificate = null;
        var hasCert = user.ClientCertificateData is not null || user.ClientCertificate is not null;
        var hasKey = user.ClientKeyData is not null || user.ClientKey is not null;
        if (hasCert != hasKey)
        {
            throw new KubeConfigException($"The user {context.User} in {path} has a client certificate without its key or a key without its certificate.");
        }

        if (hasCert)
        {
            var certificatePem = Pem(user.ClientCertificateData, user.ClientCertificate, "client-certificate");
            var keyPem = Pem(user.ClientKeyData, user.ClientKey, "client-key");
            try
            {
                clientCertificate = X509Certificate2.CreateFromPem(certificatePem, keyPem);
            }
            catch (CryptographicException ex)
            {
                throw new KubeConfigException($"The client certificate of user {context.User} in {path} cannot be loaded ({ex.Message}).", ex);
            }
        }

        Func<AuthenticationHeaderValue?> authorization;
        if (!string.IsNullOrEmpty(user.Token))
        {
            var header = new AuthenticationHeaderValue("Bearer", user.Token.Trim());
            authorization = () => header;
        }
        else if (!string.IsNullOrEmpty(user.TokenFile))
        {
            var tokenPath = Resolve(user.TokenFile);
            if (!File.Exists(tokenPath))
            {
                throw new KubeConfigException($"The tokenFile {tokenPath} of user {context.User} in {path} does not exist.");
            }

            authorization = new TokenFile(tokenPath).Header;
        }
        else if (!string.IsNullOrEmpty(user.Username))
        {
            var header = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{user.Username}:{user.Password}")));
            authorization = () => header;
        }
        else
        {
            authorization = static () => null;
        }

        return new KubeConfig(
            server, context.Namespace, $"{path} (context {contextName})", trust, cluster.InsecureSkipTlsVerify, clientCertificate, authorization);
    }

    private static X509Certificate2Collection Certificates(string pem, string source)
    {
        var collection = new X509Certificate2Collection();
        try
        {
            collection.ImportFromPem(pem);
        }
        catch (CryptographicException ex)
        {
            throw new KubeConfigException($"The certificate authority in {source} cannot be read ({ex.Message}).", ex);
        }

        return collection.Count > 0 ? collection : throw new KubeConfigException($"The certificate authority in {source} holds no PEM certificate.");
    }

    private static string Base64(string data, string what, string path)
    {
        try
        {
            return Encoding.UTF8.GetString(Convert.FromBase64String(data));
        }
        catch (FormatException ex)
        {
            throw new KubeConfigException($"The {what}-data in {path} is not valid base64.", ex);
        }
    }

    private static string ReadFile(string file, string what) =>
        File.Exists(file) ? File.ReadAllText(file) : throw new KubeConfigException($"The {what} file {file} does not exist.");

    /// <summary>
    /// A bearer token file re-read whenever it changes (bound service-account tokens rotate). The kubelet swaps a
    /// <c>..data</c> directory link under <c>token → ..data/token</c>, so the link is followed before its time is compared.
    /// </summary>
    private sealed class TokenFile(string path)
    {
        private readonly Lock _gate = new();
        private (string Target, DateTime Written) _stamp;
        private AuthenticationHeaderValue? _header;

        public AuthenticationHeaderValue? Header()
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

                return _header;
            }
        }
    }

    // The kubeconfig file, as far as we read it (YamlDotNet, camelCase names, hyphenated ones aliased).
    private sealed class KubeConfigFile
    {
        [YamlMember(Alias = "current-context", ApplyNamingConventions = false)]
        public string? CurrentContext { get; set; }

        public List<NamedContext>? Contexts { get; set; }

        public List<NamedCluster>? Clusters { get; set; }

        public List<NamedUser>? Users { get; set; }
    }

    private sealed class NamedContext
    {
        public string? Name { get; set; }

        public KubeContext? Context { get; set; }
    }

    private sealed class KubeContext
    {
        public string? Cluster { get; set; }

        public string? User { get; set; }

        public string? Namespace { get; set; }
    }

    private sealed class NamedCluster
    {
        public string? Name { get; set; }

        public KubeCluster? Cluster { get; set; }
    }

    private sealed class KubeCluster
    {
        public string? Server { get; set; }

        [YamlMember(Alias = "certificate-authority", ApplyNamingConventions = false)]
        public string? CertificateAuthority { get; set; }

        [YamlMember(Alias = "certificate-authority-data", ApplyNamingConventions = false)]
        public string? CertificateAuthorityData { get; set; }

        [YamlMember(Alias = "insecure-skip-tls-verify", ApplyNamingConventions = false)]
        public bool InsecureSkipTlsVerify { get; set; }
    }

    private sealed class NamedUser
    {
        public string? Name { get; set; }

        public KubeUser? User { get; set; }
    }

    private sealed class KubeUser
    {
        public string? Token { get; set; }

        public string? TokenFile { get; set; }

        [YamlMember(Alias = "client-certificate", ApplyNamingConventions = false)]
        public string? ClientCertificate { get; set; }

        [YamlMember(Alias = "client-certificate-data", ApplyNamingConventions = false)]
        public string? ClientCertificateData { get; set; }

        [YamlMember(Alias = "client-key", ApplyNamingConventions = false)]
        public string? ClientKey { get; set; }

        [YamlMember(Alias = "client-key-data", ApplyNamingConventions = false)]
        public string? ClientKeyData { get; set; }

        public string? Username { get; set; }

        public string? Password { get; set; }

        public ExecPlugin? Exec { get; set; }

        [YamlMember(Alias = "auth-provider", ApplyNamingConventions = false)]
        public AuthProviderPlugin? AuthProvider { get; set; }
    }

    private sealed class ExecPlugin
    {
        public string? Command { get; set; }
    }

    private sealed class AuthProviderPlugin
    {
        public string? Name { get; set; }
    }
}
