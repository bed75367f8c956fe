using System.Net;
using System.Net.NetworkInformation;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Wormhole.Tunnel.KubeEmulator;

/// <summary>
/// A throwaway CA and a serving certificate it signs, as a cluster's apiserver has. TLS is not optional in practice:
/// client-go (kubectl) sends bearer tokens only over TLS (kubernetes/kubectl#744).
/// </summary>
internal static class Certificates
{
    /// <param name="dnsNamesOnly">When given, the certificate names only these DNS names and no address.</param>
    public static (X509Certificate2 Authority, X509Certificate2 Server) Create(IPAddress listen, IReadOnlyList<string>? dnsNamesOnly = null)
    {
        using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var caRequest = new CertificateRequest("CN=kube-emulator-ca", caKey, HashAlgorithmName.SHA256);
        caRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        caRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign | X509KeyUsageFlags.DigitalSignature, true));
        caRequest.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(caRequest.PublicKey, false));
        var notBefore = DateTimeOffset.UtcNow.AddHours(-1);
        var authority = caRequest.CreateSelfSigned(notBefore, notBefore.AddYears(1));

        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=kube-apiserver", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature | X509KeyUsageFlags.KeyEncipherment, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(authority, true, false));
        var names = new SubjectAlternativeNameBuilder();
        foreach (var dns in dnsNamesOnly ?? ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"])
        {
            names.AddDnsName(dns);
        }

        // Every local address (of the network namespace we start in), so clients may dial any of them.
        var addresses = NetworkInterface.GetAllNetworkInterfaces().SelectMany(i => i.GetIPProperties().UnicastAddresses).Select(a => a.Address)
            .Append(IPAddress.Loopback).Append(IPAddress.IPv6Loopback).Append(listen).Where(a => !a.Equals(IPAddress.Any) && !a.Equals(IPAddress.IPv6Any)).Distinct();
        foreach (var address in dnsNamesOnly is null ? addresses : [])
        {
            names.AddIpAddress(address);
        }

        request.CertificateExtensions.Add(names.Build());
        using var signed = request.Create(authority, notBefore, notBefore.AddYears(1), RandomNumberGenerator.GetBytes(16));
        return (authority, signed.CopyWithPrivateKey(key));
    }

    /// <summary>Accepts exactly the chains that end in <paramref name="authority"/>.</summary>
    public static bool Trusts(X509Certificate2 authority, X509Certificate2? certificate)
    {
        if (certificate is null)
        {
            return false;
        }

        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(authority);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        return chain.Build(certificate);
    }
}
