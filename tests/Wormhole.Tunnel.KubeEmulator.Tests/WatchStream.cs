using System.Text.Json.Nodes;

namespace Wormhole.Tunnel.KubeEmulator.Tests;

/// <summary>A watch request read event by event, as an informer reads it.</summary>
internal sealed class WatchStream : IAsyncDisposable
{
    private readonly HttpResponseMessage _response;
    private readonly StreamReader _reader;

    private WatchStream(HttpResponseMessage response, StreamReader reader)
    {
        _response = response;
        _reader = reader;
    }

    public static async Task<WatchStream> OpenAsync(HttpClient client, string pathAndQuery)
    {
        var response = await client.GetAsync(new Uri(pathAndQuery, UriKind.Relative), HttpCompletionOption.ResponseHeadersRead);
        response.EnsureSuccessStatusCode();
        return new WatchStream(response, new StreamReader(await response.Content.ReadAsStreamAsync()));
    }

    /// <summary>The next event, or null when the server ended the stream.</summary>
    public async Task<JsonObject?> NextAsync(double timeoutSeconds = 10)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(timeoutSeconds));
        try
        {
            var line = await _reader.ReadLineAsync(timeout.Token);
            return line is null ? null : (JsonObject)JsonNode.Parse(line)!;
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"no watch event within {timeoutSeconds} s");
        }
    }

    /// <summary>The next event that is not a BOOKMARK.</summary>
    public async Task<JsonObject?> NextChangeAsync(double timeoutSeconds = 10)
    {
        while (true)
        {
            var next = await NextAsync(timeoutSeconds);
            if (next?.Str("type") != "BOOKMARK")
            {
                return next;
            }
        }
    }

    public ValueTask DisposeAsync()
    {
        _reader.Dispose();
        _response.Dispose();
        return ValueTask.CompletedTask;
    }
}
