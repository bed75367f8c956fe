using Prometheus;

namespace Wormhole.Tunnel.Metrics;

/// <summary>
/// Two process metrics the reference's Go client has and prometheus-net's <see cref="DotNetStats"/> does not, kept so
/// dashboards made for the reference still work: <c>process_resident_memory_bytes</c> and <c>process_open_fds</c>.
/// </summary>
internal static class ProcessExtras
{
    public static void Register(CollectorRegistry registry)
    {
        var factory = Prometheus.Metrics.WithCustomRegistry(registry);
        var resident = factory.CreateGauge("process_resident_memory_bytes", "Resident memory size in bytes.");
        var openFds = OperatingSystem.IsLinux() ? factory.CreateGauge("process_open_fds", "Number of open file descriptors.") : null;
        registry.AddBeforeCollectCallback(() =>
        {
            resident.Set(Environment.WorkingSet);
            if (openFds is null)
            {
                return;
            }

            try
            {
                openFds.Set(Directory.GetFileSystemEntries("/proc/self/fd").Length);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Not readable here: the last value stays.
            }
        });
    }
}
