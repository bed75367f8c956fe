using System.Buffers;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Unicode;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Hosting;

namespace Wormhole.Tunnel.Sync;

/// <summary>
/// One sync message, the same shape both ways (reference §3.2): PascalCase top level, camelCase app fields.
/// Input is matched case-insensitively, as Go does; <c>Apps: null</c> is accepted as empty.
/// </summary>
public sealed class SyncMessage
{
    [JsonPropertyName("Peer")]
    public string Peer { get; set; } = "";

    [JsonPropertyName("Metadata")]
    public JsonElement? Metadata { get; set; }

    [JsonPropertyName("Apps")]
    public List<SyncApp>? Apps { get; set; }
}

public sealed class SyncApp
{
    [JsonPropertyName("name")]
    public string Name { get; set; } = "";

    [JsonPropertyName("address")]
    public string Address { get; set; } = "";

    [JsonPropertyName("peer")]
    public string Peer { get; set; } = "";

    [JsonPropertyName("originalPort")]
    public int OriginalPort { get; set; }

    [JsonPropertyName("targetLabels")]
    public string TargetLabels { get; set; } = "";

    /// <summary>
    /// Not in the reference: <c>http</c> for an app its consumers proxy per request. Written only when set, so a message
    /// without HTTP apps is the reference's byte for byte; the reference's peers ignore fields they do not know.
    /// </summary>
    [JsonPropertyName("protocol")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Protocol { get; set; }

    /// <summary>Not in the reference: the path consumers of an HTTP app probe. Written only when set.</summary>
    [JsonPropertyName("healthPath")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? HealthPath { get; set; }

    /// <summary>The app as the receiver keeps it: <paramref name="peer"/> (the sender as paired) replaces the advertised peer name.</summary>
    public AppDescriptor ToDescriptor(string peer) =>
        new(Name, Address, peer, OriginalPort, TargetLabels ?? "") { Protocol = Protocol, HealthPath = HealthPath };
}

[JsonSourceGenerationOptions(PropertyNameCaseInsensitive = true)]
[JsonSerializable(typeof(SyncMessage))]
internal sealed partial class SyncJsonContext : JsonSerializerContext;

/// <summary>The long-poll extension of sync, in both executables (a reference peer sends and expects neither).</summary>
public static class SyncHeaders
{
    /// <summary>A spoke of ours sends the hub version it has; the hub holds the answer until that changes.</summary>
    public const string Wait = "X-Wormhole-Wait";

    /// <summary>The hub's current advertised version; its absence tells a spoke it talks to a reference hub.</summary>
    public const string Version = "X-Wormhole-Version";
}

public static class SyncCodec
{
    /// <summary>The largest sync body accepted (8 MiB ≈ 55,000 apps); larger bodies are refused with 413.</summary>
    public const long MaxBodyBytes = 8L * 1024 * 1024;

    /// <summary>
    /// The largest <c>Metadata</c> accepted, as compact JSON (16 KiB; the reference's spokes send a few
    /// <c>--client-metadata</c> key=value pairs). The hub stores it in peers.json and serves it on /api/peers/v2;
    /// a sync with more is refused with 400.
    /// </summary>
    public const int MaxMetadataBytes = 16 * 1024;

    public static byte[] Encode(string peer, JsonElement? metadata, IEnumerable<AppDescriptor> apps)
    {
        var message = new SyncMessage
        {
            Peer = peer,
            Metadata = metadata,
            Apps = apps.Select(a => new SyncApp
            {
                Name = a.Name,
                Address = a.Address,
                Peer = a.Peer,
                OriginalPort = a.OriginalPort,
                TargetLabels = a.TargetLabels,
                Protocol = a.Protocol,
                HealthPath = a.HealthPath,
            }).ToList(),
        };
        return JsonSerializer.SerializeToUtf8Bytes(message, SyncJsonContext.Default.SyncMessage);
    }

    /// <summary>Parses and validates a message; null plus one sentence on any problem.</summary>
    public static SyncMessage? Decode(ReadOnlySpan<byte> body, out string? error) => Decode(body, MaxMetadataBytes, out error);

    /// <summary>As <see cref="Decode(ReadOnlySpan{byte}, out string?)"/>, with the metadata quota of this side (--max-metadata-bytes).</summary>
    public static SyncMessage? Decode(ReadOnlySpan<byte> body, int maxMetadataBytes, out string? error)
    {
        // The JSON reader does not check the bytes inside strings; what is not UTF-8 fails only when written back
        // (the metadata into peers.json), long after the sync was accepted.
        if (!Utf8.IsValid(body))
        {
            error = "the sync body is not valid UTF-8";
            return null;
        }

        SyncMessage? message;
        try
        {
            message = JsonSerializer.Deserialize(body, SyncJsonContext.Default.SyncMessage);
        }
        catch (JsonException ex)
        {
            error = $"the sync body is not valid JSON ({LogText.Of(ex.Message.Split('.')[0])})";
            return null;
        }

        if (message is null)
        {
            error = "the sync body is empty";
            return null;
        }

        if (MetadataProblem(message.Metadata, checkSize: true, maxMetadataBytes) is { } problem)
        {
            error = problem;
            return null;
        }

        message.Apps ??= [];
        foreach (var app in message.Apps)
        {
            if (app is null || string.IsNullOrEmpty(app.Name))
            {
                error = "an app in the sync body has no name";
                return null;
            }

            if (!AppAddress.TryParse(app.Address, out _, out _))
            {
                error = $"app '{Truncate(app.Name)}' has an invalid address '{Truncate(app.Address)}'";
                return null;
            }

            if (app.OriginalPort is < 0 or > 65535)
            {
                error = $"app '{Truncate(app.Name)}' has an invalid originalPort {app.OriginalPort}";
                return null;
            }
        }

        error = null;
        return message;
    }

    /// <summary>
    /// Why the metadata cannot be stored, or null: its text must be UTF-8, it must write back as JSON (no unpaired
    /// surrogate in an escape) and, with <paramref name="checkSize"/>, fit <see cref="MaxMetadataBytes"/>.
    /// </summary>
    internal static string? MetadataProblem(JsonElement? metadata, bool checkSize, int maxBytes = MaxMetadataBytes)
    {
        if (metadata is not { } value)
        {
            return null;
        }

        if (!Utf8.IsValid(System.Runtime.InteropServices.JsonMarshal.GetRawUtf8Value(value)))
        {
            return "the sync metadata is not valid UTF-8";
        }

        var buffer = new ArrayBufferWriter<byte>();
        try
        {
            using var writer = new Utf8JsonWriter(buffer);
            value.WriteTo(writer);
        }
        catch (Exception ex) when (ex is InvalidOperationException or ArgumentException)
        {
            return "the sync metadata cannot be stored as JSON (a string that is not valid Unicode)";
        }

        return checkSize && buffer.WrittenCount > maxBytes
            ? $"the sync metadata is {buffer.WrittenCount} bytes; at most {maxBytes} are accepted"
            : null;
    }

    /// <summary>A remote value quoted in an error (which is logged and answered): escaped and cut to 64 characters.</summary>
    private static string Truncate(string? s) => s is null ? "" : LogText.Of(s, 64);
}
