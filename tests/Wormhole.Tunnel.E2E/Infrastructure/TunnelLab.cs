using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Wormhole.Tunnel.E2E.Infrastructure;

/// <summary>
/// A hub site and spoke sites on one <see cref="TestNetwork"/>, running the real executables as separate processes
/// inside their namespaces, with state directories and apps files of their own.
/// </summary>
public sealed class TunnelLab : IAsyncDisposable
{
    public const string Token = "e2e-invite-token-0123456789";

    /// <summary>How long anything expected may take before a test fails (a bound for failure, not a speed target).</summary>
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);
    private readonly DirectoryInfo _work = Directory.CreateTempSubdirectory("wh-e2e-");
    private readonly List<IDisposable> _backends = [];

    public TunnelLab(TestNetwork network)
    {
        Network = network;
    }

    public TestNetwork Network { get; }

    public Site Hub => Network["hub"];

    /// <summary>The hub's tunnel address in this lab (unique per network, so labs can run side by side).</summary>
    public IPAddress HubTunnelAddress => IPAddress.Parse($"10.189.{Network.SubnetOctet}.1");

    public static async Task<TunnelLab> CreateAsync(params string[] spokes) =>
        new(await TestNetwork.CreateAsync(["hub", .. spokes]));

    /// <summary>A lab that runs the NativeAOT executables from <see cref="AotExecutables"/>.</summary>
    public static async Task<TunnelLab> CreateAotAsync(params string[] spokes) =>
        new(await TestNetwork.CreateAsync(["hub", .. spokes])) { ServerExecutable = AotExecutables.Server, ClientExecutable = AotExecutables.Client };

    public string WorkDir(Site site) => Path.Combine(_work.FullName, site.Name);

    public string StateDir(Site site) => Path.Combine(_work.FullName, site.Name, "state");

    public string AppsFile(Site site) => Path.Combine(_work.FullName, site.Name, "apps.yaml");

    /// <summary>Writes the site's apps file atomically (rename), as an editor or a ConfigMap update would.</summary>
    public void WriteApps(Site site, params (string Name, string Address)[] apps)
    {
        var text = new StringBuilder("apps:\n");
        foreach (var (name, address) in apps)
        {
            text.Append("  - name: ").Append(name).Append("\n    address: ").Append(address).Append('\n');
        }

        Directory.CreateDirectory(Path.GetDirectoryName(AppsFile(site))!);
        var temp = AppsFile(site) + ".tmp";
        File.WriteAllText(temp, apps.Length == 0 ? "apps: []\n" : text.ToString());
        File.Move(temp, AppsFile(site), overwrite: true);
    }

    /// <summary>The hub's peer name (the prefix of the objects it makes appear on spokes).</summary>
    public string HubName { get; init; } = "hub";

    /// <summary>The hub executable this lab runs (the build's, or the NativeAOT one: <see cref="AotExecutables"/>).</summary>
    public string ServerExecutable { get; init; } = Executables.Server;

    /// <summary>The spoke executable this lab runs.</summary>
    public string ClientExecutable { get; init; } = Executables.Client;

    /// <param name="appsFile">Offer the hub's apps file (false when the hub uses the Kubernetes source).</param>
    public async Task<ProcessHandle> StartHubAsync(IEnumerable<string>? extra = null, string token = Token, bool appsFile = true)
    {
        var args = new List<string>
        {
            "--name", HubName, "--wg-public-host", Hub.LanAddress.ToString(), "--wg-interface", Hub.WgInterfaceName,
            "--wg-internal-host", HubTunnelAddress.ToString(), "--state-dir", StateDir(Hub), "--metrics",
        };
        args.AddRange(extra ?? []);
        if (appsFile)
        {
            args.AddRange(["--apps-file", AppsFile(Hub)]);
        }

        EnsureAppsFile(Hub);
        var process = await Hub.StartProcessAsync(ServerExecutable, args, new Dictionary<string, string> { ["INVITE_TOKEN"] = token });
        await process.WaitForOutputAsync($"Hub {HubName} started", Patience);
        return process;
    }

    public async Task<ProcessHandle> StartSpokeAsync(Site spoke, string token = Token, IEnumerable<string>? extra = null, bool waitForPairing = true, bool appsFile = true)
    {
        var args = new List<string>
        {
            "--name", spoke.Name, "--server", $"http://{Hub.LanAddress}:8080", "--wg-interface", spoke.WgInterfaceName,
            "--state-dir", StateDir(spoke), "--metrics",
        };
        args.AddRange(extra ?? []);
        if (appsFile)
        {
            args.AddRange(["--apps-file", AppsFile(spoke)]);
        }

        EnsureAppsFile(spoke);
        var process = await spoke.StartProcessAsync(ClientExecutable, args, new Dictionary<string, string> { ["INVITE_TOKEN"] = token });
        if (waitForPairing)
        {
            await process.WaitForOutputAsync("assigned IP", Patience);
        }

        return process;
    }

    /// <summary>A tiny HTTP backend inside the site: answers every request with <paramref name="body"/> and closes.</summary>
    public int StartBackend(Site site, string body)
    {
        var listener = site.ListenTcp(IPAddress.Loopback, 0);
        _backends.Add(listener);
        var port = ((IPEndPoint)listener.LocalEndPoint!).Port;
        _ = Task.Run(async () =>
        {
            while (true)
            {
                Socket client;
                try
                {
                    client = await listener.AcceptAsync();
                }
                catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
                {
                    return;
                }

                _ = Task.Run(async () =>
                {
                    using (client)
                    {
                        var buffer = new byte[4096];
                        var seen = new StringBuilder();
                        while (!seen.ToString().Contains("\r\n\r\n", StringComparison.Ordinal))
                        {
                            var n = await client.ReceiveAsync(buffer);
                            if (n == 0)
                            {
                                return;
                            }

                            seen.Append(Encoding.ASCII.GetString(buffer, 0, n));
                        }

                        await client.SendAsync(Encoding.ASCII.GetBytes($"HTTP/1.0 200 OK\r\nContent-Length: {body.Length}\r\nConnection: close\r\n\r\n{body}"));
                        client.Shutdown(SocketShutdown.Both);
                    }
                });
            }
        });
        return port;
    }

    /// <summary>GET the site's admin API (inside its namespace).</summary>
    public static async Task<JsonNode> ApiAsync(Site site, string path)
    {
        using var response = await site.HttpGetAsync($"http://127.0.0.1:8082{path}");
        response.EnsureSuccessStatusCode();
        return JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
    }

    /// <summary>DELETE /api/peers/v1/<paramref name="peer"/> on the site's admin API with basic auth <c>user:password</c>; the body is buffered.</summary>
    public static async Task<HttpResponseMessage> DeletePeerAsync(Site site, string peer, string credentials)
    {
        using var client = site.CreateHttpClient();
        using var request = new HttpRequestMessage(HttpMethod.Delete, new Uri($"http://127.0.0.1:8082/api/peers/v1/{Uri.EscapeDataString(peer)}"));
        request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes(credentials)));
        return await client.SendAsync(request, HttpCompletionOption.ResponseContentRead);
    }

    /// <summary>The port of the remote app <paramref name="app"/> exposed on <paramref name="site"/>, or null.</summary>
    public static async Task<int?> ExposedPortAsync(Site site, string app)
    {
        var apps = (await ApiAsync(site, "/api/apps")).AsArray();
        var entry = apps.FirstOrDefault(a => (string?)a!["name"] == app);
        return entry is null ? null : int.Parse(((string)entry["address"]!).Split(':')[1], System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>One HTTP/1.0 GET over a raw TCP connection from inside the site; null when the connection fails or closes empty.</summary>
    public static async Task<string?> FetchAsync(Site site, int port, TimeSpan? timeout = null)
    {
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(5));
        try
        {
            using var socket = await site.ConnectTcpAsync(IPAddress.Loopback, port, cts.Token);
            await socket.SendAsync("GET / HTTP/1.0\r\nHost: x\r\n\r\n"u8.ToArray(), cts.Token);
            var received = new MemoryStream();
            var buffer = new byte[8192];
            int n;
            while ((n = await socket.ReceiveAsync(buffer, cts.Token)) > 0)
            {
                received.Write(buffer, 0, n);
            }

            var text = Encoding.ASCII.GetString(received.ToArray());
            var split = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
            return split < 0 ? null : text[(split + 4)..];
        }
        catch (Exception ex) when (ex is SocketException or OperationCanceledException or IOException)
        {
            return null;
        }
    }

    /// <summary>Polls <paramref name="condition"/> (bounded) and returns how long it took to become true.</summary>
    public static async Task<TimeSpan> EventuallyAsync(Func<Task<bool>> condition, string what, TimeSpan? timeout = null)
    {
        var watch = Stopwatch.StartNew();
        var limit = timeout ?? Patience;
        while (!await condition())
        {
            if (watch.Elapsed > limit)
            {
                throw new TimeoutException($"Timed out after {limit.TotalSeconds} s waiting until {what}.");
            }

            await Task.Delay(10);
        }

        return watch.Elapsed;
    }

    public static Task<TimeSpan> EventuallyAsync(Func<bool> condition, string what, TimeSpan? timeout = null) =>
        EventuallyAsync(() => Task.FromResult(condition()), what, timeout);

    public async ValueTask DisposeAsync()
    {
        foreach (var backend in _backends)
        {
            backend.Dispose();
        }

        await Network.DisposeAsync();
        try
        {
            _work.Delete(recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private void EnsureAppsFile(Site site)
    {
        if (!File.Exists(AppsFile(site)))
        {
            WriteApps(site);
        }
    }
}

/// <summary>Where the built hub and spoke executables are (same configuration as this test assembly).</summary>
public static class Executables
{
    private static readonly Lazy<(string Server, string Client, string KubeEmulator)> Paths = new(() =>
    {
        var baseDir = new DirectoryInfo(AppContext.BaseDirectory);
        var framework = baseDir.Name;                  // net10.0
        var configuration = baseDir.Parent!.Name;      // Debug / Release
        var root = baseDir;
        while (root is not null && !File.Exists(Path.Combine(root.FullName, "Wormhole.Tunnel.sln")))
        {
            root = root.Parent;
        }

        if (root is null)
        {
            throw new InvalidOperationException("Cannot find the repository root (Wormhole.Tunnel.sln) above " + AppContext.BaseDirectory);
        }

        string Find(string project, string name)
        {
            var path = Path.Combine(root.FullName, project, "bin", configuration, framework, name);
            return File.Exists(path) ? path : throw new FileNotFoundException($"Build the solution first: {path} is missing.");
        }

        return (Find("src/Server", "wormhole-server"), Find("src/Client", "wormhole-client"), Find("tests/Wormhole.Tunnel.KubeEmulator", "kube-emulator"));
    });

    public static string Server => Paths.Value.Server;

    public static string Client => Paths.Value.Client;

    public static string KubeEmulator => Paths.Value.KubeEmulator;
}

/// <summary>
/// The NativeAOT executables published by <c>scripts/publish-aot DIR</c>: <c>DIR/server/wormhole-server</c> and
/// <c>DIR/client/wormhole-client</c>, with DIR from <c>$WORMHOLE_AOT_DIR</c> (scripts/test sets it).
/// </summary>
public static class AotExecutables
{
    public const string Variable = "WORMHOLE_AOT_DIR";

    public static string? Directory => Environment.GetEnvironmentVariable(Variable) is { Length: > 0 } dir ? dir : null;

    public static string Server => Find("server", "wormhole-server");

    public static string Client => Find("client", "wormhole-client");

    /// <summary>Why the AOT tests cannot run, or null.</summary>
    public static string? MissingReason => Directory is null
        ? $"${Variable} is not set: publish the NativeAOT executables with `bash scripts/publish-aot DIR` and set {Variable}=DIR (scripts/test does both)."
        : null;

    private static string Find(string side, string name)
    {
        var dir = Directory ?? throw new InvalidOperationException(MissingReason);
        var path = Path.Combine(dir, side, name);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"${Variable}={dir}, but {path} is missing: run `bash scripts/publish-aot {dir}`.");
        }

        if (File.Exists(Path.Combine(dir, side, name + ".dll")))
        {
            throw new InvalidOperationException($"{path} is not a NativeAOT executable ({name}.dll lies beside it): run `bash scripts/publish-aot {dir}`.");
        }

        return path;
    }
}

/// <summary>Appends measured timings to a file the test script prints (numbers come from runs).</summary>
public static class Timings
{
    private static readonly Lock Gate = new();

    public static void Record(string what, IReadOnlyList<TimeSpan> samples)
    {
        var path = Environment.GetEnvironmentVariable("WORMHOLE_TIMINGS_FILE") ?? Path.Combine(Path.GetTempPath(), "wormhole-e2e-timings.txt");
        var sorted = samples.Select(s => s.TotalMilliseconds).OrderBy(x => x).ToList();
        double P(double q) => sorted[Math.Min(sorted.Count - 1, (int)Math.Ceiling(q * sorted.Count) - 1)];
        var line = string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{what}: n={sorted.Count} min={sorted[0]:0} ms p50={P(0.5):0} ms p99={P(0.99):0} ms max={sorted[^1]:0} ms\n");
        lock (Gate)
        {
            File.AppendAllText(path, line);
        }
    }
}
