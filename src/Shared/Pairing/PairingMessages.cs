using System.Text.Json;
using System.Text.Json.Serialization;

namespace Wormhole.Tunnel.Pairing;

/// <summary>Pairing request, spoke → hub (reference §2.2). Field order and snake_case are the wire contract.</summary>
public sealed record PairingRequest(
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("wireguard")] PairingWireGuard WireGuard,
    [property: JsonPropertyName("metadata")] Dictionary<string, string>? Metadata)
{
    /// <summary>
    /// Request metadata key (value <c>"1"</c>) by which a spoke of ours asks for a per-peer WireGuard preshared key. The
    /// reference's spokes send <c>{}</c> and get none: they could not configure it, and the tunnel would not come up.
    /// </summary>
    public const string WantsPresharedKeyKey = "wormhole_preshared_key";

    [JsonIgnore]
    public bool WantsPresharedKey => Metadata is not null && Metadata.TryGetValue(WantsPresharedKeyKey, out var v) && v == "1";
}

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

    /// <summary>Response metadata key of the per-peer WireGuard preshared key (base64), when the spoke asked for one.</summary>
    public const string PresharedKeyKey = "preshared_key";

    [JsonIgnore]
    public string? SyncServerAddress => Metadata is not null && Metadata.TryGetValue(SyncServerAddressKey, out var v) ? v : null;

    [JsonIgnore]
    public string? PresharedKey => Metadata is not null && Metadata.TryGetValue(PresharedKeyKey, out var v) ? v : null;

    /// <summary>Never prints the preshared key.</summary>
    public override string ToString() =>
        $"PairingResponse {{ Name = {Name}, AssignedIp = {AssignedIp}, InternalServerIp = {InternalServerIp}, HubKey = {WireGuard?.PublicKey}, Endpoint = {WireGuard?.Endpoint}, SyncServer = {SyncServerAddress}, PresharedKey = {(PresharedKey is null ? "none" : "(hidden)")} }}";
}

[JsonSourceGenerationOptions(PropertyNameCaseInsensitive = false, DefaultIgnoreCondition = JsonIgnoreCondition.Never)]
[JsonSerializable(typeof(PairingRequest))]
[JsonSerializable(typeof(PairingResponse))]
internal sealed partial class PairingJsonContext : JsonSerializerContext;

/// <summary>Encodes and decodes pairing messages, with the PSK layer when an invite token is set.</summary>
public sealed class PairingCodec
{
    private readonly PskCipher? _cipher;
    private readonly PskCipher? _previous;

    /// <param name="inviteToken">The PSK; empty means plain JSON, as the reference does.</param>
    /// <param name="previousInviteToken">During a rotation, the PSK before <paramref name="inviteToken"/>: requests sealed with either are accepted, and answered with the one that opened them.</param>
    public PairingCodec(string? inviteToken, string? previousInviteToken = null)
    {
        _cipher = string.IsNullOrEmpty(inviteToken) ? null : new PskCipher(inviteToken);
        _previous = _cipher is null || string.IsNullOrEmpty(previousInviteToken) ? null : new PskCipher(previousInviteToken);
    }

    public bool Encrypted => _cipher is not null;

    /// <summary>Whether a previous PSK is accepted too.</summary>
    public bool AcceptsPrevious => _previous is not null;

    public byte[] EncodeRequest(PairingRequest request) =>
        Wrap(JsonSerializer.SerializeToUtf8Bytes(request, PairingJsonContext.Default.PairingRequest));

    public byte[] EncodeResponse(PairingResponse response) =>
        Wrap(JsonSerializer.SerializeToUtf8Bytes(response, PairingJsonContext.Default.PairingResponse));

    /// <summary>The answer sealed with the PSK that opened the request (<paramref name="withPrevious"/>: the previous one).</summary>
    public byte[] EncodeResponse(PairingResponse response, bool withPrevious)
    {
        var json = JsonSerializer.SerializeToUtf8Bytes(response, PairingJsonContext.Default.PairingResponse);
        return withPrevious && _previous is not null ? _previous.Seal(json) : Wrap(json);
    }

    /// <summary>Null plus a reason when the body cannot be decrypted or is not a valid request.</summary>
    public PairingRequest? DecodeRequest(ReadOnlySpan<byte> body, out string? error) => DecodeRequest(body, out error, out _);

    /// <summary>As <see cref="DecodeRequest(ReadOnlySpan{byte}, out string?)"/>; <paramref name="withPrevious"/> tells that the previous PSK opened it.</summary>
    public PairingRequest? DecodeRequest(ReadOnlySpan<byte> body, out string? error, out bool withPrevious)
    {
        withPrevious = false;
        var request = Decode(body, PairingJsonContext.Default.PairingRequest, out error);
        if (request is null && _previous is not null && _previous.Open(body) is { } opened)
        {
            withPrevious = true;
            request = Parse(opened, PairingJsonContext.Default.PairingRequest, out error);
        }

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

        return Parse(plain, type, out error);
    }

    private static T? Parse<T>(ReadOnlySpan<byte> plain, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> type, out string? error)
        where T : class
    {
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
