// bench-spokesim: one real hub, many simulated spokes (bench/run, "one hub with many spokes").
//
// Each simulated spoke pairs through the hub's real pairing API (PSK-encrypted, a random WireGuard public key) and then
// runs the spoke's sync protocol: POST /sync from its own assigned tunnel address, long-polled with X-Wormhole-Wait,
// re-sent at once when its apps change (the pending long-poll is abandoned, as wormhole-client does). What is simulated:
// no wireguard-go per spoke; bench/run routes the assigned tunnel addresses over a veth into the hub's namespace, so
// the hub sees the same HTTP requests from the same source addresses, but not encrypted by WireGuard.
//
// Prints result rows "key<TAB>variant<TAB>value" on stdout (progress on stderr).
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text.Json;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Pairing;
using Wormhole.Tunnel.Sync;

namespace Wormhole.Tunnel.Bench;

internal static class Program
{
    public static async Task<int> Main(string[] args)
    {
        var o = Options.Parse(args);
        if (o is null)
        {
            await Console.Error.WriteLineAsync(
                "usage: bench-spokesim --pairing URL --token T --spokes N --apps K --hub-api URL --hub-apps-file PATH --hub-pid PID [--reps R]");
            return 2;
        }

        using var stop = new CancellationTokenSource();
        var sim = new Simulation(o);
        try
        {
            await sim.RunAsync(stop.Token);
            return 0;
        }
        catch (SimulationException ex)
        {
            await Console.Error.WriteLineAsync("spokesim: " + ex.Message);
            return 1;
        }
        finally
        {
            await stop.CancelAsync();
            await sim.StopAsync();
        }
    }
}

internal sealed class SimulationException(string message) : Exception(message);

internal sealed record Options(Uri Pairing, string Token, int Spokes, int Apps, Uri HubApi, string HubAppsFile, int HubPid, int Reps)
{
    public static Options? Parse(string[] args)
    {
        var d = new Dictionary<string, string>(StringComparer.Ordinal);
        for (var i = 0; i + 1 < args.Length; i += 2)
        {
            d[args[i]] = args[i + 1];
        }

        try
        {
            return new Options(
                new Uri(d["--pairing"].TrimEnd('/') + "/"),
                d["--token"],
                int.Parse(d["--spokes"], CultureInfo.InvariantCulture),
                int.Parse(d["--apps"], CultureInfo.InvariantCulture),
                new Uri(d["--hub-api"].TrimEnd('/') + "/"),
                d["--hub-apps-file"],
                int.Parse(d["--hub-pid"], CultureInfo.InvariantCulture),
                d.TryGetValue("--reps", out var r) ? int.Parse(r, CultureInfo.InvariantCulture) : 3);
        }
        catch (Exception ex) when (ex is KeyNotFoundException or FormatException or UriFormatException)
        {
            return null;
        }
    }
}

internal sealed class Simulation(Options o)
{
    private readonly List<SimSpoke> _spokes = [];
    private readonly List<Task> _loops = [];
    private readonly CancellationTokenSource _loopStop = new();
    private readonly HttpClient _api = new() { Timeout = TimeSpan.FromSeconds(10) };

    public async Task RunAsync(CancellationToken cancellationToken)
    {
        // 1. Pairing, through the hub's real pairing API, one spoke after another (the hub serialises pairings anyway).
        var codec = new PairingCodec(o.Token);
        using var pairingHttp = new HttpClient { Timeout = TimeSpan.FromSeconds(60) };
        var started = Stopwatch.GetTimestamp();
        var pairings = new PairingResponse[o.Spokes];
        var pairMs = new double[o.Spokes];
        for (var i = 0; i < o.Spokes; i++)
        {
            var one = Stopwatch.GetTimestamp();
            pairings[i] = await PairAsync(pairingHttp, codec, SpokeName(i), cancellationToken);
            pairMs[i] = Stopwatch.GetElapsedTime(one).TotalMilliseconds;
        }

        var edge = Math.Min(10, o.Spokes);
        Row("pair_total_s", Stopwatch.GetElapsedTime(started).TotalSeconds);
        Row("pair_first10_ms", Median(pairMs[..edge]));
        Row("pair_last10_ms", Median(pairMs[^edge..]));
        Progress($"paired {o.Spokes} spokes in {Stopwatch.GetElapsedTime(started).TotalSeconds:0.0} s (first {edge}: {Median(pairMs[..edge]):0} ms each, last {edge}: {Median(pairMs[^edge..]):0} ms each)");

        // 2. Every spoke starts syncing its apps; time until the hub exposes all of them.
        for (var i = 0; i < o.Spokes; i++)
        {
            var spoke = new SimSpoke(SpokeName(i), pairings[i]);
            spoke.SetApps(BaseApps(spoke, null));
            _spokes.Add(spoke);
        }

        var total = o.Spokes * o.Apps;
        started = Stopwatch.GetTimestamp();
        foreach (var spoke in _spokes)
        {
            _loops.Add(spoke.RunAsync(_loopStop.Token));
        }

        await WaitForHubAsync(apps => apps.Count == total, TimeSpan.FromSeconds(120), $"the hub to expose all {total} apps", cancellationToken);
        Row("initial_s", Stopwatch.GetElapsedTime(started).TotalSeconds);
        Progress($"hub exposes {total} apps of {o.Spokes} spokes after {Stopwatch.GetElapsedTime(started).TotalSeconds:0.00} s");

        // 3. Idle: every spoke holds a long-poll.
        await Task.Delay(TimeSpan.FromSeconds(3), cancellationToken);
        var (ticks0, t0) = (HubCpuTicks(), Stopwatch.GetTimestamp());
        await Task.Delay(TimeSpan.FromSeconds(10), cancellationToken);
        var idleCpu = (HubCpuTicks() - ticks0) * 10.0 / Stopwatch.GetElapsedTime(t0).TotalMilliseconds * 100;
        Row("idle_cpu_pct", idleCpu);
        Row("idle_rss_mb", HubRssMb());
        Row("threads", HubThreads());
        Progress($"idle: hub CPU {idleCpu:0.0} %, RSS {HubRssMb():0} MB");

        for (var rep = 1; rep <= o.Reps; rep++)
        {
            // 4. Hub → all spokes: a new app in the hub's apps file reaches every spoke (long-poll answers).
            var marker = $"hubapp-{rep}";
            foreach (var s in _spokes)
            {
                s.Expect(marker);
            }

            var cpu0 = HubCpuTicks();
            var begin = Stopwatch.GetTimestamp();
            await WriteHubAppsAsync(marker, cancellationToken);
            await WaitAsync(() => _spokes.All(s => s.SeenAt != 0), TimeSpan.FromSeconds(30), "every spoke to receive the hub's new app", cancellationToken);
            var latencies = _spokes.Select(s => Stopwatch.GetElapsedTime(begin, s.SeenAt).TotalMilliseconds).Order().ToArray();
            Row("h2s_p50_ms", Percentile(latencies, 50));
            Row("h2s_p99_ms", Percentile(latencies, 99));
            Row("h2s_max_ms", latencies[^1]);
            Row("h2s_cpu_ms", (HubCpuTicks() - cpu0) * 10.0);
            Progress($"rep {rep}: hub app reached all spokes: p50 {Percentile(latencies, 50):0} ms, p99 {Percentile(latencies, 99):0} ms, max {latencies[^1]:0} ms");
            await Task.Delay(TimeSpan.FromMilliseconds(500), cancellationToken);

            // 5. One spoke → hub, while every other spoke holds a long-poll.
            var one = _spokes[(rep * 37) % _spokes.Count];
            var name = $"one-{rep}";
            begin = Stopwatch.GetTimestamp();
            one.SetApps(BaseApps(one, name));
            await WaitForHubAsync(apps => apps.Any(a => a.Name == name), TimeSpan.FromSeconds(30), "the hub to expose one spoke's new app", cancellationToken);
            Row("s2h_one_ms", Stopwatch.GetElapsedTime(begin).TotalMilliseconds);
            Progress($"rep {rep}: one spoke's new app exposed on the hub after {Stopwatch.GetElapsedTime(begin).TotalMilliseconds:0} ms");
            one.SetApps(BaseApps(one, null));
            await Task.Delay(TimeSpan.FromMilliseconds(500), cancellationToken);

            // 6. Every spoke at once → hub (a burst of syncs).
            var burst = $"burst-{rep}";
            cpu0 = HubCpuTicks();
            begin = Stopwatch.GetTimestamp();
            foreach (var s in _spokes)
            {
                s.SetApps(BaseApps(s, burst));
            }

            await WaitForHubAsync(apps => apps.Count(a => a.Name == burst) == _spokes.Count, TimeSpan.FromSeconds(60), "the hub to expose every spoke's new app", cancellationToken);
            Row("s2h_all_ms", Stopwatch.GetElapsedTime(begin).TotalMilliseconds);
            Row("burst_cpu_ms", (HubCpuTicks() - cpu0) * 10.0);
            Progress($"rep {rep}: all {_spokes.Count} spokes' new apps exposed on the hub after {Stopwatch.GetElapsedTime(begin).TotalMilliseconds:0} ms");
            await Task.Delay(TimeSpan.FromMilliseconds(500), cancellationToken);
        }

        Row("rss_after_mb", HubRssMb());
        Row("sync_failures", _spokes.Sum(s => s.Failures));
        Row("sync_rounds", _spokes.Sum(s => s.Rounds));
    }

    public async Task StopAsync()
    {
        await _loopStop.CancelAsync();
        try
        {
            await Task.WhenAll(_loops);
        }
        catch (OperationCanceledException)
        {
        }

        foreach (var s in _spokes)
        {
            s.Dispose();
        }

        _api.Dispose();
        _loopStop.Dispose();
    }

    private IReadOnlyList<AppDescriptor> BaseApps(SimSpoke spoke, string? extra)
    {
        var apps = Enumerable.Range(0, o.Apps)
            .Select(i => new AppDescriptor($"app-{i}", $"{spoke.Ip}:{20000 + i}", spoke.Name, 80))
            .ToList();
        if (extra is not null)
        {
            apps.Add(new AppDescriptor(extra, $"{spoke.Ip}:{20000 + o.Apps}", spoke.Name, 80));
        }

        return apps;
    }

    private async Task WriteHubAppsAsync(string app, CancellationToken cancellationToken)
    {
        var tmp = o.HubAppsFile + ".tmp";
        await File.WriteAllTextAsync(tmp, $"apps:\n  - name: {app}\n    address: 127.0.0.1:8088\n", cancellationToken);
        File.Move(tmp, o.HubAppsFile, overwrite: true);
    }

    private async Task WaitForHubAsync(Func<List<SyncApp>, bool> done, TimeSpan timeout, string what, CancellationToken cancellationToken)
    {
        var deadline = Stopwatch.GetTimestamp() + (long)(timeout.TotalSeconds * Stopwatch.Frequency);
        while (Stopwatch.GetTimestamp() < deadline)
        {
            try
            {
                var json = await _api.GetByteArrayAsync(new Uri(o.HubApi, "api/apps"), cancellationToken);
                var apps = JsonSerializer.Deserialize<List<SyncApp>>(json) ?? [];
                if (done(apps))
                {
                    return;
                }
            }
            catch (HttpRequestException)
            {
            }

            await Task.Delay(20, cancellationToken);
        }

        throw new SimulationException($"timed out after {timeout.TotalSeconds:0} s waiting for {what}");
    }

    private static async Task WaitAsync(Func<bool> done, TimeSpan timeout, string what, CancellationToken cancellationToken)
    {
        var deadline = Stopwatch.GetTimestamp() + (long)(timeout.TotalSeconds * Stopwatch.Frequency);
        while (!done())
        {
            if (Stopwatch.GetTimestamp() > deadline)
            {
                throw new SimulationException($"timed out after {timeout.TotalSeconds:0} s waiting for {what}");
            }

            await Task.Delay(5, cancellationToken);
        }
    }

    private async Task<PairingResponse> PairAsync(HttpClient http, PairingCodec codec, string name, CancellationToken cancellationToken)
    {
        var key = Convert.ToBase64String(RandomNumberGenerator.GetBytes(32));
        using var content = new ByteArrayContent(codec.EncodeRequest(new PairingRequest(name, new PairingWireGuard(key), [])));
        using var response = await http.PostAsync(new Uri(o.Pairing, "pairing"), content, cancellationToken);
        var body = await response.Content.ReadAsByteArrayAsync(cancellationToken);
        if (response.StatusCode != HttpStatusCode.OK)
        {
            throw new SimulationException($"pairing {name} failed with status {(int)response.StatusCode}: {System.Text.Encoding.UTF8.GetString(body)}");
        }

        return codec.DecodeResponse(body, out var error) ?? throw new SimulationException($"pairing {name}: {error}");
    }

    private long HubCpuTicks()
    {
        var stat = File.ReadAllText($"/proc/{o.HubPid}/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
    }

    private double HubRssMb() => StatusField("VmRSS:") / 1024.0;

    private double HubThreads() => StatusField("Threads:");

    private long StatusField(string name)
    {
        foreach (var line in File.ReadLines($"/proc/{o.HubPid}/status"))
        {
            if (line.StartsWith(name, StringComparison.Ordinal))
            {
                return long.Parse(line[name.Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture);
            }
        }

        return 0;
    }

    private static string SpokeName(int i) => $"sim-{i:000}";

    private static double Median(double[] values) => Percentile(values.Order().ToArray(), 50);

    private static double Percentile(double[] sorted, double p) =>
        sorted[Math.Clamp((int)Math.Ceiling(p / 100 * sorted.Length) - 1, 0, sorted.Length - 1)];

    private static void Row(string key, double value) =>
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"s250.{key}\tsim\t{value:0.###}"));

    private static void Progress(string text) => Console.Error.WriteLine("  spokesim: " + text);
}

/// <summary>One simulated spoke: the sync loop of wormhole-client, from the spoke's assigned tunnel address.</summary>
internal sealed class SimSpoke : IDisposable
{
    private readonly Lock _lock = new();
    private readonly HttpClient _http;
    private readonly Uri _sync;
    private IReadOnlyList<AppDescriptor> _apps = [];
    private CancellationTokenSource? _inflight;
    private string? _expected;
    private long _seenAt;

    public SimSpoke(string name, PairingResponse pairing)
    {
        Name = name;
        Ip = IPAddress.Parse(pairing.AssignedIp);
        var syncBase = pairing.SyncServerAddress!.TrimEnd('/') + "/";
        _sync = new Uri(new Uri(syncBase), "sync");
        var local = Ip;
        _http = new HttpClient(new SocketsHttpHandler
        {
            UseProxy = false,
            ConnectTimeout = TimeSpan.FromSeconds(5),
            ConnectCallback = async (ctx, ct) =>
            {
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                try
                {
                    socket.Bind(new IPEndPoint(local, 0));
                    await socket.ConnectAsync(ctx.DnsEndPoint, ct);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
        })
        {
            Timeout = TimeSpan.FromSeconds(60),
        };
    }

    public string Name { get; }

    public IPAddress Ip { get; }

    public long SeenAt => Interlocked.Read(ref _seenAt);

    public int Failures { get; private set; }

    public int Rounds { get; private set; }

    public void Expect(string app)
    {
        Interlocked.Exchange(ref _seenAt, 0);
        Volatile.Write(ref _expected, app);
    }

    /// <summary>New apps: sent at once (a pending long-poll is abandoned, as wormhole-client does).</summary>
    public void SetApps(IReadOnlyList<AppDescriptor> apps)
    {
        Volatile.Write(ref _apps, apps);
        lock (_lock)
        {
            _inflight?.Cancel();
        }
    }

    public async Task RunAsync(CancellationToken stop)
    {
        string? version = null;
        while (!stop.IsCancellationRequested)
        {
            using var round = CancellationTokenSource.CreateLinkedTokenSource(stop);
            lock (_lock)
            {
                _inflight = round;
            }

            var apps = Volatile.Read(ref _apps);
            using var request = new HttpRequestMessage(HttpMethod.Post, _sync) { Content = new ByteArrayContent(SyncCodec.Encode(Name, null, apps)) };
            if (version is not null)
            {
                request.Headers.TryAddWithoutValidation("X-Wormhole-Wait", version);
            }

            try
            {
                using var response = await _http.SendAsync(request, round.Token);
                var body = await response.Content.ReadAsByteArrayAsync(round.Token);
                var now = Stopwatch.GetTimestamp();
                if (response.StatusCode != HttpStatusCode.OK)
                {
                    Failures++;
                    version = null;
                    await Task.Delay(200, stop);
                    continue;
                }

                Rounds++;
                version = response.Headers.TryGetValues("X-Wormhole-Version", out var v) ? v.FirstOrDefault() : null;
                var expected = Volatile.Read(ref _expected);
                if (expected is not null && SeenAt == 0 && SyncCodec.Decode(body, out _)?.Apps?.Any(a => a.Name == expected) == true)
                {
                    Interlocked.Exchange(ref _seenAt, now);
                }
            }
            catch (OperationCanceledException) when (!stop.IsCancellationRequested)
            {
                // Our apps changed: send them now.
            }
            catch (HttpRequestException)
            {
                Failures++;
                version = null;
                await Task.Delay(200, stop);
            }
            finally
            {
                lock (_lock)
                {
                    _inflight = null;
                }
            }
        }
    }

    public void Dispose() => _http.Dispose();
}
