using System.ComponentModel;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging;
using Polly;
using Wormhole.Tunnel.Hosting;

namespace Wormhole.Tunnel.WireGuard;

/// <summary>
/// A WireGuard interface driven with <c>ip</c> and <c>wg</c>: the kernel module when there is one, otherwise
/// wireguard-go. Every command goes through the <see cref="IProcessRunner"/>, so a runner that prefixes
/// <c>ip netns exec NS</c> puts the whole interface (wireguard-go included) into that namespace.
/// The private key reaches <c>wg</c> on stdin only: never on a command line, in a log or on disk.
/// </summary>
public sealed partial class WgToolsDevice : IWireGuardDevice
{
    public const int Mtu = 1420;
    public const string KernelBackend = "kernel";
    public const string WireGuardGoBackend = "wireguard-go";

    /// <summary>Where wireguard-go keeps its control socket, for every namespace alike.</summary>
    public const string WireGuardGoSocketDirectory = "/var/run/wireguard";

    private static readonly TimeSpan WireGuardGoStartTimeout = TimeSpan.FromSeconds(20);
    private static readonly TimeSpan LinkAppearTimeout = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan SocketVanishTimeout = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan DisposeDownTimeout = TimeSpan.FromSeconds(15);
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(50);

    private readonly IProcessRunner _runner;
    private readonly ILogger<WgToolsDevice> _logger;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private WgInterfaceConfig? _config;
    private bool _isUp;
    private bool _disposed;

    private readonly ResiliencePipeline _retry;

    /// <param name="retry">Runs a peer update again when wg fails (it re-reads the interface first): the side's WireGuard pipeline.</param>
    public WgToolsDevice(IProcessRunner runner, ILogger<WgToolsDevice> logger, ResiliencePipeline? retry = null)
    {
        ArgumentNullException.ThrowIfNull(runner);
        ArgumentNullException.ThrowIfNull(logger);
        _runner = runner;
        _logger = logger;
        _retry = retry ?? ResiliencePipeline.Empty;
    }

    public string? Backend { get; private set; }

    /// <summary>The interface name from the last <see cref="UpAsync"/>, or null.</summary>
    public string? InterfaceName => _config?.Name;

    /// <summary>Whether <see cref="DisposeAsync"/> deletes an interface this instance brought up (default true).</summary>
    public bool DeleteOnDispose { get; init; } = true;

    public async Task UpAsync(WgInterfaceConfig config, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(config);
        Validate(config);
        await _gate.WaitAsync(ct);
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var name = config.Name;
            if (_isUp && _config is { } current && current.Name != name)
            {
                throw new InvalidOperationException($"This device manages interface {current.Name}; bring it down before using {name}.");
            }

            if (await LinkExistsAsync(name, ct))
            {
                Backend = await DetectBackendAsync(name, ct);
                LogReusingInterface(name, Backend);
                var addresses = await ReadAddressesAsync(name, ct);
                if (addresses.Any(a => !string.Equals(a, config.Address, StringComparison.OrdinalIgnoreCase)))
                {
                    LogFlushingAddresses(name, string.Join(", ", addresses), config.Address);
                    await RunCheckedAsync("ip", ["address", "flush", "dev", name], null, null, ct);
                }
            }
            else
            {
                Backend = await CreateAsync(name, ct);
            }

            // From here on the link exists: DownAsync/DisposeAsync remove it even if configuring it fails.
            _config = config;
            _isUp = true;
            await ConfigureAsync(config, ct);
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>Key, listen port, address, MTU, up, routes: everything the interface needs besides its peers.</summary>
    private async Task ConfigureAsync(WgInterfaceConfig config, CancellationToken ct)
    {
        var name = config.Name;
        List<string> setArgs = ["set", name, "private-key", "/dev/stdin"];
        if (config.ListenPort is { } port)
        {
            setArgs.Add("listen-port");
            setArgs.Add(port.ToString(CultureInfo.InvariantCulture));
        }

        await RunCheckedAsync("wg", setArgs, config.PrivateKey + "\n", config.PrivateKey, ct);
        await RunCheckedAsync("ip", ["address", "replace", config.Address, "dev", name], null, null, ct);
        await RunCheckedAsync("ip", ["link", "set", "dev", name, "mtu", Mtu.ToString(CultureInfo.InvariantCulture), "up"], null, null, ct);
        foreach (var route in config.Routes)
        {
            await RunCheckedAsync("ip", ["route", "replace", route, "dev", name], null, null, ct);
        }

        LogInterfaceUp(name, Backend ?? "?", config.Address, config.ListenPort, config.Routes.Count);
    }

    public async Task SetPeersAsync(IReadOnlyCollection<WgPeer> peers, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(peers);
        var wanted = new Dictionary<string, WgPeer>(StringComparer.Ordinal);
        foreach (var peer in peers)
        {
            Validate(peer);
            if (!wanted.TryAdd(peer.PublicKey, peer))
            {
                throw new ArgumentException($"Peer {peer.PublicKey} is listed twice.", nameof(peers));
            }
        }

        await _gate.WaitAsync(ct);
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var name = _config?.Name ?? throw new InvalidOperationException("Call UpAsync before SetPeersAsync.");
            await _retry.ExecuteAsync(token => new ValueTask(SetPeersOrRecreateAsync(name, wanted, token)), ct);
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>
    /// Sets the peers; when that fails because the interface this instance brought up is gone (deleted by hand, or its
    /// wireguard-go killed), creates and configures it again first, so the sink's next pass or drift check repairs it.
    /// </summary>
    private async Task SetPeersOrRecreateAsync(string name, Dictionary<string, WgPeer> wanted, CancellationToken ct)
    {
        try
        {
            await SetPeersCoreAsync(name, wanted, ct);
            return;
        }
        catch (WireGuardCommandException) when (_isUp)
        {
            if (await LinkExistsAsync(name, ct))
            {
                throw;
            }
        }

        var config = _config ?? throw new InvalidOperationException("Call UpAsync before SetPeersAsync.");
        LogInterfaceGone(name);
        await AwaitSocketGoneAsync(name, ct);
        Backend = await CreateAsync(name, ct);
        await ConfigureAsync(config, ct);
        await SetPeersCoreAsync(name, wanted, ct);
    }

    /// <summary>
    /// One attempt: reads what the interface has (<c>wg show dump</c>), then makes every difference in one
    /// <c>wg set</c> — peers removed first, so an address can move from one peer to another in the same call. Whatever
    /// drifted (a peer removed or edited by hand, the hub's name resolving elsewhere now) is repaired; nothing runs when
    /// nothing differs. Safe to run again.
    /// </summary>
    private async Task SetPeersCoreAsync(string name, Dictionary<string, WgPeer> wanted, CancellationToken ct)
    {
        var current = await ReadPeerStateAsync(name, ct);
        List<string> args = ["set", name];
        var secrets = new List<SecretFile>();
        var removed = 0;
        foreach (var key in current.Keys.Where(k => !wanted.ContainsKey(k)).Order(StringComparer.Ordinal))
        {
            args.AddRange(["peer", key, "remove"]);
            LogPeerRemoved(key, name);
            removed++;
        }

        var set = 0;
        foreach (var peer in wanted.Values.OrderBy(p => p.PublicKey, StringComparer.Ordinal))
        {
            current.TryGetValue(peer.PublicKey, out var now);
            if (now is not null && await MatchesAsync(now, peer, ct))
            {
                continue;
            }

            args.AddRange(["peer", peer.PublicKey, "allowed-ips", string.Join(',', peer.AllowedIps)]);
            if (peer.Endpoint is { } endpoint)
            {
                args.AddRange(["endpoint", endpoint]);
            }

            // An update clears a keepalive that is no longer wanted.
            args.AddRange(["persistent-keepalive", peer.PersistentKeepaliveSeconds?.ToString(CultureInfo.InvariantCulture) ?? "off"]);

            // The preshared key as an in-memory file (never on the command line or a disk); /dev/null removes one.
            if (peer.PresharedKey is { } psk)
            {
                var file = SecretFile.Create(psk);
                secrets.Add(file);
                args.AddRange(["preshared-key", file.Path]);
            }
            else if (now?.PresharedKey is not null)
            {
                args.AddRange(["preshared-key", "/dev/null"]);
            }

            LogPeerSet(peer.PublicKey, name, string.Join(',', peer.AllowedIps), peer.Endpoint ?? "(none)");
            set++;
        }

        try
        {
            if (removed + set > 0)
            {
                await RunCheckedAsync("wg", args, null, null, ct);
                LogPeersReconciled(name, set, removed, wanted.Count);
            }
        }
        finally
        {
            foreach (var secret in secrets)
            {
                secret.Dispose();
            }
        }
    }

    /// <summary>
    /// Whether the interface's peer is as wanted. An endpoint given as a name is compared with what the name resolves
    /// to now, so a hub whose address changed is dialled at the new one on the next check; one that does not resolve
    /// is left as it is.
    /// </summary>
    private static async Task<bool> MatchesAsync(PeerState now, WgPeer wanted, CancellationToken ct)
    {
        if (!now.AllowedIps.SetEquals(wanted.AllowedIps.Select(NormalizeCidr)) || now.KeepaliveSeconds != (wanted.PersistentKeepaliveSeconds is null or 0 ? null : wanted.PersistentKeepaliveSeconds)
            || !SamePresharedKey(now.PresharedKey, wanted.PresharedKey))
        {
            return false;
        }

        if (wanted.Endpoint is not { } endpoint)
        {
            return true; // the peer dials us: wherever it roams from is fine
        }

        if (now.Endpoint is null || !IPEndPoint.TryParse(now.Endpoint, out var actual))
        {
            return false;
        }

        var colon = endpoint.LastIndexOf(':');
        var host = endpoint[..colon].Trim('[', ']');
        var port = int.Parse(endpoint.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture);
        if (port != actual.Port)
        {
            return false;
        }

        if (IPAddress.TryParse(host, out var literal))
        {
            return Same(literal, actual.Address);
        }

        try
        {
            var addresses = await Dns.GetHostAddressesAsync(host, ct);
            return addresses.Length == 0 || addresses.Any(a => Same(a, actual.Address));
        }
        catch (SocketException)
        {
            return true;
        }

        static bool Same(IPAddress a, IPAddress b) =>
            (a.IsIPv4MappedToIPv6 ? a.MapToIPv4() : a).Equals(b.IsIPv4MappedToIPv6 ? b.MapToIPv4() : b);
    }

    private static bool SamePresharedKey(string? now, string? wanted) =>
        now is null ? wanted is null : wanted is not null && System.Security.Cryptography.CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(now), Encoding.ASCII.GetBytes(wanted));

    private static string NormalizeCidr(string cidr)
    {
        var slash = cidr.IndexOf('/', StringComparison.Ordinal);
        var address = IPAddress.Parse(cidr.AsSpan(0, slash));
        var prefix = int.Parse(cidr.AsSpan(slash + 1), NumberStyles.None, CultureInfo.InvariantCulture);
        var bytes = address.GetAddressBytes();
        for (var bit = prefix; bit < bytes.Length * 8; bit++)
        {
            bytes[bit / 8] &= (byte)~(0x80 >> (bit % 8));
        }

        return $"{new IPAddress(bytes)}/{prefix}";
    }

    public async Task DownAsync(CancellationToken ct)
    {
        await _gate.WaitAsync(ct);
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            await DownCoreAsync(ct);
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>Deletes the interface this instance brought up (unless <see cref="DeleteOnDispose"/> is false), best effort.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        using var cts = new CancellationTokenSource(DisposeDownTimeout);
        try
        {
            await _gate.WaitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            return; // another call is stuck; leave the semaphore alone
        }

        try
        {
            if (_disposed)
            {
                return;
            }

            if (DeleteOnDispose && _isUp)
            {
                try
                {
                    await DownCoreAsync(cts.Token);
                }
                catch (Exception ex) when (ex is WireGuardCommandException or OperationCanceledException or Win32Exception)
                {
                    LogDisposeDownFailed(ex, _config?.Name ?? "?");
                }
            }

            _disposed = true;
        }
        finally
        {
            _gate.Release();
        }
    }

    private async Task DownCoreAsync(CancellationToken ct)
    {
        if (_config is not { } config)
        {
            return;
        }

        var name = config.Name;
        var result = await RunAsync("ip", ["link", "delete", "dev", name], null, null, ct);
        if (!result.Succeeded && !IsNoSuchDevice(result.StandardError))
        {
            throw new WireGuardCommandException(ProcessRunner.Describe("ip", ["link", "delete", "dev", name]), result.ExitCode, result.StandardError);
        }

        _isUp = false;
        await AwaitSocketGoneAsync(name, ct);
        LogInterfaceDown(name, result.Succeeded);
    }

    /// <summary>
    /// wireguard-go exits once its TUN device is gone and removes its socket; waits for that (bounded), so a new
    /// wireguard-go for the same name does not find the old one still listening. Nothing to wait for with the kernel's.
    /// </summary>
    private async Task AwaitSocketGoneAsync(string name, CancellationToken ct)
    {
        if (Backend == KernelBackend)
        {
            return;
        }

        var socket = SocketPath(name);
        var deadline = DateTime.UtcNow + SocketVanishTimeout;
        while (File.Exists(socket) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(PollInterval, ct);
        }

        if (File.Exists(socket))
        {
            LogSocketLingers(socket, name);
        }
    }

    /// <summary>wireguard-go's control socket for an interface name.</summary>
    public static string SocketPath(string interfaceName) => Path.Combine(WireGuardGoSocketDirectory, interfaceName + ".sock");
}
