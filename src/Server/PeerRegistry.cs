using System.Buffers;
using System.Net;
using System.Runtime.InteropServices;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Api;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.Pairing;
using Wormhole.Tunnel.Runtime;
using Wormhole.Tunnel.Sources;
using Wormhole.Tunnel.State;
using Wormhole.Tunnel.Sync;
using Wormhole.Tunnel.WireGuard;

namespace Wormhole.Tunnel.Server;

internal enum PairingOutcome
{
    Paired,
    InvalidName,
    InvalidKey,
    KeyMismatch,
    PoolExhausted,

    /// <summary>The name or the key was revoked (<c>DELETE /api/peers/v1/{name}?revoke=true</c>).</summary>
    Revoked,

    /// <summary>WireGuard or the peers file refused the change; nothing was changed (the client is not at fault).</summary>
    Unavailable,
}

internal sealed record PairingResult(PairingOutcome Outcome, StoredPeer? Peer, string? Reason);

/// <summary>
/// The hub's spokes: name ↔ public key ↔ tunnel address, persisted before any answer is given. The registry is the
/// source of the hub's tunnel peers: a change is stored, handed to the <see cref="TunnelSource"/> and converged (the
/// planner makes it the WireGuard peer set, the loop applies it); when WireGuard refuses it, the file and the peers are
/// put back as they were and the in-memory list never saw the change. All changes are serialised; reads see an
/// immutable snapshot.
/// </summary>
/// <remarks>
/// An entry of peers.json the hub cannot use (see <see cref="Load"/>) is skipped, not fatal: it is logged, listed by
/// <see cref="ListInvalid"/> (<c>GET /api/peers/v1/invalid</c>), written back byte for byte on every later change (so
/// a later version that can read it finds it again), keeps its name and address from being given to another spoke,
/// and is removed only by <c>DELETE /api/peers/v1/{name}</c> or by editing the file.
/// </remarks>
/// <param name="hubPublicKey">The hub's own WireGuard public key: no spoke may pair with it.</param>
/// <param name="revocationsFile">revocations.json: revoked names and keys (in memory only when null).</param>
internal sealed partial class PeerRegistry(
    JsonStateFile<StoredPeers> file,
    AddressPool pool,
    string hubPublicKey,
    TunnelSource tunnel,
    RemoteAppStore remoteApps,
    ILogger<PeerRegistry> logger,
    Reconciler reconciler,
    JsonStateFile<StoredRevocations>? revocationsFile = null,
    TimeProvider? time = null) : IPeerDirectory
{
    private const string WireGuardSinkName = "wireguard";

    private readonly SemaphoreSlim _gate = new(1, 1);
    private volatile IReadOnlyList<StoredPeer> _peers = [];
    private volatile IReadOnlyList<SkippedEntry> _skipped = [];
    private volatile IReadOnlyList<StoredRevocation> _revocations = [];

    /// <summary>A new per-peer WireGuard preshared key: 32 random bytes, base64.</summary>
    public static string NewPresharedKey() => Convert.ToBase64String(System.Security.Cryptography.RandomNumberGenerator.GetBytes(32));

    public IReadOnlyList<RevocationInfo> Revocations() => _revocations.Select(r => new RevocationInfo(r.Name, r.PublicKey, r.RevokedAt)).ToList();

    /// <summary>Whether the name or the key is revoked.</summary>
    public bool IsRevoked(string name, string? publicKey) => _revocations.Any(r => r.Name == name || (publicKey is not null && r.PublicKey == publicKey));

    public IReadOnlyList<StoredPeer> List() => _peers;

    /// <summary>The entries of peers.json that <see cref="Load"/> skipped, in file order.</summary>
    public IReadOnlyList<InvalidStoredPeer> ListInvalid() => _skipped.Select(s => s.Info).ToList();

    /// <summary>
    /// Reads peers.json. A file that is not JSON, or whose <c>peers</c> is not a list, stops the hub
    /// (<see cref="StateCorruptException"/>): nothing in it can be trusted. One entry the hub cannot use (not an
    /// object, a name that is no DNS label, an address outside the pool, a key that is not canonical, all zeros or
    /// the hub's, a name, address or key an earlier entry already has) is skipped with an error log naming it; the
    /// other peers are served.
    /// </summary>
    public void Load()
    {
        var bytes = file.ReadBytes();
        var peers = new List<StoredPeer>();
        var skipped = new List<SkippedEntry>();
        if (bytes is not null)
        {
            JsonDocument document;
            try
            {
                document = JsonDocument.Parse(bytes);
            }
            catch (JsonException ex)
            {
                throw new StateCorruptException(file.Path, $"not valid JSON at byte {ex.BytePositionInLine ?? 0} of line {(ex.LineNumber ?? 0) + 1}");
            }

            using (document)
            {
                var root = document.RootElement;
                if (root.ValueKind != JsonValueKind.Object)
                {
                    throw new StateCorruptException(file.Path, "the top level is not an object with a 'peers' list");
                }

                if (root.TryGetProperty("peers", out var list) && list.ValueKind != JsonValueKind.Null)
                {
                    if (list.ValueKind != JsonValueKind.Array)
                    {
                        throw new StateCorruptException(file.Path, "'peers' is not a list");
                    }

                    var index = 0;
                    foreach (var entry in list.EnumerateArray())
                    {
                        var (peer, reason) = ReadEntry(entry, peers);
                        if (peer is not null)
                        {
                            peers.Add(peer);
                        }
                        else
                        {
                            var info = new InvalidStoredPeer(StringProperty(entry, "name"), StringProperty(entry, "ip"), StringProperty(entry, "public_key"), reason!);
                            skipped.Add(new SkippedEntry(info, JsonMarshal.GetRawUtf8Value(entry).ToArray()));
                            LogSkippedEntry(index + 1, file.Path, LogText.Of(info.Name), reason!);
                        }

                        index++;
                    }
                }
            }
        }

        _peers = peers;
        _skipped = skipped;
        _revocations = revocationsFile?.Read()?.Revocations?.Where(r => r is not null && r.Name is not null).ToList() ?? [];
        tunnel.SetPeers(Links(peers));
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
    public Task<PairingResult> PairAsync(string name, string publicKey, CancellationToken cancellationToken) =>
        PairAsync(name, publicKey, wantsPresharedKey: false, cancellationToken);

    /// <summary>
    /// Binds name ↔ key on first contact; the same key gets the same address again. With
    /// <paramref name="wantsPresharedKey"/> the peer gets its own WireGuard preshared key (kept when it pairs again).
    /// A revoked name or key is refused.
    /// </summary>
    public async Task<PairingResult> PairAsync(string name, string publicKey, bool wantsPresharedKey, CancellationToken cancellationToken)
    {
        if (!Names.IsValidPeerName(name))
        {
            return new PairingResult(PairingOutcome.InvalidName, null, "the peer name must be a DNS label: 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit");
        }

        if (KeyRefusal(publicKey) is { } keyRefusal)
        {
            return new PairingResult(PairingOutcome.InvalidKey, null, keyRefusal);
        }

        if (IsRevoked(name, publicKey))
        {
            return new PairingResult(PairingOutcome.Revoked, null, $"peer '{name}' or its key is revoked on this hub (DELETE /api/revocations/v1/{name} lifts it)");
        }

        if (!reconciler.FirstPlanApplied)
        {
            // Its WireGuard peers are applied by the first plan's pass: until then a pairing could not be made real.
            return new PairingResult(PairingOutcome.Unavailable, null, "the hub is starting");
        }

        await _gate.WaitAsync(cancellationToken);
        try
        {
            if (IsRevoked(name, publicKey))
            {
                return new PairingResult(PairingOutcome.Revoked, null, $"peer '{name}' or its key is revoked on this hub (DELETE /api/revocations/v1/{name} lifts it)");
            }

            var existing = Find(name);
            if (existing is not null)
            {
                if (existing.PublicKey != publicKey)
                {
                    return new PairingResult(PairingOutcome.KeyMismatch, null, $"peer '{name}' is already paired with another public key; delete it on the hub (DELETE /api/peers/v1/{name}) to pair again");
                }

                if (wantsPresharedKey && existing.PresharedKey is null)
                {
                    // Paired before without one (an older spoke or version): it gets its own now.
                    var withKey = existing with { PresharedKey = NewPresharedKey() };
                    if ((await CommitAsync(_peers.Select(p => p.Name == name ? withKey : p).ToList(), _skipped, applyWireGuard: true)).Refused is { } refusedKey)
                    {
                        return new PairingResult(PairingOutcome.Unavailable, null, $"the hub could not give peer '{name}' a preshared key: {refusedKey}");
                    }

                    return new PairingResult(PairingOutcome.Paired, withKey, null);
                }

                // The same spoke again (its cached pairing did not reach us): its peer is on the interface unless WireGuard
                // refused the peer set, which the last pass says.
                if ((await reconciler.ConvergeAsync(CancellationToken.None)).FailureOf(WireGuardSinkName) is { } again)
                {
                    return new PairingResult(PairingOutcome.Unavailable, null, again);
                }

                return new PairingResult(PairingOutcome.Paired, existing, null);
            }

            if (_skipped.FirstOrDefault(s => s.Info.Name == name) is { } stale)
            {
                return new PairingResult(PairingOutcome.KeyMismatch, null, $"peer '{name}' has a stored entry the hub cannot use ({stale.Info.Reason}); delete it on the hub (DELETE /api/peers/v1/{name}) to pair again");
            }

            var byKey = _peers.FirstOrDefault(p => p.PublicKey == publicKey);
            if (byKey is not null)
            {
                return new PairingResult(PairingOutcome.KeyMismatch, null, $"this public key is already paired as peer '{byKey.Name}'");
            }

            // Addresses of skipped entries stay taken: a later fix that reads them again must not find them reused.
            var address = pool.Allocate(_peers.Select(p => IPAddress.Parse(p.Ip)).Concat(SkippedAddresses()));
            if (address is null)
            {
                return new PairingResult(PairingOutcome.PoolExhausted, null, $"the hub's address pool ({pool.HubAddress}/{pool.PrefixLength}) is exhausted; delete unused peers or use a larger --wg-subnet-mask");
            }

            var peer = new StoredPeer(name, address.ToString(), publicKey, PresharedKey: wantsPresharedKey ? NewPresharedKey() : null);
            var updated = _peers.Append(peer).ToList();
            if ((await CommitAsync(updated, _skipped, applyWireGuard: true)).Refused is { } failure)
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
            return (await CommitAsync(updated, _skipped, applyWireGuard: false)).Refused;
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
    public Task<PeerDeletion> DeleteAsync(string name, CancellationToken cancellationToken) => DeleteAsync(name, revoke: false, cancellationToken);

    /// <summary>As <see cref="DeleteAsync(string, CancellationToken)"/>; with <paramref name="revoke"/> the name and its key are also refused at pairing until lifted.</summary>
    public async Task<PeerDeletion> DeleteAsync(string name, bool revoke, CancellationToken cancellationToken)
    {
        if (await ForgetAsync(name, revoke, cancellationToken) is not { } converged)
        {
            return PeerDeletion.NotFound;
        }

        return converged.Succeeded ? PeerDeletion.Deleted : PeerDeletion.Incomplete(converged.SinkFailure!);
    }

    public async Task<bool> LiftRevocationAsync(string name, CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken);
        try
        {
            var kept = _revocations.Where(r => r.Name != name).ToList();
            if (kept.Count == _revocations.Count)
            {
                return false;
            }

            await StoreRevocationsAsync(kept);
            _revocations = kept;
            LogRevocationLifted(LogText.Of(name));
            return true;
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>
    /// The spoke <paramref name="name"/> (known by its tunnel address, so WireGuard authenticated the request) moves to a
    /// new key and preshared key, keeping its address and its apps. The change is stored at once; WireGuard is switched
    /// by the returned action, which the caller runs once the answer has left (through the old key's session).
    /// </summary>
    public async Task<(string? Refusal, Func<Task>? Apply)> RotateAsync(string name, string newKey, string newPresharedKey, CancellationToken cancellationToken)
    {
        if (KeyRefusal(newKey) is { } keyRefusal)
        {
            return (keyRefusal, null);
        }

        if (!WgKeys.IsValidKey(newPresharedKey))
        {
            return ("the preshared key is not 32 bytes in canonical base64", null);
        }

        await _gate.WaitAsync(cancellationToken);
        try
        {
            var peer = Find(name);
            if (peer is null)
            {
                return ("peer does not exist", null);
            }

            if (peer.PublicKey == newKey)
            {
                return ("the new key is the key the peer has now", null);
            }

            if (_peers.Any(p => p.PublicKey == newKey) || IsRevoked(name, newKey))
            {
                return ("the new key is another peer's or is revoked", null);
            }

            var rotated = peer with { PublicKey = newKey, PresharedKey = newPresharedKey };
            if ((await CommitAsync(_peers.Select(p => p.Name == name ? rotated : p).ToList(), _skipped, applyWireGuard: false)).Refused is { } failure)
            {
                return ($"the hub could not store the new key: {failure}", null);
            }

            LogRotated(name, peer.PublicKey, newKey);
            return (null, async () =>
            {
                tunnel.SetPeers(Links(_peers));
                if ((await reconciler.ConvergeAsync(CancellationToken.None)).FailureOf(WireGuardSinkName) is { } refused)
                {
                    LogChangeFailed(name, refused);
                }
            });
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>Null when there is no such peer; else the pass that withdrew its apps (its WireGuard peer went in an earlier one).</summary>
    private async Task<ConvergeResult?> ForgetAsync(string name, bool revoke, CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken);
        try
        {
            var peer = Find(name);
            var keptSkipped = _skipped.Where(s => s.Info.Name != name).ToList();
            var skippedRemoved = _skipped.Count - keptSkipped.Count;
            if (peer is null && skippedRemoved == 0)
            {
                return null;
            }

            if (revoke)
            {
                // Stored first: a peer that is gone but not revoked could pair again at once (a replayed message).
                var key = peer?.PublicKey ?? _skipped.FirstOrDefault(s => s.Info.Name == name)?.Info.PublicKey;
                var revocations = _revocations.Where(r => r.Name != name).Append(new StoredRevocation(name, key, (time ?? TimeProvider.System).GetUtcNow())).ToList();
                try
                {
                    await StoreRevocationsAsync(revocations);
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
                {
                    throw new PeerDirectoryException($"the hub could not store the revocation of '{LogText.Of(name)}': {ex.Message}");
                }

                _revocations = revocations;
                LogRevoked(LogText.Of(name));
            }

            var updated = _peers.Where(p => p.Name != name).ToList();
            if ((await CommitAsync(updated, keptSkipped, applyWireGuard: peer is not null)).Refused is { } failure)
            {
                LogChangeFailed(LogText.Of(name), failure);
                throw new PeerDirectoryException($"the hub could not delete peer '{LogText.Of(name)}': {failure}");
            }

            if (peer is not null)
            {
                remoteApps.Remove(name);
                LogDeleted(name);
            }

            if (skippedRemoved > 0)
            {
                LogSkippedDeleted(skippedRemoved, LogText.Of(name), file.Path);
            }
        }
        finally
        {
            _gate.Release();
        }

        return await reconciler.ConvergeAsync(cancellationToken);
    }

    private async Task StoreRevocationsAsync(List<StoredRevocation> revocations)
    {
        if (revocationsFile is not null)
        {
            await revocationsFile.WriteAsync(new StoredRevocations(revocations), CancellationToken.None);
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
    /// Stores <paramref name="updated"/>, then (with <paramref name="applyWireGuard"/>) hands it to the tunnel source
    /// and converges; only when both worked does <see cref="List"/> show it. When WireGuard refused the peer set, the
    /// peers file is put back byte for byte and the tunnel's peers with it. Not cancellable once started: a client
    /// that hangs up must not leave the file and WireGuard half changed.
    /// </summary>
    private async Task<Commit> CommitAsync(List<StoredPeer> updated, IReadOnlyList<SkippedEntry> skipped, bool applyWireGuard)
    {
        byte[]? before;
        try
        {
            before = applyWireGuard && File.Exists(file.Path) ? await File.ReadAllBytesAsync(file.Path, CancellationToken.None) : null;
            await AtomicFile.WriteAsync(file.Path, Serialize(updated, skipped), CancellationToken.None);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or InvalidOperationException or ArgumentException)
        {
            return new Commit($"the peers file cannot be written ({ex.Message})", null);
        }

        ConvergeResult? converged = null;
        if (applyWireGuard)
        {
            tunnel.SetPeers(Links(updated));
            converged = await reconciler.ConvergeAsync(CancellationToken.None);
            if (converged.FailureOf(WireGuardSinkName) is { } refused)
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

                tunnel.SetPeers(Links(_peers));
                _ = await reconciler.ConvergeAsync(CancellationToken.None);
                return new Commit($"WireGuard refused the peer list ({refused})", converged);
            }
        }

        _peers = updated;
        _skipped = skipped;
        return new Commit(null, converged);
    }

    /// <summary>What a change came to: why it was refused (then nothing changed), and the pass that applied it, if one ran.</summary>
    private sealed record Commit(string? Refused, ConvergeResult? Converged);

    /// <summary>The stored peers as the tunnel's peers (they dial the hub: no endpoint, no keepalive).</summary>
    private static IEnumerable<PeerLink> Links(IEnumerable<StoredPeer> peers) =>
        peers.Select(p => new PeerLink(p.Name, p.PublicKey, IPAddress.Parse(p.Ip), PresharedKey: WgKeys.IsValidKey(p.PresharedKey) ? p.PresharedKey : null));

    /// <summary>peers.json: the usable peers, then every skipped entry exactly as it was read.</summary>
    private static byte[] Serialize(IReadOnlyList<StoredPeer> peers, IReadOnlyList<SkippedEntry> skipped)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            writer.WriteStartObject();
            writer.WritePropertyName("peers");
            writer.WriteStartArray();
            foreach (var peer in peers)
            {
                JsonSerializer.Serialize(writer, peer, StateJsonContext.Default.StoredPeer);
            }

            foreach (var entry in skipped)
            {
                writer.WriteRawValue(entry.Raw, skipInputValidation: true);
            }

            writer.WriteEndArray();
            writer.WriteEndObject();
        }

        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>One entry of peers.json as a usable peer, or null and why it cannot be used.</summary>
    private (StoredPeer? Peer, string? Reason) ReadEntry(JsonElement entry, List<StoredPeer> earlier)
    {
        if (entry.ValueKind != JsonValueKind.Object)
        {
            return (null, $"the entry is {entry.ValueKind.ToString().ToLowerInvariant()}, not an object");
        }

        StoredPeer? peer;
        try
        {
            peer = entry.Deserialize(StateJsonContext.Default.StoredPeer);
        }
        catch (Exception ex) when (ex is JsonException or InvalidOperationException or ArgumentException)
        {
            return (null, $"the entry is not a peer ({LogText.Of(ex.Message.Split(". ")[0])})");
        }

        if (peer is null || !Names.IsValidPeerName(peer.Name))
        {
            return (null, $"the name '{LogText.Of(peer?.Name)}' is not a DNS label");
        }

        if (!IPAddress.TryParse(peer.Ip, out var ip) || ip.ToString() != peer.Ip || !pool.Contains(ip))
        {
            return (null, $"the address '{LogText.Of(peer.Ip)}' is not an address of the pool {pool.HubAddress}/{pool.PrefixLength}");
        }

        if (KeyRefusal(peer.PublicKey) is { } keyRefusal)
        {
            return (null, keyRefusal);
        }

        if (earlier.Any(p => p.Name == peer.Name))
        {
            return (null, $"an earlier entry has the same name '{peer.Name}'");
        }

        if (earlier.FirstOrDefault(p => p.Ip == peer.Ip || p.PublicKey == peer.PublicKey) is { } twin)
        {
            return (null, $"an earlier entry (peer '{twin.Name}') has the same {(twin.Ip == peer.Ip ? "address" : "public key")}");
        }

        // Metadata an older version stored without checking (not UTF-8) would break every later write of the file:
        // the peer is served without it; its next sync brings it again.
        if (SyncCodec.MetadataProblem(peer.Metadata, checkSize: false) is { } metadataProblem)
        {
            LogMetadataDropped(peer.Name, file.Path, metadataProblem);
            peer = peer with { Metadata = null };
        }

        return (peer, null);
    }

    private IEnumerable<IPAddress> SkippedAddresses() =>
        _skipped.Select(s => IPAddress.TryParse(s.Info.Ip, out var ip) ? ip : null).OfType<IPAddress>();

    private static string? StringProperty(JsonElement entry, string name)
    {
        try
        {
            return entry.ValueKind == JsonValueKind.Object && entry.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String
                ? value.GetString()
                : null;
        }
        catch (InvalidOperationException)
        {
            return null;
        }
    }

    /// <summary>A skipped entry: what the admin API shows, and its bytes as read (written back unchanged).</summary>
    private sealed record SkippedEntry(InvalidStoredPeer Info, byte[] Raw);

    private static bool JsonEquals(JsonElement? a, JsonElement? b) =>
        (a is null || a.Value.ValueKind == JsonValueKind.Null) && (b is null || b.Value.ValueKind == JsonValueKind.Null)
        || (a is not null && b is not null && JsonElement.DeepEquals(a.Value, b.Value));

    // EventIds 2000 and 2001 (key mismatch, pool exhausted) are retired: the pairing endpoint logs every refusal
    // once (2101), rate-limited.

    [LoggerMessage(EventId = 2002, Level = LogLevel.Information, Message = "Deleted peer {Name}: removed from WireGuard, its apps withdrawn")]
    private partial void LogDeleted(string name);

    [LoggerMessage(EventId = 2003, Level = LogLevel.Error, Message = "Change of peer {Name} not made, the peer list is as before: {Reason}")]
    private partial void LogChangeFailed(string name, string reason);

    [LoggerMessage(EventId = 2005, Level = LogLevel.Error, Message = "Skipped entry #{Index} of {Path} (peer {Name}): {Reason}. The other peers are served; the entry stays in the file as it is, GET /api/peers/v1/invalid lists it, DELETE /api/peers/v1/{Name} removes it")]
    private partial void LogSkippedEntry(int index, string path, string name, string reason);

    [LoggerMessage(EventId = 2007, Level = LogLevel.Warning, Message = "Peer {Name} in {Path}: its stored metadata is ignored ({Reason}); its next sync stores it again")]
    private partial void LogMetadataDropped(string name, string path, string reason);

    [LoggerMessage(EventId = 2006, Level = LogLevel.Information, Message = "Removed {Count} skipped entry(ies) of peer {Name} from {Path}")]
    private partial void LogSkippedDeleted(int count, string name, string path);

    [LoggerMessage(EventId = 2008, Level = LogLevel.Warning, Message = "Revoked peer {Name}: its name and key are refused at pairing until DELETE /api/revocations/v1/{Name}")]
    private partial void LogRevoked(string name);

    [LoggerMessage(EventId = 2009, Level = LogLevel.Information, Message = "Lifted the revocation of {Name}: it may pair again")]
    private partial void LogRevocationLifted(string name);

    [LoggerMessage(EventId = 2010, Level = LogLevel.Information, Message = "Peer {Name} rotated its WireGuard key {OldKey} → {NewKey} (same address, same apps)")]
    private partial void LogRotated(string name, string oldKey, string newKey);

    [LoggerMessage(EventId = 2004, Level = LogLevel.Error, Message = "Could not put the peers file {Path} back after WireGuard refused a change: {Reason}")]
    private partial void LogRollbackFailed(string path, string reason);
}
