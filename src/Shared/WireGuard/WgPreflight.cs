using System.ComponentModel;
using Wormhole.Tunnel.Hosting;

namespace Wormhole.Tunnel.WireGuard;

/// <summary>Checks, before anything is changed, that this machine can bring up a WireGuard interface.</summary>
public static class WgPreflight
{
    public const string TunDevicePath = "/dev/net/tun";

    /// <summary>Null when everything needed is there, otherwise ONE sentence naming what is missing.</summary>
    public static Task<string?> CheckAsync(IProcessRunner runner, CancellationToken ct) =>
        CheckAsync(runner, Environment.IsPrivilegedProcess, p => File.Exists(p) || Directory.Exists(p), ct);

    /// <summary>
    /// Same as <see cref="CheckAsync(IProcessRunner, CancellationToken)"/> with the process's privilege and the
    /// file system given (tests use it to simulate a machine that lacks something). Tools are probed through
    /// <paramref name="runner"/>, so a namespaced or fake runner sees what its commands would see.
    /// </summary>
    public static async Task<string?> CheckAsync(IProcessRunner runner, bool isPrivileged, Func<string, bool> pathExists, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(runner);
        ArgumentNullException.ThrowIfNull(pathExists);
        if (!isPrivileged)
        {
            return "WireGuard setup needs root (or CAP_NET_ADMIN): run the process as root.";
        }

        if (!await RunsAsync(runner, "ip", ["-V"], ct))
        {
            return "The `ip` command is missing: install iproute2.";
        }

        if (!await RunsAsync(runner, "wg", ["--version"], ct))
        {
            return "The `wg` command is missing: install wireguard-tools.";
        }

        if (KernelModuleAvailable(pathExists))
        {
            return null;
        }

        if (!await RunsAsync(runner, "wireguard-go", ["--version"], ct))
        {
            return "Neither the WireGuard kernel module nor wireguard-go is available: install wireguard-go (or load the wireguard kernel module).";
        }

        if (!pathExists(TunDevicePath))
        {
            return $"{TunDevicePath} is missing, so wireguard-go cannot create its interface: give the process access to the TUN device.";
        }

        return null;
    }

    private static bool KernelModuleAvailable(Func<string, bool> pathExists)
    {
        if (pathExists("/sys/module/wireguard"))
        {
            return true;
        }

        // Built as a loadable module that `ip link add … type wireguard` would load on demand.
        try
        {
            var release = File.ReadAllText("/proc/sys/kernel/osrelease").Trim();
            var modulesDep = $"/lib/modules/{release}/modules.dep";
            return pathExists(modulesDep) && File.ReadLines(modulesDep).Any(l => l.Contains("/wireguard.ko", StringComparison.Ordinal));
        }
        catch (IOException)
        {
            return false;
        }
        catch (UnauthorizedAccessException)
        {
            return false;
        }
    }

    private static async Task<bool> RunsAsync(IProcessRunner runner, string tool, IReadOnlyList<string> args, CancellationToken ct)
    {
        try
        {
            return (await runner.RunAsync(tool, args, null, ct)).Succeeded;
        }
        catch (Win32Exception)
        {
            return false; // Process.Start: no such file.
        }
        catch (FileNotFoundException)
        {
            return false;
        }
    }
}
