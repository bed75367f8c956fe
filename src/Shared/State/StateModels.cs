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

/// <summary>One paired spoke, as the hub stores it (peers.json). Same field names as /api/peers/v1.</summary>
public sealed record StoredPeer(
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("ip")] string Ip,
    [property: JsonPropertyName("public_key")] string PublicKey,
    [property: JsonPropertyName("metadata")] JsonElement? Metadata = null);

public sealed record StoredPeers([property: JsonPropertyName("peers")] List<StoredPeer> Peers);

[JsonSourceGenerationOptions(WriteIndented = true)]
[JsonSerializable(typeof(StoredKeys))]
[JsonSerializable(typeof(StoredPeers))]
[JsonSerializable(typeof(PairingResponse))]
public sealed partial class StateJsonContext : JsonSerializerContext;

/// <summary>The files of <c>--state-dir</c>.</summary>
public sealed class StateDirectory(string root)
{
    public string Root { get; } = root;

    public JsonStateFile<StoredKeys> Keys => new(Path.Combine(Root, "keys.json"), StateJsonContext.Default.StoredKeys);

    public JsonStateFile<StoredPeers> Peers => new(Path.Combine(Root, "peers.json"), StateJsonContext.Default.StoredPeers);

    public JsonStateFile<PairingResponse> PairingCache => new(Path.Combine(Root, "pairing.json"), StateJsonContext.Default.PairingResponse);
}
