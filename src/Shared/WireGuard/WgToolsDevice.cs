using System.ComponentModel;
using System.Globalization;
using System.Net;
using System.Text.RegularExpressions;
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
    private readonly Dictionary<string, WgPeer> _applied = new(StringComparer.Ordinal);
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

            LogInterfaceUp(name, Backend, config.Address, config.ListenPort, config.Routes.Count);
        }
        finally
        {
            _gate.Release();
        }
    }

    private static bool SamePeer(WgPeer a, WgPeer b) =>
        a.Endpoint == b.Endpoint && a.PersistentKeepaliveSeconds == b.PersistentKeepaliveSeconds && a.AllowedIps.SequenceEqual(b.AllowedIps);

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
            await _retry.ExecuteAsync(token => new ValueTask(SetPeersCoreAsync(name, wanted, token)), ct);
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>One attempt: reads the interface's peers, removes the unwanted, sets the new or changed. Safe to run again.</summary>
    private async Task SetPeersCoreAsync(string name, Dictionary<string, WgPeer> wanted, CancellationToken ct)
    {
        var current = await ReadPeersAsync(name, ct);
        var removed = 0;
        foreach (var key in current.Where(k => !wanted.ContainsKey(k)))
        {
            await RunCheckedAsync("wg", ["set", name, "peer", key, "remove"], null, null, ct);
            LogPeerRemoved(key, name);
            removed++;
        }

        foreach (var key in _applied.Keys.Where(k => !wanted.ContainsKey(k) || !current.Contains(k)).ToList())
        {
            _applied.Remove(key);
        }

        foreach (var peer in wanted.Values)
        {
            // A peer already on the interface exactly as wanted needs no `wg set` (pairing the n-th spoke
            // would otherwise run n processes).
            if (_applied.TryGetValue(peer.PublicKey, out var applied) && SamePeer(applied, peer))
            {
                continue;
            }

            List<string> args = ["set", name, "peer", peer.PublicKey, "allowed-ips", string.Join(',', peer.AllowedIps)];
            if (peer.Endpoint is { } endpoint)
            {
                args.Add("endpoint");
                args.Add(endpoint);
            }

            if (peer.PersistentKeepaliveSeconds is { } keepalive)
            {
                args.Add("persistent-keepalive");
                args.Add(keepalive.ToString(CultureInfo.InvariantCulture));
            }
            else if (current.Contains(peer.PublicKey))
            {
                args.Add("persistent-keepalive");
                args.Add("off"); // an update clears a keepalive that is no longer wanted
            }

            await RunCheckedAsync("wg", args, null, null, ct);
            _applied[peer.PublicKey] = peer;
            LogPeerSet(peer.PublicKey, name, string.Join(',', peer.AllowedIps), peer.Endpoint ?? "(none)");
        }

        LogPeersReconciled(name, wanted.Count, removed);
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
        if (Backend != KernelBackend)
        {
            // wireguard-go exits once its TUN device is gone and removes its socket; wait for that (bounded), so a
            // new wireguard-go for the same name does not find the old one still listening.
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

        LogInterfaceDown(name, result.Succeeded);
    }

    /// <summary>wireguard-go's control socket for an interface name.</summary>
    public static string SocketPath(string interfaceName) => Path.Combine(WireGuardGoSocketDirectory, interfaceName + ".sock");

    private async Task<string> CreateAsync(string name, CancellationToken ct)
    {
        var kernel = await RunAsync("ip", ["link", "add", "dev", name, "type", "wireguard"], null, null, ct);
        if (kernel.Succeeded)
        {
            LogCreated(name, KernelBackend);
            return KernelBackend;
        }

        LogKernelUnavailable(name, kernel.StandardError.Trim());

        // wireguard-go daemonises: the command returns once the TUN device and control socket exist.
        ProcessResult userspace;
        using (var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct))
        {
            timeout.CancelAfter(WireGuardGoStartTimeout);
            try
            {
                userspace = await RunAsync("wireguard-go", [name], null, null, timeout.Token);
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                throw new WireGuardCommandException(
                    $"`wireguard-go {name}` did not return within {WireGuardGoStartTimeout.TotalSeconds:0} s (with LOG_LEVEL set it keeps stdout open; unset it).");
            }
            catch (WireGuardCommandException ex)
            {
                throw new WireGuardCommandException(
                    $"Cannot create WireGuard interface {name}: `ip link add dev {name} type wireguard` failed ({Trim(kernel.StandardError)}) and {ex.Message}", ex);
            }
        }

        if (!userspace.Succeeded)
        {
            throw new WireGuardCommandException(
                $"Cannot create WireGuard interface {name}: `ip link add dev {name} type wireguard` failed ({Trim(kernel.StandardError)}) and `wireguard-go {name}` failed (exit code {userspace.ExitCode}): {Trim(userspace.StandardError + " " + userspace.StandardOutput)}");
        }

        var deadline = DateTime.UtcNow + LinkAppearTimeout;
        while (!await LinkExistsAsync(name, ct))
        {
            if (DateTime.UtcNow >= deadline)
            {
                throw new WireGuardCommandException($"`wireguard-go {name}` succeeded but interface {name} did not appear within {LinkAppearTimeout.TotalSeconds:0} s.");
            }

            await Task.Delay(PollInterval, ct);
        }

        LogCreated(name, WireGuardGoBackend);
        return WireGuardGoBackend;
    }

    private async Task<bool> LinkExistsAsync(string name, CancellationToken ct)
    {
        var result = await RunAsync("ip", ["link", "show", "dev", name], null, null, ct);
        if (result.Succeeded)
        {
            return true;
        }

        if (IsNoSuchDevice(result.StandardError))
        {
            return false;
        }

        throw new WireGuardCommandException(ProcessRunner.Describe("ip", ["link", "show", "dev", name]), result.ExitCode, result.StandardError);
    }

    private async Task<string> DetectBackendAsync(string name, CancellationToken ct)
    {
        var details = (await RunCheckedAsync("ip", ["-details", "link", "show", "dev", name], null, null, ct)).StandardOutput;

        // The first line holds the name; the kind ("wireguard" or "tun type tun …") is on the next ones.
        var kind = details.Contains('\n', StringComparison.Ordinal) ? details[details.IndexOf('\n', StringComparison.Ordinal)..] : details;
        if (TunKind().IsMatch(kind))
        {
            return WireGuardGoBackend;
        }

        if (WireGuardKind().IsMatch(kind))
        {
            return KernelBackend;
        }

        throw new WireGuardCommandException($"Interface {name} exists but is neither a WireGuard nor a TUN (wireguard-go) device; delete it or choose another name.");
    }

    private async Task<List<string>> ReadAddressesAsync(string name, CancellationToken ct)
    {
        var output = (await RunCheckedAsync("ip", ["-o", "address", "show", "dev", name], null, null, ct)).StandardOutput;
        var addresses = new List<string>();
        foreach (var line in output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var tokens = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            var i = Array.FindIndex(tokens, t => t is "inet" or "inet6");
            if (i >= 0 && i + 1 < tokens.Length && !tokens[i + 1].StartsWith("fe80:", StringComparison.OrdinalIgnoreCase))
            {
                addresses.Add(tokens[i + 1]);
            }
        }

        return addresses;
    }

    private async Task<HashSet<string>> ReadPeersAsync(string name, CancellationToken ct)
    {
        var output = (await RunCheckedAsync("wg", ["show", name, "peers"], null, null, ct)).StandardOutput;
        return output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToHashSet(StringComparer.Ordinal);
    }

    private async Task<ProcessResult> RunCheckedAsync(string tool, IReadOnlyList<string> args, string? stdin, string? secret, CancellationToken ct)
    {
        var result = await RunAsync(tool, args, stdin, secret, ct);
        if (!result.Succeeded)
        {
            var stderr = secret is null ? result.StandardError : WgKeys.Redact(result.StandardError, secret);
            throw new WireGuardCommandException(ProcessRunner.Describe(tool, args), result.ExitCode, stderr);
        }

        return result;
    }

    private async Task<ProcessResult> RunAsync(string tool, IReadOnlyList<string> args, string? stdin, string? secret, CancellationToken ct)
    {
        var command = ProcessRunner.Describe(tool, args);
        LogRunning(command);
        try
        {
            return await _runner.RunAsync(tool, args, stdin, ct);
        }
        catch (Win32Exception ex)
        {
            var message = secret is null ? ex.Message : WgKeys.Redact(ex.Message, secret);
            throw new WireGuardCommandException($"`{command}` could not be started: {message}", ex);
        }
    }

    private static bool IsNoSuchDevice(string stderr) =>
        stderr.Contains("does not exist", StringComparison.OrdinalIgnoreCase)
        || stderr.Contains("Cannot find device", StringComparison.OrdinalIgnoreCase)
        || stderr.Contains("No such device", StringComparison.OrdinalIgnoreCase);

    private static string Trim(string s) => string.IsNullOrWhiteSpace(s) ? "no output on stderr" : s.Trim();

    private static void Validate(WgInterfaceConfig config)
    {
        if (!InterfaceNamePattern().IsMatch(config.Name) || config.Name is "." or "..")
        {
            throw new ArgumentException($"Interface name '{config.Name}' is not valid: 1-15 characters of letters, digits, '_', '-', '.'.", nameof(config));
        }

        if (!WgKeys.IsValidKey(config.PrivateKey))
        {
            throw new ArgumentException("The private key is not a WireGuard key (expected 32 bytes in base64, 44 characters).", nameof(config));
        }

        if (!IsCidr(config.Address))
        {
            throw new ArgumentException($"Address '{config.Address}' is not in CIDR form (e.g. 10.188.0.1/24).", nameof(config));
        }

        if (config.ListenPort is < 1 or > 65535)
        {
            throw new ArgumentException($"Listen port {config.ListenPort} is out of range.", nameof(config));
        }

        foreach (var route in config.Routes)
        {
            if (!IsCidr(route))
            {
                throw new ArgumentException($"Route '{route}' is not in CIDR form.", nameof(config));
            }
        }
    }

    private static void Validate(WgPeer peer)
    {
        ArgumentNullException.ThrowIfNull(peer);
        if (!WgKeys.IsValidKey(peer.PublicKey))
        {
            throw new ArgumentException($"Peer key '{peer.PublicKey}' is not a WireGuard key.", nameof(peer));
        }

        foreach (var ip in peer.AllowedIps)
        {
            if (!IsCidr(ip))
            {
                throw new ArgumentException($"Allowed IP '{ip}' of peer {peer.PublicKey} is not in CIDR form.", nameof(peer));
            }
        }

        if (peer.Endpoint is { } endpoint && !IsEndpoint(endpoint))
        {
            throw new ArgumentException($"Endpoint '{endpoint}' of peer {peer.PublicKey} is not host:port (IPv6 as [addr]:port).", nameof(peer));
        }

        if (peer.PersistentKeepaliveSeconds is < 0 or > 65535)
        {
            throw new ArgumentException($"Keepalive {peer.PersistentKeepaliveSeconds} of peer {peer.PublicKey} is out of range.", nameof(peer));
        }
    }

    /// <summary>
    /// "host:port" or "[v6]:port" with a port 1-65535. Checked here because wg retries a bad endpoint for over a
    /// minute before it gives up.
    /// </summary>
    internal static bool IsEndpoint(string value)
    {
        var colon = value.LastIndexOf(':');
        if (colon <= 0 || value.StartsWith('-') || value.Any(char.IsWhiteSpace)
            || !int.TryParse(value.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port is < 1 or > 65535)
        {
            return false;
        }

        var host = value[..colon];
        if (host.StartsWith('['))
        {
            return host.EndsWith(']') && IPAddress.TryParse(host.AsSpan(1, host.Length - 2), out var v6) && v6.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6;
        }

        return !host.Contains(':', StringComparison.Ordinal);
    }

    /// <summary>"addr/prefix" with a valid address and prefix length (host bits may be set, as in 10.188.0.1/24).</summary>
    internal static bool IsCidr(string value)
    {
        var slash = value.IndexOf('/', StringComparison.Ordinal);
        if (slash <= 0 || !IPAddress.TryParse(value.AsSpan(0, slash), out var address)
            || !int.TryParse(value.AsSpan(slash + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var prefix))
        {
            return false;
        }

        return prefix <= (address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? 32 : 128);
    }

    [GeneratedRegex(@"\A[A-Za-z0-9_.\-]{1,15}\z")]
    private static partial Regex InterfaceNamePattern();

    [GeneratedRegex(@"\btun\b")]
    private static partial Regex TunKind();

    [GeneratedRegex(@"\bwireguard\b")]
    private static partial Regex WireGuardKind();

    [LoggerMessage(EventId = 1100, Level = LogLevel.Debug, Message = "Running {Command}")]
    private partial void LogRunning(string command);

    [LoggerMessage(EventId = 1101, Level = LogLevel.Information, Message = "WireGuard interface {Interface} exists already ({Backend}); reusing it")]
    private partial void LogReusingInterface(string @interface, string backend);

    [LoggerMessage(EventId = 1102, Level = LogLevel.Information, Message = "Interface {Interface} has addresses {Old}, want {New}; flushing them")]
    private partial void LogFlushingAddresses(string @interface, string old, string @new);

    [LoggerMessage(EventId = 1103, Level = LogLevel.Information, Message = "No kernel WireGuard for {Interface} ({Reason}); starting wireguard-go")]
    private partial void LogKernelUnavailable(string @interface, string reason);

    [LoggerMessage(EventId = 1104, Level = LogLevel.Information, Message = "Created WireGuard interface {Interface} ({Backend})")]
    private partial void LogCreated(string @interface, string backend);

    [LoggerMessage(EventId = 1105, Level = LogLevel.Information, Message = "WireGuard interface {Interface} is up ({Backend}), address {Address}, listen port {ListenPort}, {RouteCount} extra routes")]
    private partial void LogInterfaceUp(string @interface, string backend, string address, int? listenPort, int routeCount);

    [LoggerMessage(EventId = 1106, Level = LogLevel.Information, Message = "Removed peer {PublicKey} from {Interface}")]
    private partial void LogPeerRemoved(string publicKey, string @interface);

    [LoggerMessage(EventId = 1107, Level = LogLevel.Debug, Message = "Set peer {PublicKey} on {Interface}: allowed IPs {AllowedIps}, endpoint {Endpoint}")]
    private partial void LogPeerSet(string publicKey, string @interface, string allowedIps, string endpoint);

    [LoggerMessage(EventId = 1108, Level = LogLevel.Information, Message = "Peers of {Interface}: {Count} set, {Removed} removed")]
    private partial void LogPeersReconciled(string @interface, int count, int removed);

    [LoggerMessage(EventId = 1109, Level = LogLevel.Information, Message = "WireGuard interface {Interface} deleted (existed: {Existed})")]
    private partial void LogInterfaceDown(string @interface, bool existed);

    [LoggerMessage(EventId = 1110, Level = LogLevel.Warning, Message = "wireguard-go socket {Socket} of {Interface} is still there after the interface was deleted")]
    private partial void LogSocketLingers(string socket, string @interface);

    [LoggerMessage(EventId = 1111, Level = LogLevel.Warning, Message = "Could not delete WireGuard interface {Interface} on dispose")]
    private partial void LogDisposeDownFailed(Exception exception, string @interface);
}
