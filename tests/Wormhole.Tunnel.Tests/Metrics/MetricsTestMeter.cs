namespace Wormhole.Tunnel.Tests.Metrics;

internal static class MetricsTestMeter
{
    /// <summary>A meter name no other test uses, so parallel tests never see each other's measurements.</summary>
    public static string UniqueName() => $"Wormhole.Tunnel.Tests.{Guid.NewGuid():N}";

    /// <summary>Sample lines (not comments) of an exposition.</summary>
    public static string[] Samples(string exposition) =>
        exposition.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => !l.StartsWith('#')).ToArray();
}
