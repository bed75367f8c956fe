using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;
using k8s.Models;
using Wormhole.Tunnel.Hosting;

namespace Wormhole.Tunnel.Kubernetes;

/// <summary>
/// JSON for the Kubernetes kinds we speak (Services, NetworkPolicies, Events, their lists and Status), with the
/// library's models, written and read as the library does (nulls left out, RFC 3339 times), but source-generated for
/// these types alone. Use this, not the library's <c>KubernetesJson</c> or its typed operations: those go through one
/// context that covers every kind of the API, so a single call compiles all of them into the NativeAOT executable
/// (14 MB) and makes every start rebuild their type data in memory (12 MiB of RSS, whether Kubernetes is used or not).
/// </summary>
public static class KubeJson
{
    /// <summary>The type information of <typeparamref name="T"/>: one of ours or a type they contain.</summary>
    public static JsonTypeInfo<T> TypeInfo<T>() =>
        (JsonTypeInfo<T>)(KubeJsonContext.Default.GetTypeInfo(typeof(T)) ?? throw new NotSupportedException($"{typeof(T).Name} is not a Kubernetes type we speak."));

    /// <summary>A model (an object or any part of one, e.g. a spec) as JSON.</summary>
    public static string Serialize(object value) =>
        JsonSerializer.Serialize(value, KubeJsonContext.Default.GetTypeInfo(value.GetType()) ?? throw new NotSupportedException($"{value.GetType().Name} is not a Kubernetes type we speak."));

    public static T? Deserialize<T>(string json) => JsonSerializer.Deserialize(json, TypeInfo<T>());

    public static T? Deserialize<T>(JsonElement json) => json.Deserialize(TypeInfo<T>());

    public static ValueTask<T?> DeserializeAsync<T>(Stream json, CancellationToken cancellationToken) => JsonSerializer.DeserializeAsync(json, TypeInfo<T>(), cancellationToken);
}

/// <summary>
/// The apiserver's times, as the library writes them: UTC, whole seconds without a fraction, any other with
/// microseconds; read from RFC 3339 with any number of fraction digits (nanoseconds are cut to the 100 ns .NET keeps).
/// </summary>
internal sealed class KubeTimeConverter : JsonConverter<DateTime>
{
    public override DateTime Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TryGetDateTimeOffset(out var parsed))
        {
            return parsed.UtcDateTime;
        }

        var text = reader.GetString() ?? throw new JsonException("A time is null.");
        var dot = text.IndexOf('.', StringComparison.Ordinal);
        if (dot > 0)
        {
            var end = dot + 1;
            while (end < text.Length && char.IsAsciiDigit(text[end]))
            {
                end++;
            }

            if (end - dot - 1 > 7)
            {
                text = string.Concat(text.AsSpan(0, dot + 8), text.AsSpan(end));
            }
        }

        return DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out parsed)
            ? parsed.UtcDateTime
            : throw new JsonException($"'{LogText.Of(text, 64)}' is not an RFC 3339 time.");
    }

    public override void Write(Utf8JsonWriter writer, DateTime value, JsonSerializerOptions options)
    {
        var utc = value.Kind == DateTimeKind.Unspecified ? DateTime.SpecifyKind(value, DateTimeKind.Utc) : value.ToUniversalTime();
        writer.WriteStringValue(utc.ToString(utc.Ticks % TimeSpan.TicksPerSecond == 0 ? "yyyy'-'MM'-'dd'T'HH':'mm':'ss'Z'" : "yyyy'-'MM'-'dd'T'HH':'mm':'ss'.'ffffff'Z'", CultureInfo.InvariantCulture));
    }
}

[JsonSourceGenerationOptions(
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    UseStringEnumConverter = true,
    Converters = [typeof(KubeTimeConverter)])]
[JsonSerializable(typeof(V1Service))]
[JsonSerializable(typeof(V1ServiceList))]
[JsonSerializable(typeof(V1NetworkPolicy))]
[JsonSerializable(typeof(V1NetworkPolicyList))]
[JsonSerializable(typeof(Corev1Event))]
[JsonSerializable(typeof(Corev1EventList))]
[JsonSerializable(typeof(V1Status))]
[JsonSerializable(typeof(V1DeleteOptions))]
[JsonSerializable(typeof(JsonElement))] // managedFields[].fieldsV1 is an object: read as a JsonElement, written back as one
internal sealed partial class KubeJsonContext : JsonSerializerContext;
