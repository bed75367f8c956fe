using System.Globalization;
using System.Text;
using Wormhole.Tunnel.Metrics;

namespace Wormhole.Tunnel.Tests.Metrics;

internal static class MetricsTestMeter
{
    /// <summary>The text exposition of <paramref name="metrics"/>' registry, as /metrics serves it.</summary>
    public static async Task<string> ScrapeAsync(WormholeMetrics metrics)
    {
        using var stream = new MemoryStream();
        await metrics.Registry.CollectAndExportAsTextAsync(stream);
        return Encoding.UTF8.GetString(stream.ToArray());
    }

    /// <summary>Sample lines (not comments) of an exposition.</summary>
    public static string[] Samples(string exposition) =>
        exposition.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => !l.StartsWith('#')).ToArray();

    /// <summary>Samples of one metric name (exactly: <c>x_bucket</c> is not <c>x</c>), keyed by their label text.</summary>
    public static Dictionary<string, double> Series(string exposition, string name)
    {
        var result = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var line in Samples(exposition))
        {
            var space = line.LastIndexOf(' ');
            var key = line[..space];
            var brace = key.IndexOf('{', StringComparison.Ordinal);
            if ((brace < 0 ? key : key[..brace]) == name)
            {
                result[brace < 0 ? "" : key[brace..]] = double.Parse(line[(space + 1)..], CultureInfo.InvariantCulture);
            }
        }

        return result;
    }

    /// <summary>Scrapes until <paramref name="condition"/> holds (values recorded on another thread), at most 10 s.</summary>
    public static async Task<string> ScrapeUntilAsync(WormholeMetrics metrics, Func<string, bool> condition)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (true)
        {
            var text = await ScrapeAsync(metrics);
            if (condition(text))
            {
                return text;
            }

            if (timeout.IsCancellationRequested)
            {
                throw new TimeoutException($"the exposition never met the condition; last one:\n{text}");
            }

            await Task.Delay(10, CancellationToken.None);
        }
    }
}
