using System.Text.Json;
using System.Text.Json.Serialization;

namespace Wormhole.Tunnel.Pairing;

/// <summary>Pairing request, spoke → hub (reference §2.2). Field order and snake_case are the wire contract.</summary>
public sealed record PairingRequest(
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("wireguard")] PairingWireGuard WireGuard,
    [property: JsonPropertyName("metadata")] Dictionary<string, string>? Metadata);

public sealed record PairingWireGuard(
    [property: JsonPropertyName("public_key")] string PublicKey,
    [property: JsonPropertyName("endpoint")][property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Endpoint = null);

/// <summary>Pairing response, hub → spoke (reference §2.2).</summary>
public sealed record PairingResponse(
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("assigned_ip")] string AssignedIp,
    [property: JsonPropertyName("internal_server_ip")] string InternalServerIp,
    [property: JsonPropertyName("wireguard")] PairingWireGuard WireGuard,
    [property: JsonPropertyName("metadata")] Dictionary<string, string>? Metadata)
{
    public const string SyncServerAddressKey = "sync_server_address";

    [JsonIgnore]
    public string? SyncServerAddress => Metadata is not null && Metadata.TryGetValue(SyncServerAddressKey, out var v) ? v : null;
}

[JsonSourceGenerationOptions(PropertyNameCaseInsensitive = false, DefaultIgnoreCondition = JsonIgnoreCondition.Never)]
[JsonSerializable(typeof(PairingRequest))]
[JsonSerializable(typeof(PairingResponse))]
internal sealed partial class PairingJsonContext : JsonSerializerContext;

/// <summary>Encodes and decodes pairing messages, with the PSK layer when an invite token is set.</summary>
public sealed class PairingCodec
{
    private readonly PskCipher? _cipher;

    /// <param name="inviteToken">The PSK; empty means plain JSON, as the reference does.</param>
    public PairingCodec(string? inviteToken)
    {
        _cipher = string.IsNullOrEmpty(inviteToken) ? null : new PskCipher(inviteToken);
    }

    public bool Encrypted => _cipher is not null;

    public byte[] EncodeRequest(PairingRequest request) =>
        Wrap(JsonSerializer.SerializeToUtf8Bytes(request, PairingJsonContext.Default.PairingRequest));

    public byte[] EncodeResponse(PairingResponse response) =>
        Wrap(JsonSerializer.SerializeToUtf8Bytes(response, PairingJsonContext.Default.PairingResponse));

    /// <summary>Null plus a reason when the body cannot be decrypted or is not a valid request.</summary>
    public PairingRequest? DecodeRequest(ReadOnlySpan<byte> body, out string? error)
    {
        var request = Decode(body, PairingJsonContext.Default.PairingRequest, out error);
        if (request is not null && (string.IsNullOrWhiteSpace(request.Name) || request.WireGuard is null || string.IsNullOrEmpty(request.WireGuard.PublicKey)))
        {
            error = "the request lacks a name or a WireGuard public key";
            return null;
        }

        return request;
    }

    public PairingResponse? DecodeResponse(ReadOnlySpan<byte> body, out string? error)
    {
        var response = Decode(body, PairingJsonContext.Default.PairingResponse, out error);
        if (response is not null && (string.IsNullOrEmpty(response.AssignedIp) || response.WireGuard is null || string.IsNullOrEmpty(response.WireGuard.PublicKey)))
        {
            error = "the response lacks an assigned address or the hub's public key";
            return null;
        }

        return response;
    }

    public static string Serialize(PairingResponse response) =>
        JsonSerializer.Serialize(response, PairingJsonContext.Default.PairingResponse);

    public static PairingResponse? Deserialize(string json) =>
        JsonSerializer.Deserialize(json, PairingJsonContext.Default.PairingResponse);

    private byte[] Wrap(byte[] json) => _cipher is null ? json : _cipher.Seal(json);

    private T? Decode<T>(ReadOnlySpan<byte> body, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> type, out string? error)
        where T : class
    {
        var plain = body;
        if (_cipher is not null)
        {
            var opened = _cipher.Open(body);
            if (opened is null)
            {
                error = "cannot decrypt the message: the invite tokens differ or the body is not a pairing message";
                return null;
            }

            plain = opened;
        }

        try
        {
            var value = JsonSerializer.Deserialize(plain, type);
            error = value is null ? "the message is empty" : null;
            return value;
        }
        catch (JsonException)
        {
            error = "the message is not valid pairing JSON";
            return null;
        }
    }
}
