using System.Text.Json;
using System.Text.Json.Serialization.Metadata;

namespace Wormhole.Tunnel.State;

/// <summary>One JSON document in the state directory, read at start and rewritten atomically on every change.</summary>
public sealed class JsonStateFile<T>(string path, JsonTypeInfo<T> type)
    where T : class
{
    public string Path { get; } = path;

    /// <summary>The stored value, or null when the file does not exist. Throws <see cref="StateCorruptException"/> when it cannot be parsed.</summary>
    public T? Read()
    {
        if (!File.Exists(Path))
        {
            return null;
        }

        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(Path);
        }
        catch (IOException ex)
        {
            throw new StateCorruptException(Path, ex.Message);
        }

        try
        {
            return JsonSerializer.Deserialize(bytes, type) ?? throw new StateCorruptException(Path, "it holds null");
        }
        catch (JsonException ex)
        {
            throw new StateCorruptException(Path, $"not valid JSON at byte {ex.BytePositionInLine ?? 0} of line {(ex.LineNumber ?? 0) + 1}");
        }
    }

    /// <summary>The file's bytes, or null when it does not exist. Throws <see cref="StateCorruptException"/> when it cannot be read.</summary>
    public byte[]? ReadBytes()
    {
        if (!File.Exists(Path))
        {
            return null;
        }

        try
        {
            return File.ReadAllBytes(Path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new StateCorruptException(Path, ex.Message);
        }
    }

    public Task WriteAsync(T value, CancellationToken cancellationToken = default) =>
        AtomicFile.WriteAsync(Path, JsonSerializer.SerializeToUtf8Bytes(value, type), cancellationToken);
}
