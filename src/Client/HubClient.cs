using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using Wormhole.Tunnel.Pairing;
using Wormhole.Tunnel.Sync;

namespace Wormhole.Tunnel.Client;

/// <summary>A failed call to the hub, with one sentence saying why (no secrets, no bodies beyond a short reason).</summary>
internal sealed class HubCallException(string message, HttpStatusCode? status = null) : Exception(message)
{
    public HttpStatusCode? Status { get; } = status;

    /// <summary>The hub no longer knows this spoke (deleted, or its state was lost): pair again.</summary>
    public bool PeerUnknown => Status is HttpStatusCode.NotFound or HttpStatusCode.Forbidden;
}

internal sealed record SyncResult(SyncMessage Message, string? HubVersion);

/// <summary>HTTP to the hub: pairing on its public API, sync and the cache probe through the tunnel.</summary>
internal sealed class HubClient(Uri pairingBase, PairingCodec codec) : IDisposable
{
    private readonly HttpClient _http = new(new SocketsHttpHandler
    {
        UseProxy = false,
        ConnectTimeout = TimeSpan.FromSeconds(5),
        PooledConnectionIdleTimeout = TimeSpan.FromSeconds(60),
        AutomaticDecompression = DecompressionMethods.None,
    })
    {
        Timeout = Timeout.InfiniteTimeSpan,
    };

    /// <summary>With a join token: pairs at the token's URL, the request keyed from its secret, the answer checked against its fingerprint.</summary>
    public JoinToken? JoinToken { get; init; }

    /// <summary>The clock of token requests' timestamps.</summary>
    public TimeProvider Time { get; init; } = TimeProvider.System;

    public async Task<PairingResponse> PairAsync(PairingRequest request, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(TimeSpan.FromSeconds(10));
        byte[] nonce = [];
        var url = JoinToken is { } token ? new Uri(token.PairingUrl, JoinPairing.Path.TrimStart('/')) : new Uri(pairingBase, "pairing");
        using var content = new ByteArrayContent(JoinToken is { } t ? JoinPairing.SealRequest(t, request, Time.GetUtcNow(), out nonce) : codec.EncodeRequest(request));
        content.Headers.ContentType = new MediaTypeHeaderValue(JoinToken is null ? "application/octet-stream" : "application/json");
        HttpResponseMessage response;
        try
        {
            response = await _http.PostAsync(url, content, timeout.Token);
        }
        catch (Exception ex) when (ex is HttpRequestException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            throw new HubCallException($"cannot reach the hub's pairing API at {url}: {ex.Message}");
        }

        using (response)
        {
            var body = await response.Content.ReadAsByteArrayAsync(timeout.Token);
            if (response.StatusCode != HttpStatusCode.OK)
            {
                throw new HubCallException($"the hub refused pairing with status {(int)response.StatusCode}: {ShortText(body)}", response.StatusCode);
            }

            var decoded = (JoinToken is { } joined ? JoinPairing.OpenResponse(joined, nonce, body, out var error) : codec.DecodeResponse(body, out error))
                ?? throw new HubCallException($"the hub's pairing response is unusable: {error}");
            if (!IPAddress.TryParse(decoded.AssignedIp, out _) || !IPAddress.TryParse(decoded.InternalServerIp, out _))
            {
                throw new HubCallException("the hub's pairing response has no valid assigned or hub address");
            }

            if (decoded.SyncServerAddress is null || !Uri.TryCreate(decoded.SyncServerAddress, UriKind.Absolute, out _))
            {
                throw new HubCallException("the hub's pairing response has no metadata.sync_server_address");
            }

            if (string.IsNullOrEmpty(decoded.WireGuard.Endpoint))
            {
                throw new HubCallException("the hub's pairing response has no WireGuard endpoint (is --wg-public-host set on the hub?)");
            }

            return decoded;
        }
    }

    /// <summary>One sync. With <paramref name="hubVersion"/>, a hub of ours holds the answer until its apps change (long-poll).</summary>
    public async Task<SyncResult> SyncAsync(Uri syncBase, byte[] body, string? hubVersion, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(hubVersion is null ? TimeSpan.FromSeconds(10) : TimeSpan.FromSeconds(40));
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(syncBase, "sync"))
        {
            Content = new ByteArrayContent(body),
        };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
        if (hubVersion is not null)
        {
            request.Headers.TryAddWithoutValidation(SyncHeaders.Wait, hubVersion);
        }

        try
        {
            using var response = await _http.SendAsync(request, timeout.Token);
            var bytes = await response.Content.ReadAsByteArrayAsync(timeout.Token);
            if (response.StatusCode != HttpStatusCode.OK)
            {
                var text = ShortText(bytes);
                var unknown = response.StatusCode is HttpStatusCode.NotFound or HttpStatusCode.Forbidden || text.Contains("peer does not exist", StringComparison.Ordinal);
                throw new HubCallException($"the hub answered the sync with status {(int)response.StatusCode}: {text}", unknown ? HttpStatusCode.NotFound : response.StatusCode);
            }

            var message = SyncCodec.Decode(bytes, out var error) ?? throw new HubCallException($"the hub's sync answer is unusable: {error}");
            var version = response.Headers.TryGetValues(SyncHeaders.Version, out var values) ? values.FirstOrDefault() : null;
            return new SyncResult(message, version);
        }
        catch (Exception ex) when (ex is HttpRequestException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            throw new HubCallException($"sync with the hub at {syncBase} failed: {(ex is OperationCanceledException ? "timed out" : ex.Message)}");
        }
    }

    /// <summary>
    /// Asks the hub, through the tunnel, to move this spoke to a new key and preshared key. Throws
    /// <see cref="HubCallException"/>; its status is null when the answer never came (the hub may have switched).
    /// </summary>
    public async Task RotateAsync(Uri syncBase, KeyRotation rotation, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(TimeSpan.FromSeconds(10));
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(syncBase, KeyRotation.Path.TrimStart('/')))
        {
            Content = new ByteArrayContent(System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(rotation, KeyRotationJsonContext.Default.KeyRotation)),
        };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        request.Headers.ConnectionClose = true;
        try
        {
            using var response = await _http.SendAsync(request, timeout.Token);
            var bytes = await response.Content.ReadAsByteArrayAsync(timeout.Token);
            if (response.StatusCode != HttpStatusCode.OK)
            {
                throw new HubCallException($"the hub refused the key rotation with status {(int)response.StatusCode}: {ShortText(bytes)}", response.StatusCode);
            }
        }
        catch (Exception ex) when (ex is HttpRequestException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            throw new HubCallException($"the key rotation got no answer: {(ex is OperationCanceledException ? "timed out" : ex.Message)}");
        }
    }

    /// <summary>True when anything at the hub's sync address answers HTTP through the tunnel (proof the cached pairing still holds).</summary>
    public async Task<bool> ProbeAsync(Uri syncBase, TimeSpan timeout, CancellationToken cancellationToken)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        cts.CancelAfter(timeout);
        try
        {
            using var response = await _http.GetAsync(new Uri(syncBase, "health"), cts.Token);
            return true;
        }
        catch (Exception ex) when (ex is HttpRequestException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            return false;
        }
    }

    public void Dispose() => _http.Dispose();

    /// <summary>The start of an answer's body for a log line: control characters escaped, cut short.</summary>
    private static string ShortText(byte[] body)
    {
        var text = System.Text.Encoding.UTF8.GetString(body, 0, Math.Min(body.Length, 300)).Trim();
        return text.Length == 0 ? "(no body)" : Hosting.LogText.Of(text, 300);
    }
}

internal static class ClientMetadata
{
    /// <summary>Parses --client-metadata / CLIENT_METADATA: a JSON object.</summary>
    public static JsonElement? Parse(string? json, out string? error)
    {
        error = null;
        if (string.IsNullOrWhiteSpace(json))
        {
            return null;
        }

        try
        {
            using var doc = JsonDocument.Parse(json);
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                error = "--client-metadata must be a JSON object such as {\"team\":\"payments\"}.";
                return null;
            }

            return doc.RootElement.Clone();
        }
        catch (JsonException)
        {
            error = "--client-metadata is not valid JSON; it must be a JSON object such as {\"team\":\"payments\"}.";
            return null;
        }
    }
}
