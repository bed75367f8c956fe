using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Wormhole.Tunnel.Hosting;

namespace Wormhole.Tunnel.E2E.Infrastructure;

/// <summary>One site of a <see cref="TestNetwork"/>: a network namespace with <c>eth0</c> on the shared LAN.</summary>
public sealed class Site
{
    private readonly ConcurrentBag<ProcessHandle> _processes = [];
    private volatile IReadOnlyDictionary<string, IPAddress> _hosts = new Dictionary<string, IPAddress>();

    internal Site(TestNetwork network, string name, string @namespace, IPAddress lanAddress, string wgInterfaceName)
    {
        Network = network;
        Name = name;
        Namespace = @namespace;
        LanAddress = lanAddress;
        WgInterfaceName = wgInterfaceName;
        Runner = new NetNsRunner(@namespace);
    }

    public TestNetwork Network { get; }

    public string Name { get; }

    public string Namespace { get; }

    /// <summary>This site's address on the LAN (eth0, /24).</summary>
    public IPAddress LanAddress { get; }

    /// <summary>Runs tools inside this site's namespace.</summary>
    public NetNsRunner Runner { get; }

    /// <summary>A WireGuard interface name unique on the machine (wireguard-go's sockets are shared by all namespaces).</summary>
    public string WgInterfaceName { get; }

    /// <summary>Runs a command to completion inside the namespace.</summary>
    public Task<ProcessResult> RunAsync(string fileName, IReadOnlyList<string> args, string? standardInput = null, CancellationToken ct = default) =>
        Runner.RunAsync(fileName, args, standardInput, ct);

    /// <summary>Runs a command inside the namespace and throws (with stderr) when it fails.</summary>
    public async Task<ProcessResult> RunCheckedAsync(string fileName, params string[] args)
    {
        var result = await RunAsync(fileName, args);
        if (!result.Succeeded)
        {
            throw new InvalidOperationException($"[{Name}] `{ProcessRunner.Describe(fileName, args)}` failed (exit code {result.ExitCode}): {result.StandardError.Trim()}");
        }

        return result;
    }

    /// <summary>
    /// Starts a long-running process inside the namespace (<c>ip netns exec</c> execs it, so the pid is the
    /// process itself); output is captured. The network's dispose kills whatever is still running.
    /// </summary>
    public Task<ProcessHandle> StartProcessAsync(string fileName, IEnumerable<string> args, IDictionary<string, string>? env = null)
    {
        var psi = new ProcessStartInfo(TestTools.Ip)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add("netns");
        psi.ArgumentList.Add("exec");
        psi.ArgumentList.Add(Namespace);
        psi.ArgumentList.Add(fileName);
        foreach (var arg in args)
        {
            psi.ArgumentList.Add(arg);
        }

        foreach (var (key, value) in env ?? new Dictionary<string, string>())
        {
            psi.Environment[key] = value;
        }

        var process = new Process { StartInfo = psi };
        var handle = new ProcessHandle(process, $"[{Name}] {ProcessRunner.Describe(fileName, psi.ArgumentList.Skip(4).ToList())}");
        process.Start();
        process.StandardInput.Close();
        handle.BeginReading();
        _processes.Add(handle);
        return Task.FromResult(handle);
    }

    /// <summary>
    /// Writes <c>/etc/netns/&lt;ns&gt;/hosts</c>, which <c>ip netns exec</c> bind-mounts over /etc/hosts, so the names
    /// resolve for processes in this namespace only. <see cref="HttpGetAsync"/> uses the same table.
    /// </summary>
    public void SetHosts(IDictionary<string, IPAddress> hosts)
    {
        ArgumentNullException.ThrowIfNull(hosts);
        var text = new StringBuilder("127.0.0.1 localhost\n::1 localhost\n");
        foreach (var (name, address) in hosts)
        {
            text.Append(address).Append(' ').Append(name).Append('\n');
        }

        Directory.CreateDirectory(EtcDirectory(Namespace));
        File.WriteAllText(Path.Combine(EtcDirectory(Namespace), "hosts"), text.ToString());
        _hosts = new Dictionary<string, IPAddress>(hosts, StringComparer.OrdinalIgnoreCase);
    }

    /// <summary>A TCP socket created inside the namespace (so it lives there), connected to <paramref name="address"/>.</summary>
    public async Task<Socket> ConnectTcpAsync(IPAddress address, int port, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(address);
        var socket = NetNs.RunInNamespace(Namespace, () => new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp));
        try
        {
            // Routing follows the socket's namespace, not the calling thread's, so connecting here is fine.
            await socket.ConnectAsync(new IPEndPoint(address, port), ct);
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>A listening TCP socket inside the namespace; port 0 picks a free one (see <c>LocalEndPoint</c>).</summary>
    public Socket ListenTcp(IPAddress address, int port, int backlog = 64)
    {
        ArgumentNullException.ThrowIfNull(address);
        return NetNs.RunInNamespace(Namespace, () =>
        {
            var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
                socket.Bind(new IPEndPoint(address, port));
                socket.Listen(backlog);
                return socket;
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        });
    }

    /// <summary>An HttpClient whose connections are made from inside this namespace (names resolve via <see cref="SetHosts"/>).</summary>
    public HttpClient CreateHttpClient(TimeSpan? timeout = null)
    {
        var handler = new SocketsHttpHandler
        {
            UseProxy = false,
            PooledConnectionLifetime = TimeSpan.FromSeconds(30),
            ConnectCallback = async (context, ct) =>
            {
                var address = await ResolveAsync(context.DnsEndPoint.Host, ct);
                var socket = await ConnectTcpAsync(address, context.DnsEndPoint.Port, ct);
                return new NetworkStream(socket, ownsSocket: true);
            },
        };
        return new HttpClient(handler) { Timeout = timeout ?? TimeSpan.FromSeconds(30) };
    }

    /// <summary>GET from inside the namespace; the body is buffered, so the response outlives the client.</summary>
    public async Task<HttpResponseMessage> HttpGetAsync(string url, CancellationToken ct = default)
    {
        using var client = CreateHttpClient();
        return await client.GetAsync(new Uri(url), HttpCompletionOption.ResponseContentRead, ct);
    }

    public override string ToString() => $"{Name} ({Namespace}, {LanAddress})";

    internal static string EtcDirectory(string ns) => Path.Combine("/etc/netns", ns);

    internal async Task KillProcessesAsync()
    {
        foreach (var handle in _processes)
        {
            try
            {
                if (!handle.HasExited)
                {
                    handle.Kill();
                    await handle.WaitForExitAsync(TimeSpan.FromSeconds(5));
                }

                handle.Dispose();
            }
            catch (Exception ex) when (ex is InvalidOperationException or System.ComponentModel.Win32Exception)
            {
                // best effort: the namespace cleanup kills whatever is left
            }
        }
    }

    private async Task<IPAddress> ResolveAsync(string host, CancellationToken ct)
    {
        if (IPAddress.TryParse(host.Trim('[', ']'), out var literal))
        {
            return literal;
        }

        if (_hosts.TryGetValue(host, out var mapped))
        {
            return mapped;
        }

        // Not in this site's hosts table: the root namespace's resolver (localhost and the like).
        var addresses = await Dns.GetHostAddressesAsync(host, ct);
        return addresses.FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork) ?? addresses[0];
    }
}
