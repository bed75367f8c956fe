using System.ComponentModel;
using System.Globalization;
using Wormhole.Tunnel.Hosting;

namespace Wormhole.Tunnel.WireGuard;

/// <summary>Creating, inspecting and running the tools: ip, wg and wireguard-go through the process runner.</summary>
public sealed partial class WgToolsDevice
{
    private async Task<string> CreateAsync(string name, CancellationToken ct)
    {
        var kernel = await RunAsync("ip", ["link", "add", "dev", name, "type", "wireguard"], null, null, ct);
        if (kernel.Succeeded)
        {
            LogCreated(name, KernelBackend);
            return KernelBackend;
        }

        LogKernelUnavailable(name, kernel.StandardError.Trim());

        // wireguard-go daemonises: the command returns once the TUN device and control socket exist.
        ProcessResult userspace;
        using (var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct))
        {
            timeout.CancelAfter(WireGuardGoStartTimeout);
            try
            {
                userspace = await RunAsync("wireguard-go", [name], null, null, timeout.Token);
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                throw new WireGuardCommandException(
                    $"`wireguard-go {name}` did not return within {WireGuardGoStartTimeout.TotalSeconds:0} s (with LOG_LEVEL set it keeps stdout open; unset it).");
            }
            catch (WireGuardCommandException ex)
            {
                throw new WireGuardCommandException(
                    $"Cannot create WireGuard interface {name}: `ip link add dev {name} type wireguard` failed ({Trim(kernel.StandardError)}) and {ex.Message}", ex);
            }
        }

        if (!userspace.Succeeded)
        {
            throw new WireGuardCommandException(
                $"Cannot create WireGuard interface {name}: `ip link add dev {name} type wireguard` failed ({Trim(kernel.StandardError)}) and `wireguard-go {name}` failed (exit code {userspace.ExitCode}): {Trim(userspace.StandardError + " " + userspace.StandardOutput)}");
        }

        var deadline = DateTime.UtcNow + LinkAppearTimeout;
        while (!await LinkExistsAsync(name, ct))
        {
            if (DateTime.UtcNow >= deadline)
            {
                throw new WireGuardCommandException($"`wireguard-go {name}` succeeded but interface {name} did not appear within {LinkAppearTimeout.TotalSeconds:0} s.");
            }

            await Task.Delay(PollInterval, ct);
        }

        LogCreated(name, WireGuardGoBackend);
        return WireGuardGoBackend;
    }

    private async Task<bool> LinkExistsAsync(string name, CancellationToken ct)
    {
        var result = await RunAsync("ip", ["link", "show", "dev", name], null, null, ct);
        if (result.Succeeded)
        {
            return true;
        }

        if (IsNoSuchDevice(result.StandardError))
        {
            return false;
        }

        throw new WireGuardCommandException(ProcessRunner.Describe("ip", ["link", "show", "dev", name]), result.ExitCode, result.StandardError);
    }

    private async Task<string> DetectBackendAsync(string name, CancellationToken ct)
    {
        var details = (await RunCheckedAsync("ip", ["-details", "link", "show", "dev", name], null, null, ct)).StandardOutput;

        // The first line holds the name; the kind ("wireguard" or "tun type tun …") is on the next ones.
        var kind = details.Contains('\n', StringComparison.Ordinal) ? details[details.IndexOf('\n', StringComparison.Ordinal)..] : details;
        if (TunKind().IsMatch(kind))
        {
            return WireGuardGoBackend;
        }

        if (WireGuardKind().IsMatch(kind))
        {
            return KernelBackend;
        }

        throw new WireGuardCommandException($"Interface {name} exists but is neither a WireGuard nor a TUN (wireguard-go) device; delete it or choose another name.");
    }

    private async Task<List<string>> ReadAddressesAsync(string name, CancellationToken ct)
    {
        var output = (await RunCheckedAsync("ip", ["-o", "address", "show", "dev", name], null, null, ct)).StandardOutput;
        var addresses = new List<string>();
        foreach (var line in output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var tokens = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            var i = Array.FindIndex(tokens, t => t is "inet" or "inet6");
            if (i >= 0 && i + 1 < tokens.Length && !tokens[i + 1].StartsWith("fe80:", StringComparison.OrdinalIgnoreCase))
            {
                addresses.Add(tokens[i + 1]);
            }
        }

        return addresses;
    }

    /// <summary>
    /// The interface's peers as <c>wg show NAME dump</c> prints them (one tab-separated line per peer: key, preshared
    /// key, endpoint, allowed IPs, handshake, bytes, keepalive). Its first line holds the interface's private key: it is
    /// skipped unread. Preshared keys are kept only to compare them with the wanted ones, never printed.
    /// </summary>
    private async Task<Dictionary<string, PeerState>> ReadPeerStateAsync(string name, CancellationToken ct)
    {
        var output = (await RunCheckedAsync("wg", ["show", name, "dump"], null, null, ct)).StandardOutput;
        var peers = new Dictionary<string, PeerState>(StringComparer.Ordinal);
        foreach (var line in output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Skip(1))
        {
            var fields = line.TrimEnd('\r').Split('\t');
            if (fields.Length < 8)
            {
                continue;
            }

            var allowed = fields[3] == "(none)" ? [] : fields[3].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            peers[fields[0]] = new PeerState(
                fields[2] == "(none)" ? null : fields[2],
                allowed.ToHashSet(StringComparer.Ordinal),
                int.TryParse(fields[7], NumberStyles.None, CultureInfo.InvariantCulture, out var keepalive) && keepalive > 0 ? keepalive : null,
                fields[1] == "(none)" ? null : fields[1]);
        }

        return peers;
    }

    /// <summary>One peer as the interface has it now.</summary>
    private sealed record PeerState(string? Endpoint, HashSet<string> AllowedIps, int? KeepaliveSeconds, string? PresharedKey)
    {
        public override string ToString() => $"PeerState {{ Endpoint = {Endpoint}, KeepaliveSeconds = {KeepaliveSeconds} }}";
    }

    private async Task<ProcessResult> RunCheckedAsync(string tool, IReadOnlyList<string> args, string? stdin, string? secret, CancellationToken ct)
    {
        var result = await RunAsync(tool, args, stdin, secret, ct);
        if (!result.Succeeded)
        {
            var stderr = secret is null ? result.StandardError : WgKeys.Redact(result.StandardError, secret);
            throw new WireGuardCommandException(ProcessRunner.Describe(tool, args), result.ExitCode, stderr);
        }

        return result;
    }

    private async Task<ProcessResult> RunAsync(string tool, IReadOnlyList<string> args, string? stdin, string? secret, CancellationToken ct)
    {
        var command = ProcessRunner.Describe(tool, args);
        LogRunning(command);
        try
        {
            return await _runner.RunAsync(tool, args, stdin, ct);
        }
        catch (Win32Exception ex)
        {
            var message = secret is null ? ex.Message : WgKeys.Redact(ex.Message, secret);
            throw new WireGuardCommandException($"`{command}` could not be started: {message}", ex);
        }
    }

    private static bool IsNoSuchDevice(string stderr) =>
        stderr.Contains("does not exist", StringComparison.OrdinalIgnoreCase)
        || stderr.Contains("Cannot find device", StringComparison.OrdinalIgnoreCase)
        || stderr.Contains("No such device", StringComparison.OrdinalIgnoreCase);

    private static string Trim(string s) => string.IsNullOrWhiteSpace(s) ? "no output on stderr" : s.Trim();
}
