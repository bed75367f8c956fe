using Wormhole.Tunnel.Hosting;

namespace Wormhole.Tunnel.E2E.Infrastructure;

/// <summary>Where the outside tools are, and whether this machine can run the namespace tests.</summary>
public static class TestTools
{
    private static readonly Lazy<string?> MissingReasonLazy = new(FindMissingReason);

    public static string Ip { get; } = ProcessRunner.FindOnPath("ip") ?? "/usr/sbin/ip";

    /// <summary>Null when namespace + wireguard-go tests can run here, otherwise why not.</summary>
    public static string? MissingReason => MissingReasonLazy.Value;

    /// <summary>Runs a command in the root namespace and throws with its stderr when it fails.</summary>
    public static async Task<ProcessResult> RunCheckedAsync(string fileName, params string[] args)
    {
        var result = await new ProcessRunner().RunAsync(fileName, args);
        if (!result.Succeeded)
        {
            throw new InvalidOperationException($"`{ProcessRunner.Describe(fileName, args)}` failed (exit code {result.ExitCode}): {result.StandardError.Trim()}");
        }

        return result;
    }

    private static string? FindMissingReason()
    {
        if (!OperatingSystem.IsLinux())
        {
            return "Needs Linux (network namespaces and wireguard-go).";
        }

        if (!Environment.IsPrivilegedProcess)
        {
            return "Needs root: creates network namespaces and WireGuard interfaces (CI runs these as root).";
        }

        foreach (var (tool, package) in new[] { ("ip", "iproute2"), ("wg", "wireguard-tools"), ("wireguard-go", "wireguard-go") })
        {
            if (ProcessRunner.FindOnPath(tool) is null && !File.Exists("/usr/sbin/" + tool))
            {
                return $"Needs `{tool}` on PATH: install {package}.";
            }
        }

        if (!File.Exists("/dev/net/tun"))
        {
            return "Needs /dev/net/tun for wireguard-go.";
        }

        return null;
    }
}

/// <summary>A fact that runs only as root with ip, wg and wireguard-go installed; skipped with the reason otherwise.</summary>
public sealed class RootFactAttribute : FactAttribute
{
    public RootFactAttribute()
    {
        if (TestTools.MissingReason is { } reason)
        {
            Skip = reason;
        }
    }
}
