namespace Wormhole.Tunnel.Chart.Tests.Infrastructure;

/// <summary>Timings scripts/test prints at its end (the file the end-to-end tests write too: WORMHOLE_TIMINGS_FILE).</summary>
public static class Timings
{
    private static readonly Lock Gate = new();

    public static void Record(string what, TimeSpan took)
    {
        var path = Environment.GetEnvironmentVariable("WORMHOLE_TIMINGS_FILE") ?? Path.Combine(Path.GetTempPath(), "wormhole-e2e-timings.txt");
        var line = string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{what}: {took.TotalMilliseconds:0} ms\n");
        lock (Gate)
        {
            File.AppendAllText(path, line);
        }
    }
}
