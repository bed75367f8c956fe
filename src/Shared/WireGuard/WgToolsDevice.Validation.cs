using System.Globalization;
using System.Net;
using System.Text.RegularExpressions;

namespace Wormhole.Tunnel.WireGuard;

/// <summary>What a configuration must be before any tool runs: names, keys, addresses and endpoints.</summary>
public sealed partial class WgToolsDevice
{
    private static void Validate(WgInterfaceConfig config)
    {
        if (!InterfaceNamePattern().IsMatch(config.Name) || config.Name is "." or "..")
        {
            throw new ArgumentException($"Interface name '{config.Name}' is not valid: 1-15 characters of letters, digits, '_', '-', '.'.", nameof(config));
        }

        if (!WgKeys.IsValidKey(config.PrivateKey))
        {
            throw new ArgumentException("The private key is not a WireGuard key (expected 32 bytes in base64, 44 characters).", nameof(config));
        }

        if (!IsCidr(config.Address))
        {
            throw new ArgumentException($"Address '{config.Address}' is not in CIDR form (e.g. 10.188.0.1/24).", nameof(config));
        }

        if (config.ListenPort is < 1 or > 65535)
        {
            throw new ArgumentException($"Listen port {config.ListenPort} is out of range.", nameof(config));
        }

        foreach (var route in config.Routes)
        {
            if (!IsCidr(route))
            {
                throw new ArgumentException($"Route '{route}' is not in CIDR form.", nameof(config));
            }
        }
    }

    private static void Validate(WgPeer peer)
    {
        ArgumentNullException.ThrowIfNull(peer);
        if (!WgKeys.IsValidKey(peer.PublicKey))
        {
            throw new ArgumentException($"Peer key '{peer.PublicKey}' is not a WireGuard key.", nameof(peer));
        }

        foreach (var ip in peer.AllowedIps)
        {
            if (!IsCidr(ip))
            {
                throw new ArgumentException($"Allowed IP '{ip}' of peer {peer.PublicKey} is not in CIDR form.", nameof(peer));
            }
        }

        if (peer.Endpoint is { } endpoint && !IsEndpoint(endpoint))
        {
            throw new ArgumentException($"Endpoint '{endpoint}' of peer {peer.PublicKey} is not host:port (IPv6 as [addr]:port).", nameof(peer));
        }

        if (peer.PersistentKeepaliveSeconds is < 0 or > 65535)
        {
            throw new ArgumentException($"Keepalive {peer.PersistentKeepaliveSeconds} of peer {peer.PublicKey} is out of range.", nameof(peer));
        }

        if (peer.PresharedKey is not null && !WgKeys.IsValidKey(peer.PresharedKey))
        {
            throw new ArgumentException($"The preshared key of peer {peer.PublicKey} is not a WireGuard key (its value is not shown).", nameof(peer));
        }
    }

    /// <summary>
    /// "host:port" or "[v6]:port" with a port 1-65535. Checked here because wg retries a bad endpoint for over a
    /// minute before it gives up.
    /// </summary>
    internal static bool IsEndpoint(string value)
    {
        var colon = value.LastIndexOf(':');
        if (colon <= 0 || value.StartsWith('-') || value.Any(char.IsWhiteSpace)
            || !int.TryParse(value.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port is < 1 or > 65535)
        {
            return false;
        }

        var host = value[..colon];
        if (host.StartsWith('['))
        {
            return host.EndsWith(']') && IPAddress.TryParse(host.AsSpan(1, host.Length - 2), out var v6) && v6.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6;
        }

        return !host.Contains(':', StringComparison.Ordinal);
    }

    /// <summary>"addr/prefix" with a valid address and prefix length (host bits may be set, as in 10.188.0.1/24).</summary>
    internal static bool IsCidr(string value)
    {
        var slash = value.IndexOf('/', StringComparison.Ordinal);
        if (slash <= 0 || !IPAddress.TryParse(value.AsSpan(0, slash), out var address)
            || !int.TryParse(value.AsSpan(slash + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var prefix))
        {
            return false;
        }

        return prefix <= (address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? 32 : 128);
    }

    [GeneratedRegex(@"\A[A-Za-z0-9_.\-]{1,15}\z")]
    private static partial Regex InterfaceNamePattern();

    [GeneratedRegex(@"\btun\b")]
    private static partial Regex TunKind();

    [GeneratedRegex(@"\bwireguard\b")]
    private static partial Regex WireGuardKind();
}
