using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;

namespace Wormhole.Tunnel.Apps;

/// <summary>Name rules: the reference's 63-character cap (reference §4.6) and the DNS label checks Kubernetes applies.</summary>
public static partial class Names
{
    public const int MaxLength = 63;

    /// <summary>
    /// The reference's <c>capName</c>: names of 63 characters or fewer are unchanged; longer ones are cut at the last '-'
    /// in [32, 54) (or at 54) and get '-' plus the first 8 hex characters of SHA-256 of the full name.
    /// </summary>
    public static string Cap(string name)
    {
        if (name.Length <= MaxLength)
        {
            return name;
        }

        var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(name)))[..8];
        var cut = name.LastIndexOf('-', 53, 54 - 32);
        return (cut >= 32 ? name[..cut] : name[..54]) + "-" + hash;
    }

    /// <summary>A peer name: what the hub accepts at pairing (a DNS-1123 label, so it can prefix Kubernetes names).</summary>
    public static bool IsValidPeerName(string? name) => name is { Length: > 0 and <= MaxLength } && Dns1123Label().IsMatch(name);

    /// <summary>An app name as carried in sync messages: printable, no path separators, at most 253 characters.</summary>
    public static bool IsValidAppName(string? name) =>
        name is { Length: > 0 and <= 253 } && name.All(c => c is > ' ' and < (char)127 && c != '/' && c != '\\');

    [GeneratedRegex(@"\A[a-z0-9]([-a-z0-9]*[a-z0-9])?\z")]
    private static partial Regex Dns1123Label();
}
