using System.Security.Cryptography;
using System.Text.RegularExpressions;
using Wormhole.Tunnel.Hosting;

namespace Wormhole.Tunnel.E2E.Infrastructure;

/// <summary>
/// Sites on one LAN, each a network namespace (<c>wh-&lt;6 hex&gt;-&lt;site&gt;</c>, <c>lo</c> up) whose <c>eth0</c>
/// is a veth plugged into a bridge in a separate "lan" namespace. Addresses come from a /24 picked per instance
/// (<c>10.213.N.0/24</c>, site i gets <c>.(10+i)</c>); all names carry a random id, so instances run in parallel.
/// Dispose removes everything: processes, WireGuard links (and wireguard-go), namespaces, hosts files, sockets.
/// </summary>
public sealed partial class TestNetwork : IAsyncDisposable
{
    private static readonly HashSet<int> SubnetsInUse = [];
    private static readonly Lock SubnetsLock = new();

    private readonly List<Site> _sites = [];
    private int _disposed;

    private TestNetwork(string id, int subnet)
    {
        Id = id;
        SubnetOctet = subnet;
        LanNamespace = $"wh-{id}-lan";
    }

    /// <summary>The random id in every name this instance creates.</summary>
    public string Id { get; }

    /// <summary>N in 10.213.N.0/24.</summary>
    public int SubnetOctet { get; }

    /// <summary>The namespace holding the bridge <c>br0</c> all sites are plugged into.</summary>
    public string LanNamespace { get; }

    public IReadOnlyList<Site> Sites => _sites;

    public Site this[string name] =>
        _sites.Find(s => s.Name == name) ?? throw new KeyNotFoundException($"No site '{name}' (sites: {string.Join(", ", _sites.Select(s => s.Name))}).");

    public static async Task<TestNetwork> CreateAsync(params string[] siteNames)
    {
        ArgumentNullException.ThrowIfNull(siteNames);
        if (siteNames.Length is 0 or > 9)
        {
            throw new ArgumentException("Between 1 and 9 sites.", nameof(siteNames));
        }

        foreach (var name in siteNames)
        {
            if (!SiteName().IsMatch(name) || name == "lan")
            {
                throw new ArgumentException($"Site name '{name}' must be 1-20 of [a-z0-9-] and not 'lan'.", nameof(siteNames));
            }
        }

        if (siteNames.Distinct().Count() != siteNames.Length)
        {
            throw new ArgumentException("Site names must be distinct.", nameof(siteNames));
        }

        var network = new TestNetwork(RandomNumberGenerator.GetHexString(6, lowercase: true), ReserveSubnet());
        try
        {
            await network.BuildAsync(siteNames);
            return network;
        }
        catch
        {
            await network.DisposeAsync();
            throw;
        }
    }

    /// <summary>Removes everything this network created. Never throws; every step is best effort and bounded.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }

        var namespaces = _sites.Select(s => s.Namespace).Append(LanNamespace).ToList();

        // 1. Processes started through the sites.
        foreach (var site in _sites)
        {
            await BestEffortAsync(site.KillProcessesAsync);
        }

        // 2. WireGuard links: deleting a wireguard-go TUN makes wireguard-go exit and remove its socket.
        var wgNames = new HashSet<string>(_sites.Select(s => s.WgInterfaceName), StringComparer.Ordinal);
        foreach (var site in _sites)
        {
            await BestEffortAsync(async () =>
            {
                foreach (var link in await TryListLinksAsync(site.Namespace))
                {
                    if (link.StartsWith("wg", StringComparison.Ordinal))
                    {
                        wgNames.Add(link);
                        await TryRunAsync(TestTools.Ip, "-n", site.Namespace, "link", "delete", "dev", link);
                    }
                }
            });
        }

        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(3);
        while (wgNames.Any(n => File.Exists(SocketPath(n))) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }

        // 3. Anything still living in our namespaces (a wireguard-go that did not exit, strays).
        foreach (var ns in namespaces)
        {
            await BestEffortAsync(async () =>
            {
                var pids = await TryRunAsync(TestTools.Ip, "netns", "pids", ns);
                foreach (var pid in pids.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                {
                    if (int.TryParse(pid, out var p) && p != Environment.ProcessId)
                    {
                        await BestEffortAsync(() =>
                        {
                            using var process = System.Diagnostics.Process.GetProcessById(p);
                            process.Kill();
                            return Task.CompletedTask;
                        });
                    }
                }
            });
        }

        foreach (var name in wgNames)
        {
            await BestEffortAsync(() =>
            {
                File.Delete(SocketPath(name));
                return Task.CompletedTask;
            });
        }

        // 4. Namespaces (their veths go with them) and per-namespace /etc files.
        foreach (var ns in namespaces)
        {
            await TryRunAsync(TestTools.Ip, "netns", "delete", ns);
            await BestEffortAsync(() =>
            {
                if (Directory.Exists(Site.EtcDirectory(ns)))
                {
                    Directory.Delete(Site.EtcDirectory(ns), recursive: true);
                }

                return Task.CompletedTask;
            });
        }

        lock (SubnetsLock)
        {
            SubnetsInUse.Remove(SubnetOctet);
        }
    }

    public override string ToString() => $"TestNetwork {Id} (10.213.{SubnetOctet}.0/24: {string.Join(", ", _sites.Select(s => $"{s.Name}={s.LanAddress}"))})";

    private static string SocketPath(string iface) => Path.Combine("/var/run/wireguard", iface + ".sock");

    private static int ReserveSubnet()
    {
        lock (SubnetsLock)
        {
            while (true)
            {
                var n = RandomNumberGenerator.GetInt32(1, 251);
                if (SubnetsInUse.Add(n))
                {
                    return n;
                }
            }
        }
    }

    private async Task BuildAsync(string[] siteNames)
    {
        var ip = TestTools.Ip;
        await TestTools.RunCheckedAsync(ip, "netns", "add", LanNamespace);
        await TestTools.RunCheckedAsync(ip, "-n", LanNamespace, "link", "set", "lo", "up");
        await TestTools.RunCheckedAsync(ip, "-n", LanNamespace, "link", "add", "br0", "type", "bridge");
        await TestTools.RunCheckedAsync(ip, "-n", LanNamespace, "link", "set", "br0", "up");
        for (var i = 0; i < siteNames.Length; i++)
        {
            var site = new Site(
                this,
                siteNames[i],
                $"wh-{Id}-{siteNames[i]}",
                System.Net.IPAddress.Parse($"10.213.{SubnetOctet}.{10 + i}"),
                $"wg{Id}{i}");
            _sites.Add(site);
            await TestTools.RunCheckedAsync(ip, "netns", "add", site.Namespace);
            await TestTools.RunCheckedAsync(ip, "-n", site.Namespace, "link", "set", "lo", "up");

            // Created straight into the two namespaces, so the root namespace never sees the names.
            var port = $"p{i}";
            await TestTools.RunCheckedAsync(ip, "-n", LanNamespace, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", site.Namespace);
            await TestTools.RunCheckedAsync(ip, "-n", LanNamespace, "link", "set", port, "master", "br0");
            await TestTools.RunCheckedAsync(ip, "-n", LanNamespace, "link", "set", port, "up");
            await TestTools.RunCheckedAsync(ip, "-n", site.Namespace, "address", "add", $"{site.LanAddress}/24", "dev", "eth0");
            await TestTools.RunCheckedAsync(ip, "-n", site.Namespace, "link", "set", "eth0", "up");
        }
    }

    private static async Task<IReadOnlyList<string>> TryListLinksAsync(string ns)
    {
        var output = await TryRunAsync(TestTools.Ip, "-n", ns, "-o", "link", "show");

        // "3: wgab12cd0: <POINTOPOINT,…> …" (veths show as "eth0@if4").
        return output.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Split(':', 3))
            .Where(parts => parts.Length == 3)
            .Select(parts => parts[1].Trim().Split('@')[0])
            .ToList();
    }

    private static async Task<string> TryRunAsync(string fileName, params string[] args)
    {
        try
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            var result = await new ProcessRunner().RunAsync(fileName, args, null, cts.Token);
            return result.Succeeded ? result.StandardOutput : string.Empty;
        }
        catch (Exception ex) when (ex is OperationCanceledException or System.ComponentModel.Win32Exception)
        {
            return string.Empty;
        }
    }

    private static async Task BestEffortAsync(Func<Task> step)
    {
        try
        {
            await step();
        }
        catch (Exception ex)
        {
            // Cleanup must go on; say what went wrong where a developer will see it.
            Console.Error.WriteLine($"TestNetwork cleanup step failed: {ex.GetType().Name}: {ex.Message}");
        }
    }

    [GeneratedRegex("^[a-z0-9-]{1,20}$")]
    private static partial Regex SiteName();
}
