using System.Net;
using System.Net.Http.Headers;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using k8s;
using k8s.Authentication;

namespace Wormhole.Tunnel.Kubernetes;

/// <summary>
/// The HTTP side of a connection to one apiserver, built from a <see cref="KubernetesClientConfiguration"/> without
/// constructing the library's <c>k8s.Kubernetes</c> client (whose constructor roots the library's JSON context for every
/// API kind: 13 MB of NativeAOT executable and 18 MB of idle RSS in each process). What it covers is what that client
/// did for us: the server URL; TLS with the cluster's CA (chain and host name checked), <c>insecure-skip-tls-verify</c>,
/// <c>tls-server-name</c> (SNI and the name checked); a client certificate and key (files or data); and credentials,
/// asked per request: a token provider (exec plugin, token file, service-account token), a static token, or basic auth.
/// Impersonation headers come from an optional handler in front of the socket handler.
/// Holds credentials: <see cref="ToString"/> names only the server.
/// </summary>
public sealed class KubeTransport : IDisposable
{
    private readonly HttpMessageHandler _handler;
    private readonly ITokenProvider? _tokens;
    private readonly AuthenticationHeaderValue? _static;

    private KubeTransport(Uri baseUri, HttpMessageHandler handler, string? userAgent, ITokenProvider? tokens, AuthenticationHeaderValue? fixedHeader, string? tlsServerName, Version version)
    {
        BaseUri = baseUri;
        _handler = handler;
        _tokens = tokens;
        _static = fixedHeader;
        TlsServerName = tlsServerName;
        HttpVersion = version;
        HttpClient = new HttpClient(handler, disposeHandler: false) { Timeout = Timeout.InfiniteTimeSpan };
        if (!string.IsNullOrWhiteSpace(userAgent))
        {
            HttpClient.DefaultRequestHeaders.TryAddWithoutValidation("User-Agent", userAgent);
        }
    }

    /// <summary>The server URL; request paths are relative to it.</summary>
    public Uri BaseUri { get; }

    /// <summary>Sends with the connection's TLS settings (and impersonation); no timeout of its own.</summary>
    public HttpClient HttpClient { get; }

    /// <summary>The cluster's tls-server-name (sent as SNI and as Host, and the name the server certificate must carry).</summary>
    public string? TlsServerName { get; }

    /// <summary>HTTP/2 (negotiated over TLS, else HTTP/1.1), or HTTP/1.1 when the configuration disables HTTP/2.</summary>
    public Version HttpVersion { get; }

    /// <summary>
    /// The transport for <paramref name="config"/>; <paramref name="impersonation"/>, when given, sees every request
    /// before it is sent. Throws <see cref="KubeConfigException"/> for a configuration that cannot be used.
    /// </summary>
    public static KubeTransport Create(KubernetesClientConfiguration config, DelegatingHandler? impersonation = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (string.IsNullOrWhiteSpace(config.Host))
        {
            throw new KubeConfigException("The Kubernetes configuration names no server.");
        }

        if (!Uri.TryCreate(config.Host, UriKind.Absolute, out var server) || (server.Scheme != Uri.UriSchemeHttps && server.Scheme != Uri.UriSchemeHttp))
        {
            throw new KubeConfigException($"The Kubernetes server '{config.Host}' is not an http(s) URL.");
        }

        // Paths are resolved against the server: a base path (a proxy's prefix) must end with '/' to be kept.
        var baseUri = server.AbsolutePath.EndsWith('/') ? server : new Uri(server + "/");
        var sockets = new SocketsHttpHandler
        {
            KeepAlivePingPolicy = HttpKeepAlivePingPolicy.WithActiveRequests,
            KeepAlivePingDelay = TimeSpan.FromMinutes(3),
            KeepAlivePingTimeout = TimeSpan.FromSeconds(30),
            ConnectTimeout = TimeSpan.FromSeconds(15),
        };

        try
        {
            if (server.Scheme == Uri.UriSchemeHttps)
            {
                if (!string.IsNullOrWhiteSpace(config.TlsServerName))
                {
                    sockets.SslOptions.TargetHost = config.TlsServerName;
                }

                if (config.SkipTlsVerify)
                {
                    // insecure-skip-tls-verify: the kubeconfig asks for no check at all, as kubectl honours it.
#pragma warning disable CA5359
                    sockets.SslOptions.RemoteCertificateValidationCallback = static (_, _, _, _) => true;
#pragma warning restore CA5359
                }
                else if (config.SslCaCerts is { Count: > 0 } authorities)
                {
                    var trust = new X509Certificate2Collection();
                    foreach (var certificate in authorities)
                    {
                        trust.Add(X509CertificateLoader.LoadCertificate(certificate.RawData));
                    }

                    sockets.SslOptions.RemoteCertificateValidationCallback = (_, certificate, presented, errors) => Trusted(trust, certificate, presented, errors);
                }

                // Neither: the system's trusted roots and the usual name check, as kubectl does without a CA.
                if (ClientCertificate(config) is { } clientCertificate)
                {
                    sockets.SslOptions.ClientCertificates = [clientCertificate];
                }
            }
        }
        catch (Exception ex) when (ex is CryptographicException or IOException or UnauthorizedAccessException or FormatException)
        {
            sockets.Dispose();
            throw new KubeConfigException($"The Kubernetes TLS settings are unusable: {ex.Message}", ex);
        }

        HttpMessageHandler handler = sockets;
        if (impersonation is not null)
        {
            var last = impersonation;
            while (last.InnerHandler is DelegatingHandler inner)
            {
                last = inner;
            }

            last.InnerHandler = sockets;
            handler = impersonation;
        }

        var (tokens, fixedHeader) = Credentials(config);
        return new KubeTransport(
            baseUri, handler, config.UserAgent, tokens, fixedHeader,
            string.IsNullOrWhiteSpace(config.TlsServerName) ? null : config.TlsServerName, config.DisableHttp2 ? HttpVersion11 : HttpVersion20);
    }

    /// <summary>Puts the connection's credential on <paramref name="request"/> (a token provider is asked every time: it caches and rotates).</summary>
    public async Task AuthorizeAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        if (_tokens is not null)
        {
            request.Headers.Authorization = await _tokens.GetAuthenticationHeaderAsync(cancellationToken);
        }
        else if (_static is not null)
        {
            request.Headers.Authorization = _static;
        }

        if (TlsServerName is not null)
        {
            request.Headers.Host = TlsServerName;
        }
    }

    public void Dispose()
    {
        HttpClient.Dispose();
        _handler.Dispose();
    }

    public override string ToString() => $"Kubernetes transport to {BaseUri}";

    private static readonly Version HttpVersion11 = System.Net.HttpVersion.Version11;
    private static readonly Version HttpVersion20 = System.Net.HttpVersion.Version20;

    /// <summary>As the library chose: a token provider, else a static token, else basic auth, else none (client certificate or anonymous).</summary>
    private static (ITokenProvider? Tokens, AuthenticationHeaderValue? Fixed) Credentials(KubernetesClientConfiguration config)
    {
        if (config.TokenProvider is { } provider)
        {
            return (provider, null);
        }

        if (!string.IsNullOrEmpty(config.AccessToken))
        {
            return (null, new AuthenticationHeaderValue("Bearer", config.AccessToken));
        }

        if (!string.IsNullOrEmpty(config.Username))
        {
            var pair = Convert.ToBase64String(Encoding.UTF8.GetBytes($"{config.Username}:{config.Password}"));
            return (null, new AuthenticationHeaderValue("Basic", pair));
        }

        return (null, null);
    }

    /// <summary>The client certificate with its key (PEM data, base64 as in a kubeconfig, or files), or null when none is configured.</summary>
    private static X509Certificate2? ClientCertificate(KubernetesClientConfiguration config)
    {
        var hasData = !string.IsNullOrWhiteSpace(config.ClientCertificateData) && !string.IsNullOrWhiteSpace(config.ClientCertificateKeyData);
        var hasFiles = !string.IsNullOrWhiteSpace(config.ClientCertificateFilePath) && !string.IsNullOrWhiteSpace(config.ClientKeyFilePath);
        if (!hasData && !hasFiles)
        {
            return null;
        }

        var certificate = hasData ? Encoding.UTF8.GetString(Convert.FromBase64String(config.ClientCertificateData)) : File.ReadAllText(config.ClientCertificateFilePath);
        var key = hasData ? Encoding.UTF8.GetString(Convert.FromBase64String(config.ClientCertificateKeyData)) : File.ReadAllText(config.ClientKeyFilePath);
        using var ephemeral = X509Certificate2.CreateFromPem(certificate, key);

        // Loaded again from PKCS#12 so the private key is usable by the TLS stack on every platform.
        return X509CertificateLoader.LoadPkcs12(ephemeral.Export(X509ContentType.Pkcs12), null);
    }

    /// <summary>The server certificate chains to one of <paramref name="trust"/> and carries the expected name.</summary>
    private static bool Trusted(X509Certificate2Collection trust, X509Certificate? certificate, X509Chain? presented, SslPolicyErrors errors)
    {
        if (certificate is not X509Certificate2 leaf || (errors & (SslPolicyErrors.RemoteCertificateNotAvailable | SslPolicyErrors.RemoteCertificateNameMismatch)) != 0)
        {
            return false;
        }

        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(trust);
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
}
