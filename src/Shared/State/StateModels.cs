using System.Text.Json;
using System.Text.Json.Serialization;
using Wormhole.Tunnel.Pairing;

namespace Wormhole.Tunnel.State;

/// <summary>keys.json: this side's WireGuard key pair (mode 0600).</summary>
public sealed record StoredKeys(
    [property: JsonPropertyName("private_key")] string PrivateKey,
    [property: JsonPropertyName("public_key")] string PublicKey)
{
    public override string ToString() => $"StoredKeys {{ PublicKey = {PublicKey} }}";
}

/// <summary>keys-next.json: a spoke's key rotation in progress (the new key pair and preshared key it asked the hub for).</summary>
public sealed record StoredRotation(
    [property: JsonPropertyName("private_key")] string PrivateKey,
    [property: JsonPropertyName("public_key")] string PublicKey,
    [property: JsonPropertyName("preshared_key")] string PresharedKey)
{
    public override string ToString() => $"StoredRotation {{ PublicKey = {PublicKey} }}";
}

/// <summary>One paired spoke, as the hub stores it (peers.json). Same field names as /api/peers/v1.</summary>
/// <param name="PresharedKey">The peer's own WireGuard preshared key (base64), for spokes that asked for one; never shown by the admin API.</param>
public sealed record StoredPeer(
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("ip")] string Ip,
    [property: JsonPropertyName("public_key")] string PublicKey,
    [property: JsonPropertyName("metadata")] JsonElement? Metadata = null,
    [property: JsonPropertyName("preshared_key")][property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? PresharedKey = null)
{
    /// <summary>Never prints the preshared key.</summary>
    public override string ToString() => $"StoredPeer {{ Name = {Name}, Ip = {Ip}, PublicKey = {PublicKey}, PresharedKey = {(PresharedKey is null ? "none" : "(hidden)")} }}";
}

/// <summary>A revoked peer (revocations.json): its name and the key it had are refused at pairing.</summary>
public sealed record StoredRevocation(
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("public_key")] string? PublicKey,
    [property: JsonPropertyName("revoked_at")] DateTimeOffset RevokedAt);

public sealed record StoredRevocations([property: JsonPropertyName("revocations")] List<StoredRevocation> Revocations);

public sealed record StoredPeers([property: JsonPropertyName("peers")] List<StoredPeer> Peers);

[JsonSourceGenerationOptions(WriteIndented = true)]
[JsonSerializable(typeof(StoredKeys))]
[JsonSerializable(typeof(StoredRotation))]
[JsonSerializable(typeof(StoredPeers))]
[JsonSerializable(typeof(StoredRevocations))]
[JsonSerializable(typeof(PairingResponse))]
public sealed partial class StateJsonContext : JsonSerializerContext;

/// <summary>The files of <c>--state-dir</c>.</summary>
public sealed class StateDirectory(string root)
{
    public string Root { get; } = root;

    public JsonStateFile<StoredKeys> Keys => new(Path.Combine(Root, "keys.json"), StateJsonContext.Default.StoredKeys);

    public JsonStateFile<StoredPeers> Peers => new(Path.Combine(Root, "peers.json"), StateJsonContext.Default.StoredPeers);

    public JsonStateFile<StoredRotation> NextKeys => new(Path.Combine(Root, "keys-next.json"), StateJsonContext.Default.StoredRotation);

    public JsonStateFile<StoredRevocations> Revocations => new(Path.Combine(Root, "revocations.json"), StateJsonContext.Default.StoredRevocations);

    public string Tokens => Path.Combine(Root, "tokens.json");

    public JsonStateFile<PairingResponse> PairingCache => new(Path.Combine(Root, "pairing.json"), StateJsonContext.Default.PairingResponse);
}
