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

/// <summary>
/// A <see cref="RootFactAttribute"/> over the NativeAOT executables (<see cref="AotExecutables"/>). Without
/// <c>$WORMHOLE_AOT_DIR</c> it is skipped with the reason, except under CI (<c>$CI</c> set), where it runs and fails
/// saying so: CI must not pass without having run the executables it ships.
/// </summary>
public sealed class AotFactAttribute : FactAttribute
{
    public AotFactAttribute()
    {
        if (TestTools.MissingReason is { } reason)
        {
            Skip = reason;
        }
        else if (AotExecutables.MissingReason is { } aot && string.IsNullOrEmpty(Environment.GetEnvironmentVariable("CI")))
        {
            Skip = aot;
        }
    }
}
