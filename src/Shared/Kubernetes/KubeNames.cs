using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using Wormhole.Tunnel.Apps;

namespace Wormhole.Tunnel.Kubernetes;

/// <summary>
/// Names and label values Kubernetes accepts. Valid inputs pass unchanged (the reference's names stay the same);
/// anything else is made valid the way long names are: a cleaned prefix plus '-' and 8 hex characters of the
/// SHA-256 of the original, so two different inputs never collide.
/// </summary>
public static partial class KubeNames
{
    public const string LabelPrefix = "wormhole.glothriel.github.com/";
    public const string ExposedBy = LabelPrefix + "exposed-by";
    public const string ExposedApp = LabelPrefix + "exposed-app";
    public const string ExposedPeer = LabelPrefix + "exposed-peer";
    public const string ConsumesApp = LabelPrefix + "network-policy-consumes-app";

    /// <summary>On generated objects: the <c>--name</c> of the side that made them (as a label value).</summary>
    public const string Instance = LabelPrefix + "instance";
    public const string ExposedByValue = "wormhole";

    /// <summary>The generated object name for <paramref name="app"/> of <paramref name="peer"/>: a DNS-1035 label.</summary>
    public static string ObjectName(string peer, string app)
    {
        var raw = $"{peer}-{app}";
        if (raw.Length <= Names.MaxLength && Dns1035().IsMatch(raw))
        {
            return raw;
        }

        var cleaned = Clean(raw.ToLowerInvariant(), c => c is (>= 'a' and <= 'z') or (>= '0' and <= '9'));
        if (cleaned.Length == 0 || !char.IsAsciiLetterLower(cleaned[0]))
        {
            cleaned = "w-" + cleaned;
        }

        return cleaned == raw ? Names.Cap(raw) : WithHash(cleaned, raw);
    }

    /// <summary>A label value (≤63, alphanumeric at both ends, '-', '_' and '.' inside), or "" for "".</summary>
    public static string LabelValue(string value)
    {
        if (IsValidLabelValue(value))
        {
            return value;
        }

        var cleaned = Clean(value, c => char.IsAsciiLetterOrDigit(c) || c is '_' or '.');
        return WithHash(cleaned, value);
    }

    public static bool IsValidLabelValue(string value) => value.Length <= Names.MaxLength && LabelValuePattern().IsMatch(value);

    public static bool IsValidServiceName(string value) => value.Length <= Names.MaxLength && Dns1035().IsMatch(value);

    /// <summary>Parses <c>k1=v1,k2=v2</c> (values may contain '='); null plus a reason when malformed.</summary>
    public static Dictionary<string, string>? ParseLabels(string csv, out string? error)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var part in csv.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var eq = part.IndexOf('=');
            if (eq <= 0)
            {
                error = $"'{part}' is not key=value";
                return null;
            }

            var (key, value) = (part[..eq].Trim(), part[(eq + 1)..].Trim());
            if (!IsValidLabelValue(value) || key.Length > 253 + 1 + 63 || !LabelKeyPattern().IsMatch(key))
            {
                error = $"'{part}' is not a valid Kubernetes label";
                return null;
            }

            result[key] = value;
        }

        error = result.Count == 0 ? "no labels given" : null;
        return error is null ? result : null;
    }

    private static string Clean(string value, Func<char, bool> keep)
    {
        var sb = new StringBuilder(value.Length);
        foreach (var c in value)
        {
            var ok = keep(c);
            if (ok || (sb.Length > 0 && sb[^1] != '-'))
            {
                sb.Append(ok ? c : '-');
            }
        }

        return sb.ToString().Trim('-');
    }

    private static string WithHash(string cleaned, string original)
    {
        var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(original)))[..8];
        var prefix = cleaned.Length > 54 ? cleaned[..54].TrimEnd('-', '_', '.') : cleaned;
        return prefix.Length == 0 ? "w-" + hash : $"{prefix}-{hash}";
    }

    [GeneratedRegex("\\A[a-z]([-a-z0-9]*[a-z0-9])?\\z")]
    private static partial Regex Dns1035();

    [GeneratedRegex("\\A(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?\\z")]
    private static partial Regex LabelValuePattern();

    [GeneratedRegex("\\A([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?\\z")]
    private static partial Regex LabelKeyPattern();
}
