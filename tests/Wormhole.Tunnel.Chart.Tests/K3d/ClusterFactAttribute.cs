using Wormhole.Tunnel.Chart.Tests.Infrastructure;

namespace Wormhole.Tunnel.Chart.Tests.K3d;

/// <summary>A test against a real k3d cluster: runs only with WORMHOLE_K3D=1 and docker and k3d on PATH; skipped otherwise.</summary>
public sealed class ClusterFactAttribute : FactAttribute
{
    public ClusterFactAttribute()
    {
        if (MissingReason is { } reason)
        {
            Skip = reason;
        }
    }

    /// <summary>Why the k3d suite cannot run here, or null when it can.</summary>
    public static string? MissingReason =>
        Environment.GetEnvironmentVariable("WORMHOLE_K3D") != "1" ? "k3d suite: set WORMHOLE_K3D=1 (needs Docker and k3d) to run it"
        : Tools.Find("docker") is null ? "k3d suite: docker is not on PATH"
        : Tools.Find("k3d") is null ? "k3d suite: k3d is not on PATH"
        : null;
}
