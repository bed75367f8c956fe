using System.Net;
using System.Net.Http.Headers;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;

namespace Wormhole.Tunnel.Kubernetes;

/// <summary>
/// The Kubernetes REST API over one HttpClient: JSON in and out (source-generated, camelCase, nulls left out),
/// error answers turned into <see cref="KubeApiException"/>, watches read line by line.
/// </summary>
public sealed class KubernetesClient : IKubernetesClient, IDisposable
{
    /// <summary>Asked of the apiserver for every watch; it ends the stream after this long and we resume.</summary>
    internal const int WatchTimeoutSeconds = 290;

    private const string Json = "application/json";

    // Patches are written as given: null members stay (in a merge patch, null removes a key); anonymous types are allowed.
    private static readonly JsonSerializerOptions PatchOptions = new(JsonSerializerDefaults.Web)
    {
        TypeInfoResolver = JsonTypeInfoResolver.Combine(KubeJsonContext.Default, new DefaultJsonTypeInfoResolver()),
    };

    private readonly HttpClient _http;
    private readonly string _server;
    private readonly Func<AuthenticationHeaderValue?> _authorization;
    private readonly TimeProvider _time;

    public KubernetesClient(KubeConfig config, TimeProvider? time = null)
        : this(config.CreateHandler(), config.Server, config.Authorization, time ?? TimeProvider.System)
    {
    }

    internal KubernetesClient(HttpMessageHandler handler, Uri server, Func<AuthenticationHeaderValue?> authorization, TimeProvider time)
    {
        _http = new HttpClient(handler) { Timeout = Timeout.InfiniteTimeSpan };
        _http.DefaultRequestHeaders.UserAgent.ParseAdd("wormhole-tunnel");
        _server = server.AbsoluteUri.TrimEnd('/');
        _authorization = authorization;
        _time = time;
    }

    /// <summary>How long a request other than a watch may take, answer included.</summary>
    internal TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>How long a watch stream may stay silent before we give up on the connection (the server ends it sooner).</summary>
    internal TimeSpan WatchIdleTimeout { get; init; } = TimeSpan.FromSeconds(WatchTimeoutSeconds + 30);

    public Task<KubeList<T>> ListAsync<T>(string? ns, string? labelSelector, CancellationToken cancellationToken)
        where T : IKubeObject =>
        SendAsync(HttpMethod.Get, KubeResource.For<T>().Path(ns) + Query(labelSelector), null, ReadAsync<KubeList<T>>, null, cancellationToken);

    public async IAsyncEnumerable<WatchEvent<T>> WatchAsync<T>(
        string? ns, string? labelSelector, string resourceVersion, [EnumeratorCancellation] CancellationToken cancellationToken)
        where T : IKubeObject
    {
        var path = KubeResource.For<T>().Path(ns)
            + $"?watch=1&resourceVersion={Uri.EscapeDataString(resourceVersion)}&allowWatchBookmarks=true&timeoutSeconds={WatchTimeoutSeconds}"
            + (string.IsNullOrEmpty(labelSelector) ? "" : $"&labelSelector={Uri.EscapeDataString(labelSelector)}");
        using var idle = new CancellationTokenSource(WatchIdleTimeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, idle.Token);
        using var request = NewRequest(HttpMethod.Get, path, null);
        HttpResponseMessage response;
        try
        {
            response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, linked.Token);
        }
        catch (OperationCanceledException ex) when (idle.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException($"GET {path} got no answer within {WatchIdleTimeout.TotalSeconds:0} s.", ex);
        }

        using (response)
        {
            if (response.StatusCode == HttpStatusCode.Gone)
            {
                var gone = await ReadStatusAsync(response, linked.Token) ?? new KubeStatus { Status = "Failure", Reason = "Expired" };
                gone.Code = 410;
                yield return new WatchEvent<T>(WatchEventTypes.Error, default, gone);
                yield break;
            }

            if (!response.IsSuccessStatusCode)
            {
                throw await ErrorAsync(HttpMethod.Get, path, response, linked.Token);
            }

            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(linked.Token), Encoding.UTF8);
            while (true)
            {
                string? line;
                try
                {
                    line = await reader.ReadLineAsync(linked.Token);
                }
                catch (OperationCanceledException ex) when (idle.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
                {
                    throw new TimeoutException($"The watch GET {path} was silent for {WatchIdleTimeout.TotalSeconds:0} s.", ex);
                }

                if (line is null)
                {
                    yield break;
                }

                idle.CancelAfter(WatchIdleTimeout);
                if (line.Length > 0)
                {
                    yield return ParseWatchLine<T>(line);
                }
            }
        }
    }

    public Task<T?> GetAsync<T>(string ns, string name, CancellationToken cancellationToken)
        where T : class, IKubeObject =>
        SendAsync<T?>(HttpMethod.Get, KubeResource.For<T>().Path(ns, name), null, async (c, ct) => await ReadAsync<T>(c, ct), () => null, cancellationToken);

    public Task<T> CreateAsync<T>(T value, CancellationToken cancellationToken)
        where T : IKubeObject =>
        SendAsync(HttpMethod.Post, KubeResource.For<T>().Path(NamespaceOf(value)), Body(value), ReadAsync<T>, null, cancellationToken);

    public Task<T> ReplaceAsync<T>(T value, CancellationToken cancellationToken)
        where T : IKubeObject =>
        SendAsync(
            HttpMethod.Put,
            KubeResource.For<T>().Path(NamespaceOf(value), value.Metadata.Name ?? throw new ArgumentException("The object has no metadata.name.", nameof(value))),
            Body(value),
            ReadAsync<T>,
            null,
            cancellationToken);

    /// <remarks>
    /// <paramref name="patch"/> is a JSON string, a JsonNode/JsonElement, a Kubernetes object, or any other object (anonymous
    /// types and dictionaries included) written with its null members kept, since null deletes a key in a merge patch.
    /// </remarks>
    public Task<T> MergePatchAsync<T>(string ns, string name, object patch, CancellationToken cancellationToken)
        where T : IKubeObject
    {
        var bytes = patch switch
        {
            string text => Encoding.UTF8.GetBytes(text),
            IKubeObject kube => JsonSerializer.SerializeToUtf8Bytes(kube, TypeInfo(kube.GetType())),
            _ => JsonSerializer.SerializeToUtf8Bytes(patch, patch.GetType(), PatchOptions),
        };
        var content = new ByteArrayContent(bytes);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/merge-patch+json");
        return SendAsync(new HttpMethod("PATCH"), KubeResource.For<T>().Path(ns, name), content, ReadAsync<T>, null, cancellationToken);
    }

    public Task<bool> DeleteAsync<T>(string ns, string name, CancellationToken cancellationToken)
        where T : IKubeObject =>
        SendAsync(HttpMethod.Delete, KubeResource.For<T>().Path(ns, name), null, static (_, _) => Task.FromResult(true), () => false, cancellationToken);

    public void Dispose() => _http.Dispose();

    private async Task<TResult> SendAsync<TResult>(
        HttpMethod method,
        string path,
        HttpContent? content,
        Func<HttpContent, CancellationToken, Task<TResult>> read,
        Func<TResult>? whenNotFound,
        CancellationToken cancellationToken)
    {
        using var timeout = new CancellationTokenSource(RequestTimeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
        try
        {
            using var request = NewRequest(method, path, content);
            using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, linked.Token);
            if (whenNotFound is not null && response.StatusCode == HttpStatusCode.NotFound)
            {
                return whenNotFound();
            }

            return response.IsSuccessStatusCode
                ? await read(response.Content, linked.Token)
                : throw await ErrorAsync(method, path, response, linked.Token);
        }
        catch (OperationCanceledException ex) when (timeout.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException($"{method} {path} got no answer within {RequestTimeout.TotalSeconds:0.#} s.", ex);
        }
    }

    private HttpRequestMessage NewRequest(HttpMethod method, string path, HttpContent? content)
    {
        var request = new HttpRequestMessage(method, new Uri(_server + path)) { Content = content };
        request.Headers.Accept.ParseAdd(Json);
        request.Headers.Authorization = _authorization();
        return request;
    }

    private static async Task<T> ReadAsync<T>(HttpContent content, CancellationToken cancellationToken)
    {
        await using var stream = await content.ReadAsStreamAsync(cancellationToken);
        return await JsonSerializer.DeserializeAsync(stream, TypeInfo<T>(), cancellationToken)
            ?? throw new JsonException($"The apiserver answered null where a {typeof(T).Name} was expected.");
    }

    private static async Task<KubeApiException> ErrorAsync(HttpMethod method, string path, HttpResponseMessage response, CancellationToken cancellationToken)
    {
        var code = (int)response.StatusCode;
        var status = await ReadStatusAsync(response, cancellationToken);
        return new KubeApiException(code, status?.Reason ?? response.ReasonPhrase, $"{method} {path} failed with {code}: {status?.Message ?? response.ReasonPhrase}");
    }

    private static async Task<KubeStatus?> ReadStatusAsync(HttpResponseMessage response, CancellationToken cancellationToken)
    {
        try
        {
            return JsonSerializer.Deserialize(await response.Content.ReadAsStringAsync(cancellationToken), KubeJsonContext.Default.KubeStatus);
        }
        catch (JsonException)
        {
            return null;
        }
    }

    private static WatchEvent<T> ParseWatchLine<T>(string line)
        where T : IKubeObject
    {
        var raw = JsonSerializer.Deserialize(line, KubeJsonContext.Default.WatchLine);
        if (raw?.Type is null)
        {
            throw new JsonException("A watch line has no type.");
        }

        return raw.Type == WatchEventTypes.Error
            ? new WatchEvent<T>(raw.Type, default, raw.Object.Deserialize(KubeJsonContext.Default.KubeStatus))
            : new WatchEvent<T>(raw.Type, raw.Object.Deserialize(TypeInfo<T>()), null);
    }

    private static ByteArrayContent Body<T>(T value)
        where T : IKubeObject
    {
        var content = new ByteArrayContent(JsonSerializer.SerializeToUtf8Bytes(value, TypeInfo<T>()));
        content.Headers.ContentType = new MediaTypeHeaderValue(Json);
        return content;
    }

    private static string NamespaceOf(IKubeObject value) =>
        value.Metadata.Namespace ?? throw new ArgumentException("The object has no metadata.namespace.", nameof(value));

    private static string Query(string? labelSelector) =>
        string.IsNullOrEmpty(labelSelector) ? "" : $"?labelSelector={Uri.EscapeDataString(labelSelector)}";

    private static JsonTypeInfo<T> TypeInfo<T>() => (JsonTypeInfo<T>)TypeInfo(typeof(T));

    private static JsonTypeInfo TypeInfo(Type type) =>
        KubeJsonContext.Default.GetTypeInfo(type) ?? throw new NotSupportedException($"{type.Name} is not a type the Kubernetes client serialises.");
}

/// <summary>The type strings of watch events.</summary>
public static class WatchEventTypes
{
    public const string Added = "ADDED";
    public const string Modified = "MODIFIED";
    public const string Deleted = "DELETED";
    public const string Bookmark = "BOOKMARK";
    public const string Error = "ERROR";
}

/// <summary>One line of a watch stream before its object is typed.</summary>
internal sealed class WatchLine
{
    public string? Type { get; set; }

    public JsonElement Object { get; set; }
}

[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(Service))]
[JsonSerializable(typeof(NetworkPolicy))]
[JsonSerializable(typeof(KubeEvent))]
[JsonSerializable(typeof(KubeList<Service>))]
[JsonSerializable(typeof(KubeList<NetworkPolicy>))]
[JsonSerializable(typeof(KubeList<KubeEvent>))]
[JsonSerializable(typeof(KubeStatus))]
[JsonSerializable(typeof(WatchLine))]
internal sealed partial class KubeJsonContext : JsonSerializerContext;
