using System.Net;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Api;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Pairing;
using Wormhole.Tunnel.Runtime;
using Wormhole.Tunnel.State;
using Wormhole.Tunnel.WireGuard;

namespace Wormhole.Tunnel.Server;

internal enum PairingOutcome
{
    Paired,
    InvalidName,
    InvalidKey,
    KeyMismatch,
    PoolExhausted,

    /// <summary>WireGuard or the peers file refused the change; nothing was changed (the client is not at fault).</summary>
    Unavailable,
}

internal sealed record PairingResult(PairingOutcome Outcome, StoredPeer? Peer, string? Reason);

/// <summary>
/// The hub's spokes: name ↔ public key ↔ tunnel address, persisted before any answer is given, mirrored into WireGuard.
/// All changes are serialised; reads see an immutable snapshot. A change is stored, then given to WireGuard; when
/// WireGuard refuses it, the file is put back as it was and the in-memory list never saw the change.
/// </summary>
/// <param name="hubPublicKey">The hub's own WireGuard public key: no spoke may pair with it.</param>
internal sealed partial class PeerRegistry(
    JsonStateFile<StoredPeers> file,
    AddressPool pool,
    string hubPublicKey,
    IWireGuardDevice wireGuard,
    RemoteAppStore remoteApps,
    ILogger<PeerRegistry> logger,
    Reconciler reconciler) : IPeerDirectory
{
    private readonly SemaphoreSlim _gate = new(1, 1);
    private volatile IReadOnlyList<StoredPeer> _peers = [];

    public IReadOnlyList<StoredPeer> List() => _peers;

    public void Load()
    {
        var stored = file.Read();
        var peers = stored?.Peers ?? [];
        foreach (var peer in peers)
        {
            if (!IPAddress.TryParse(peer.Ip, out var ip) || !pool.Contains(ip) || !WgKeys.IsValidKey(peer.PublicKey) || string.IsNullOrEmpty(peer.Name))
            {
                throw new StateCorruptException(file.Path, $"peer '{peer.Name}' has an address outside the pool or an invalid key");
            }
        }

        _peers = peers;
    }

    public StoredPeer? FindByAddress(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6)
        {
            address = address.MapToIPv4();
        }

        var text = address.ToString();
        return _peers.FirstOrDefault(p => p.Ip == text);
    }

    public StoredPeer? Find(string name) => _peers.FirstOrDefault(p => p.Name == name);

    /// <summary>Binds name ↔ key on first contact; the same key gets the same address again.</summary>
    public async Task<PairingResult> PairAsync(string name, string publicKey, CancellationToken cancellationToken)
    {
        if (!Names.IsValidPeerName(name))
        {
            return new PairingResult(PairingOutcome.InvalidName, null, "the peer name must be a DNS label: 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit");
        }

        if (KeyRefusal(publicKey) is { } keyRefusal)
        {
            return new PairingResult(PairingOutcome.InvalidKey, null, keyRefusal);
        }

        await _gate.WaitAsync(cancellationToken);
        try
        {
            var existing = Find(name);
            if (existing is not null)
            {
                if (existing.PublicKey != publicKey)
                {
                    LogKeyMismatch(name);
                    return new PairingResult(PairingOutcome.KeyMismatch, null, $"peer '{name}' is already paired with another public key; delete it on the hub (DELETE /api/peers/v1/{name}) to pair again");
                }

                if (await TryApplyWireGuardAsync(_peers) is { } again)
                {
                    return new PairingResult(PairingOutcome.Unavailable, null, again);
                }

                return new PairingResult(PairingOutcome.Paired, existing, null);
            }

            var byKey = _peers.FirstOrDefault(p => p.PublicKey == publicKey);
            if (byKey is not null)
            {
                return new PairingResult(PairingOutcome.KeyMismatch, null, $"this public key is already paired as peer '{byKey.Name}'");
            }

            var address = pool.Allocate(_peers.Select(p => IPAddress.Parse(p.Ip)));
            if (address is null)
            {
                LogPoolExhausted(name, pool.HubAddress.ToString(), pool.PrefixLength);
                return new PairingResult(PairingOutcome.PoolExhausted, null, $"the hub's address pool ({pool.HubAddress}/{pool.PrefixLength}) is exhausted; delete unused peers or use a larger --wg-subnet-mask");
            }

            var peer = new StoredPeer(name, address.ToString(), publicKey);
            var updated = _peers.Append(peer).ToList();
            if (await CommitAsync(updated, applyWireGuard: true) is { } failure)
            {
                LogChangeFailed(name, failure);
                return new PairingResult(PairingOutcome.Unavailable, null, $"the hub could not add peer '{name}': {failure}");
            }

            return new PairingResult(PairingOutcome.Paired, peer, null);
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>
    /// Stores the metadata of a peer's sync when it changed (not a disk write per sync). Null when stored (or
    /// unchanged), else why the peers file could not be written (then nothing changed).
    /// </summary>
    public async Task<string?> UpdateMetadataAsync(string name, JsonElement? metadata, CancellationToken cancellationToken)
    {
        var current = Find(name);
        if (current is null || JsonEquals(current.Metadata, metadata))
        {
            return null;
        }

        await _gate.WaitAsync(cancellationToken);
        try
        {
            var updated = _peers.Select(p => p.Name == name ? p with { Metadata = metadata?.Clone() } : p).ToList();
            return await CommitAsync(updated, applyWireGuard: false);
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>
    /// Forgets the peer; returns once its apps are withdrawn everywhere (listeners closed, generated objects deleted),
    /// so <see cref="PeerDeletion.Deleted"/> means gone. When a sink could not apply the withdrawal (the Kubernetes API
    /// failing) the peer is still forgotten and the result says what is left; the sink retries on its own.
    /// </summary>
    public async Task<PeerDeletion> DeleteAsync(string name, CancellationToken cancellationToken)
    {
        if (!await ForgetAsync(name, cancellationToken))
        {
            return PeerDeletion.NotFound;
        }

        var converged = await reconciler.ConvergeAsync(cancellationToken);
        return converged.Succeeded ? PeerDeletion.Deleted : PeerDeletion.Incomplete(converged.SinkFailure!);
    }

    private async Task<bool> ForgetAsync(string name, CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken);
        try
        {
            if (Find(name) is null)
            {
                return false;
            }

            var updated = _peers.Where(p => p.Name != name).ToList();
            if (await CommitAsync(updated, applyWireGuard: true) is { } failure)
            {
                LogChangeFailed(name, failure);
                throw new PeerDirectoryException($"the hub could not delete peer '{name}': {failure}");
            }

            remoteApps.Remove(name);
            LogDeleted(name);
            return true;
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>Makes WireGuard's peer list match the store (at start and after every change).</summary>
    public async Task SyncWireGuardAsync(CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken);
        try
        {
            await ApplyWireGuardAsync(_peers, cancellationToken);
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>Why <paramref name="publicKey"/> cannot be a spoke's key, or null when it can.</summary>
    private string? KeyRefusal(string? publicKey)
    {
        if (!WgKeys.IsValidKey(publicKey))
        {
            return "the WireGuard public key is not 32 bytes in canonical base64 (44 characters, as `wg pubkey` prints it)";
        }

        if (publicKey == WgKeys.ZeroKey)
        {
            return "the WireGuard public key is all zeros";
        }

        return publicKey == hubPublicKey ? "the WireGuard public key is the hub's own" : null;
    }

    /// <summary>
    /// Stores <paramref name="updated"/>, then gives it to WireGuard; only when both worked does <see cref="List"/>
    /// show it. A refusal puts the peers file back byte for byte and WireGuard back to the current list. Null on
    /// success, else the reason. Not cancellable once started: a client that hangs up must not leave the file and
    /// WireGuard half changed.
    /// </summary>
    private async Task<string?> CommitAsync(List<StoredPeer> updated, bool applyWireGuard)
    {
        byte[]? before;
        try
        {
            before = applyWireGuard && File.Exists(file.Path) ? await File.ReadAllBytesAsync(file.Path, CancellationToken.None) : null;
            await file.WriteAsync(new StoredPeers(updated), CancellationToken.None);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return $"the peers file cannot be written ({ex.Message})";
        }

        if (applyWireGuard && await TryApplyWireGuardAsync(updated) is { } refused)
        {
            try
            {
                if (before is null)
                {
                    File.Delete(file.Path);
                }
                else
                {
                    await AtomicFile.WriteAsync(file.Path, before, CancellationToken.None);
                }
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                LogRollbackFailed(file.Path, ex.Message);
            }

            _ = await TryApplyWireGuardAsync(_peers);
            return refused;
        }

        _peers = updated;
        return null;
    }

    private async Task<string?> TryApplyWireGuardAsync(IReadOnlyList<StoredPeer> peers)
    {
        try
        {
            await ApplyWireGuardAsync(peers, CancellationToken.None);
            return null;
        }
        catch (Exception ex)
        {
            return $"WireGuard refused the peer list ({ex.Message})";
        }
    }

    private Task ApplyWireGuardAsync(IReadOnlyList<StoredPeer> peers, CancellationToken cancellationToken) =>
        wireGuard.SetPeersAsync(peers.Select(p => new WgPeer(p.PublicKey, [$"{p.Ip}/32"])).ToList(), cancellationToken);

    private static bool JsonEquals(JsonElement? a, JsonElement? b) =>
        (a is null || a.Value.ValueKind == JsonValueKind.Null) && (b is null || b.Value.ValueKind == JsonValueKind.Null)
        || (a is not null && b is not null && JsonElement.DeepEquals(a.Value, b.Value));

    [LoggerMessage(EventId = 2000, Level = LogLevel.Warning, Message = "Refused pairing of peer {Name}: it is already paired with a different public key (delete the peer to pair it again)")]
    private partial void LogKeyMismatch(string name);

    [LoggerMessage(EventId = 2001, Level = LogLevel.Error, Message = "Refused pairing of peer {Name}: the address pool {Hub}/{Prefix} is exhausted")]
    private partial void LogPoolExhausted(string name, string hub, int prefix);

    [LoggerMessage(EventId = 2002, Level = LogLevel.Information, Message = "Deleted peer {Name}: removed from WireGuard, its apps withdrawn")]
    private partial void LogDeleted(string name);

    [LoggerMessage(EventId = 2003, Level = LogLevel.Error, Message = "Change of peer {Name} not made, the peer list is as before: {Reason}")]
    private partial void LogChangeFailed(string name, string reason);

    [LoggerMessage(EventId = 2004, Level = LogLevel.Error, Message = "Could not put the peers file {Path} back after WireGuard refused a change: {Reason}")]
    private partial void LogRollbackFailed(string path, string reason);
}
