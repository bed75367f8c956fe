namespace Wormhole.Tunnel.WireGuard;

/// <summary>One WireGuard peer as <c>wg set … peer</c> sees it.</summary>
/// <param name="PublicKey">The peer's public key (base64, 44 characters).</param>
/// <param name="AllowedIps">CIDRs routed to this peer; replaces the peer's list on every <c>SetPeersAsync</c>.</param>
/// <param name="Endpoint"><c>host:port</c> (IPv6 as <c>[addr]:port</c>), or null when the peer connects to us.</param>
/// <param name="PersistentKeepaliveSeconds">Keepalive interval, or null for none.</param>
/// <param name="PresharedKey">The peer's WireGuard preshared key (base64), or null for none. A secret: never printed, never on a command line.</param>
public sealed record WgPeer(
    string PublicKey,
    IReadOnlyList<string> AllowedIps,
    string? Endpoint = null,
    int? PersistentKeepaliveSeconds = null,
    string? PresharedKey = null)
{
    /// <summary>Same key, allowed IPs (in order), endpoint, keepalive and preshared key (the record's own equality compares the list by reference).</summary>
    public bool SameAs(WgPeer other) =>
        other is not null && PublicKey == other.PublicKey && Endpoint == other.Endpoint
        && PersistentKeepaliveSeconds == other.PersistentKeepaliveSeconds && AllowedIps.SequenceEqual(other.AllowedIps)
        && PresharedKey == other.PresharedKey;

    /// <summary>Never prints the preshared key.</summary>
    public override string ToString() =>
        $"WgPeer {{ PublicKey = {PublicKey}, AllowedIps = [{string.Join(", ", AllowedIps)}], Endpoint = {Endpoint}, PersistentKeepaliveSeconds = {PersistentKeepaliveSeconds}, PresharedKey = {(PresharedKey is null ? "none" : "(hidden)")} }}";
}

/// <summary>What <see cref="IWireGuardDevice.UpAsync"/> makes of an interface.</summary>
/// <param name="Name">Interface name, at most 15 characters, unique on the machine (wireguard-go's control sockets are shared by all namespaces).</param>
/// <param name="PrivateKey">This side's private key; passed to <c>wg</c> on stdin only, never printed.</param>
/// <param name="Address">The interface's address in CIDR form, e.g. <c>10.188.0.1/24</c> (hub) or <c>10.188.0.2/32</c> (spoke).</param>
/// <param name="ListenPort">UDP port to listen on, or null for a random one (spokes).</param>
/// <param name="Routes">Extra CIDRs routed through the interface, e.g. the hub's <c>10.188.0.1/32</c> on a spoke.</param>
public sealed record WgInterfaceConfig(
    string Name,
    string PrivateKey,
    string Address,
    int? ListenPort,
    IReadOnlyList<string> Routes)
{
    /// <summary>Never prints <see cref="PrivateKey"/>.</summary>
    public override string ToString() =>
        $"WgInterfaceConfig {{ Name = {Name}, Address = {Address}, ListenPort = {ListenPort?.ToString() ?? "(random)"}, Routes = [{string.Join(", ", Routes)}], PrivateKey = (hidden) }}";
}

/// <summary>A WireGuard key pair. <see cref="ToString"/> never prints the private key.</summary>
public sealed record WgKeyPair(string PrivateKey, string PublicKey)
{
    public override string ToString() => $"WgKeyPair {{ PublicKey = {PublicKey}, PrivateKey = (hidden) }}";
}

/// <summary>A WireGuard interface on this machine (or in the namespace the runner targets).</summary>
public interface IWireGuardDevice : IAsyncDisposable
{
    /// <summary>
    /// Creates the interface, or reuses it when it exists already (e.g. left over after a kill -9), and
    /// sets key, listen port, address, MTU 1420, state up and routes. Idempotent.
    /// </summary>
    Task UpAsync(WgInterfaceConfig config, CancellationToken ct);

    /// <summary>Makes the interface's peer set exactly <paramref name="peers"/>: adds or updates those listed, removes the others.</summary>
    Task SetPeersAsync(IReadOnlyCollection<WgPeer> peers, CancellationToken ct);

    /// <summary>Deletes the interface; an interface that does not exist is not an error.</summary>
    Task DownAsync(CancellationToken ct);

    /// <summary><c>"kernel"</c> or <c>"wireguard-go"</c> after <see cref="UpAsync"/>; null before.</summary>
    string? Backend { get; }
}

/// <summary>An outside tool (ip, wg, wireguard-go) failed. The message names the command (never a secret) and the tool's stderr.</summary>
public sealed class WireGuardCommandException : Exception
{
    public WireGuardCommandException()
    {
    }

    public WireGuardCommandException(string message)
        : base(message)
    {
    }

    public WireGuardCommandException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public WireGuardCommandException(string command, int exitCode, string standardError)
        : base($"`{command}` failed (exit code {exitCode}): {(string.IsNullOrWhiteSpace(standardError) ? "(no output on stderr)" : standardError.Trim())}")
    {
        Command = command;
        ExitCode = exitCode;
        StandardError = standardError;
    }

    /// <summary>The command line that failed, e.g. <c>ip link set wg0 up</c>.</summary>
    public string? Command { get; }

    public int? ExitCode { get; }

    public string? StandardError { get; }

    /// <summary>
    /// The tool ran and failed: run again it may succeed (wireguard-go's socket busy, a link still settling). A tool that
    /// could not be started at all is not transient.
    /// </summary>
    public bool IsTransient => ExitCode is not null;
}
