using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using k8s;
using k8s.Models;
using Microsoft.Extensions.Logging;
using Polly;

using Wormhole.Tunnel.Resilience;

namespace Wormhole.Tunnel.Kubernetes;

/// <summary>An error answer of the apiserver, with its Status (code, reason, message).</summary>
public sealed class KubeApiException(int code, string? reason, string message, string request = "request", TimeSpan? retryAfter = null) : Exception(message)
{
    public int Code { get; } = code;

    public string? Reason { get; } = reason;

    /// <summary>"GET /api/v1/services" — what was refused (no query, so no selector or token ends up in logs).</summary>
    public string Request { get; } = request;

    /// <summary>The Retry-After of a 429 (or 503), when the server sent one.</summary>
    public TimeSpan? RetryAfter { get; } = retryAfter;
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

/// <summary>One event of a watch stream: ADDED, MODIFIED, DELETED, BOOKMARK or ERROR (with the Status).</summary>
public sealed record WatchEvent<T>(string Type, T? Item, V1Status? Status)
    where T : class, IKubernetesObject<V1ObjectMeta>;

/// <summary>All items of a (paged) LIST and the list's resourceVersion.</summary>
public sealed record KubeList<T>(IReadOnlyList<T> Items, string? ResourceVersion);

/// <summary>The API path pieces of a resource kind we speak.</summary>
public sealed record KubeResource(string Group, string Version, string Plural, string Kind)
{
    public static readonly KubeResource Services = new("", "v1", "services", "Service");
    public static readonly KubeResource Events = new("", "v1", "events", "Event");
    public static readonly KubeResource NetworkPolicies = new("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy");

    public string ApiVersion => Group.Length == 0 ? Version : $"{Group}/{Version}";

    public static KubeResource For<T>() =>
        typeof(T) == typeof(V1Service) ? Services
        : typeof(T) == typeof(V1NetworkPolicy) ? NetworkPolicies
        : typeof(T) == typeof(Corev1Event) ? Events
        : throw new NotSupportedException($"{typeof(T).Name} is not a resource we speak.");

    /// <summary>api/v1/namespaces/{ns}/services, apis/networking.k8s.io/v1/networkpolicies (all namespaces when ns is null); relative to the server.</summary>
    public string Path(string? ns, string? name = null)
    {
        var root = Group.Length == 0 ? $"api/{Version}" : $"apis/{Group}/{Version}";
        var path = ns is null ? $"{root}/{Plural}" : $"{root}/namespaces/{Uri.EscapeDataString(ns)}/{Plural}";
        return name is null ? path : $"{path}/{Uri.EscapeDataString(name)}";
    }
}

/// <summary>
/// Services, NetworkPolicies and Events over a <see cref="KubeTransport"/> (TLS and credentials from the kubeconfig), with
/// what the loops need around them: LIST paged (limit + continue), watches read line by line (the AOT flavour has no
/// watcher), error answers as <see cref="KubeApiException"/>, a timeout per request on the injected clock, and
/// <see cref="KubeRetry"/> (429, 401). Bodies are read and written with <see cref="KubeJson"/>, not through the library's
/// typed operations, whose serializer would compile every kind of the API into the NativeAOT executable.
/// </summary>
public sealed class KubeApi : IDisposable
{
    /// <summary>Asked of the apiserver for every watch; it ends the stream after this long and we resume.</summary>
    internal const int WatchTimeoutSeconds = 290;

    private readonly KubeTransport _transport;
    private readonly TimeProvider _time;
    private readonly ResiliencePipeline _retry;
    private readonly bool _ownsTransport;

    public KubeApi(KubeConnection connection, TimeProvider time, ILogger logger)
        : this(connection.Transport, time, logger, connection.CanReloadCredentials ? connection.ReloadCredentials : null)
    {
        _ownsTransport = true;
    }

    /// <param name="reloadCredentials">Drops cached credentials after a 401; null when they cannot be reloaded.</param>
    public KubeApi(KubeTransport transport, TimeProvider time, ILogger logger, Func<bool>? reloadCredentials = null)
    {
        _transport = transport;
        _time = time;
        _retry = KubeRetry.Create(time, logger, reloadCredentials, notice => OnRetry?.Invoke(notice));
    }

    /// <summary>Told of every retried request and every list/watch reconnect on this API (metrics count them).</summary>
    public Action<RetryNotice>? OnRetry { get; init; }

    /// <summary>How long a request other than a watch may take, answer included.</summary>
    internal TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>How long a watch stream may stay silent before we give up on the connection (the server ends it sooner).</summary>
    internal TimeSpan WatchIdleTimeout { get; init; } = TimeSpan.FromSeconds(WatchTimeoutSeconds + 30);

    /// <summary>Items per LIST page.</summary>
    public int PageSize { get; init; } = 500;

    /// <param name="ns">Namespace, or null for all namespaces.</param>
    public async Task<KubeList<T>> ListAsync<T>(string? ns, string? labelSelector, CancellationToken cancellationToken)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        var path = KubeResource.For<T>().Path(ns);
        var items = new List<T>();
        string? resourceVersion = null;
        string? next = null;
        do
        {
            var token = next;
            var page = await SendAsync("GET", path, ct => ListPageAsync<T>(path, labelSelector, token, ct), cancellationToken);
            items.AddRange(page.Items);
            resourceVersion ??= page.ResourceVersion; // every page of one list is at the first page's version
            next = page.Continue;
        }
        while (!string.IsNullOrEmpty(next));

        return new KubeList<T>(items, resourceVersion);
    }

    /// <summary>Streams watch events from <paramref name="resourceVersion"/> (with bookmarks) until the server ends the stream or the token is cancelled.</summary>
    public async IAsyncEnumerable<WatchEvent<T>> WatchAsync<T>(
        string? ns, string? labelSelector, string resourceVersion, [EnumeratorCancellation] CancellationToken cancellationToken)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        var path = KubeResource.For<T>().Path(ns);
        var query = $"?watch=1&resourceVersion={Uri.EscapeDataString(resourceVersion)}&allowWatchBookmarks=true&timeoutSeconds={WatchTimeoutSeconds}"
            + (string.IsNullOrEmpty(labelSelector) ? "" : $"&labelSelector={Uri.EscapeDataString(labelSelector)}");
        using var idle = new CancellationTokenSource(WatchIdleTimeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, idle.Token);
        HttpResponseMessage response;
        try
        {
            response = await _retry.ExecuteAsync(async ct => await OpenWatchAsync(path, query, ct), linked.Token);
        }
        catch (OperationCanceledException ex) when (idle.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException($"GET /{path} (watch) got no answer within {WatchIdleTimeout.TotalSeconds:0} s.", ex);
        }

        using (response)
        {
            if (response.StatusCode == HttpStatusCode.Gone)
            {
                var gone = Status(await response.Content.ReadAsStringAsync(linked.Token)) ?? new V1Status { Status = "Failure", Reason = "Expired" };
                gone.Code = 410;
                yield return new WatchEvent<T>(WatchEventTypes.Error, null, gone);
                yield break;
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
                    throw new TimeoutException($"The watch GET /{path} was silent for {WatchIdleTimeout.TotalSeconds:0} s.", ex);
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

    /// <summary>The object, or null when it does not exist (404).</summary>
    public Task<T?> GetAsync<T>(string ns, string name, CancellationToken cancellationToken)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        var path = KubeResource.For<T>().Path(ns, name);
        return SendAsync("GET", path, async ct =>
        {
            using var response = await RequestAsync(HttpMethod.Get, path, "", null, notFound: true, ct);
            return response is null ? null : await ReadAsync<T>(response, ct);
        }, cancellationToken);
    }

    public Task<T> CreateAsync<T>(T value, CancellationToken cancellationToken)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        var ns = value.Metadata?.NamespaceProperty ?? throw new ArgumentException("The object has no metadata.namespace.", nameof(value));
        var path = KubeResource.For<T>().Path(ns);
        var body = JsonSerializer.Serialize(value, KubeJson.TypeInfo<T>());
        return SendAsync("POST", path, async ct =>
        {
            using var response = await RequestAsync(HttpMethod.Post, path, "", Json(body, "application/json"), notFound: false, ct);
            return await ReadAsync<T>(response!, ct);
        }, cancellationToken);
    }

    /// <summary>JSON merge patch (application/merge-patch+json); null members of <paramref name="patch"/> delete keys.</summary>
    public Task<T> MergePatchAsync<T>(string ns, string name, JsonNode patch, CancellationToken cancellationToken)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        var path = KubeResource.For<T>().Path(ns, name);
        var body = patch.ToJsonString();
        return SendAsync("PATCH", path, async ct =>
        {
            using var response = await RequestAsync(HttpMethod.Patch, path, "", Json(body, "application/merge-patch+json"), notFound: false, ct);
            return await ReadAsync<T>(response!, ct);
        }, cancellationToken);
    }

    /// <summary>
    /// Server-side apply (<c>application/apply-patch+yaml</c>) of <paramref name="value"/> as <paramref name="fieldManager"/>:
    /// creates the object or merges it into the live one; the manager owns exactly the fields <paramref name="value"/> names,
    /// and the fields it named last time and names no more are removed (unless another manager owns them). With
    /// <paramref name="force"/>, fields other managers own are taken over instead of answering 409. A
    /// <c>metadata.uid</c> in <paramref name="value"/> is a precondition (409 when the live object is another one).
    /// </summary>
    public Task<T> ApplyAsync<T>(T value, string fieldManager, bool force, CancellationToken cancellationToken)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        var ns = value.Metadata?.NamespaceProperty ?? throw new ArgumentException("The object has no metadata.namespace.", nameof(value));
        var name = value.Metadata.Name ?? throw new ArgumentException("The object has no metadata.name.", nameof(value));
        if (typeof(T) != typeof(V1Service) && typeof(T) != typeof(V1NetworkPolicy))
        {
            throw new NotSupportedException($"{typeof(T).Name} is not applied here.");
        }

        var path = KubeResource.For<T>().Path(ns, name);
        var body = JsonSerializer.Serialize(value, KubeJson.TypeInfo<T>());
        var query = $"?fieldManager={Uri.EscapeDataString(fieldManager)}&force={(force ? "true" : "false")}";
        return SendAsync("PATCH", path, async ct =>
        {
            using var response = await RequestAsync(HttpMethod.Patch, path, query, Json(body, "application/apply-patch+yaml"), notFound: false, ct);
            return await ReadAsync<T>(response!, ct);
        }, cancellationToken);
    }

    /// <summary>JSON patch (application/json-patch+json, RFC 6902) written as <paramref name="fieldManager"/>.</summary>
    public Task<T> JsonPatchAsync<T>(string ns, string name, JsonArray operations, string fieldManager, CancellationToken cancellationToken)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        if (typeof(T) != typeof(V1Service) && typeof(T) != typeof(V1NetworkPolicy))
        {
            throw new NotSupportedException($"{typeof(T).Name} is not patched here.");
        }

        var path = KubeResource.For<T>().Path(ns, name);
        var body = operations.ToJsonString();
        var query = $"?fieldManager={Uri.EscapeDataString(fieldManager)}";
        return SendAsync("PATCH", path, async ct =>
        {
            using var response = await RequestAsync(HttpMethod.Patch, path, query, Json(body, "application/json-patch+json"), notFound: false, ct);
            return await ReadAsync<T>(response!, ct);
        }, cancellationToken);
    }

    /// <summary>Deletes; false when it did not exist. Any 2xx is success, whether the answer is the object or a Status.</summary>
    public Task<bool> DeleteAsync<T>(string ns, string name, CancellationToken cancellationToken)
        where T : class, IKubernetesObject<V1ObjectMeta> =>
        DeleteAsync<T>(ns, name, uid: null, cancellationToken);

    /// <summary>
    /// Deletes the object named <paramref name="name"/> if it is still the one with <paramref name="uid"/> (a precondition:
    /// an object made again under the name answers 409 and stays); false when it did not exist. Any 2xx is success,
    /// whether the answer is the object or a Status.
    /// </summary>
    public Task<bool> DeleteAsync<T>(string ns, string name, string? uid, CancellationToken cancellationToken)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        var path = KubeResource.For<T>().Path(ns, name);
        var body = uid is null ? null : Json(KubeJson.Serialize(new V1DeleteOptions { Preconditions = new V1Preconditions { Uid = uid } }), "application/json");
        return SendAsync("DELETE", path, async ct =>
        {
            using var response = await RequestAsync(HttpMethod.Delete, path, "", body, notFound: true, ct);
            return response is not null;
        }, cancellationToken);
    }

    public void Dispose()
    {
        if (_ownsTransport)
        {
            _transport.Dispose();
        }
    }

    private async Task<(IList<T> Items, string? ResourceVersion, string? Continue)> ListPageAsync<T>(string path, string? selector, string? next, CancellationToken ct)
    {
        var query = new StringBuilder();
        if (PageSize > 0)
        {
            query.Append(CultureInfo.InvariantCulture, $"&limit={PageSize}");
        }

        if (!string.IsNullOrEmpty(next))
        {
            query.Append("&continue=").Append(Uri.EscapeDataString(next));
        }

        if (!string.IsNullOrEmpty(selector))
        {
            query.Append("&labelSelector=").Append(Uri.EscapeDataString(selector));
        }

        if (query.Length > 0)
        {
            query[0] = '?';
        }

        using var response = await RequestAsync(HttpMethod.Get, path, query.ToString(), null, notFound: false, ct);
        await using var body = await response!.Content.ReadAsStreamAsync(ct);
        if (typeof(T) == typeof(V1Service))
        {
            var services = await KubeJson.DeserializeAsync<V1ServiceList>(body, ct) ?? throw new JsonException("The answer is not a list.");
            return ((IList<T>)(object)(services.Items ?? []), services.Metadata?.ResourceVersion, services.Metadata?.ContinueProperty);
        }

        if (typeof(T) == typeof(V1NetworkPolicy))
        {
            var policies = await KubeJson.DeserializeAsync<V1NetworkPolicyList>(body, ct) ?? throw new JsonException("The answer is not a list.");
            return ((IList<T>)(object)(policies.Items ?? []), policies.Metadata?.ResourceVersion, policies.Metadata?.ContinueProperty);
        }

        var events = await KubeJson.DeserializeAsync<Corev1EventList>(body, ct) ?? throw new JsonException("The answer is not a list.");
        return ((IList<T>)(object)(events.Items ?? []), events.Metadata?.ResourceVersion, events.Metadata?.ContinueProperty);
    }

    /// <summary>A JSON body of the given media type; made anew for every attempt (a sent request's content is disposed).</summary>
    private static Func<HttpContent> Json(string body, string mediaType) => () =>
    {
        var content = new StringContent(body, Encoding.UTF8);
        content.Headers.ContentType = new MediaTypeHeaderValue(mediaType) { CharSet = "utf-8" };
        return content;
    };

    private static async Task<T> ReadAsync<T>(HttpResponseMessage response, CancellationToken ct)
    {
        await using var body = await response.Content.ReadAsStreamAsync(ct);
        return await KubeJson.DeserializeAsync<T>(body, ct) ?? throw new JsonException($"The answer is not a {typeof(T).Name}.");
    }

    /// <summary>
    /// One request through the transport (TLS, impersonation, credentials), HTTP/2 where the server offers it. An error answer throws <see cref="KubeApiException"/>;
    /// with <paramref name="notFound"/> a 404 is null instead.
    /// </summary>
    private async Task<HttpResponseMessage?> RequestAsync(HttpMethod method, string path, string query, Func<HttpContent>? body, bool notFound, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(method, new Uri(_transport.BaseUri, path + query)) { Version = _transport.HttpVersion, Content = body?.Invoke() };
        request.Headers.Accept.ParseAdd("application/json");
        await _transport.AuthorizeAsync(request, cancellationToken);
        var response = await _transport.HttpClient.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
        if (response.IsSuccessStatusCode)
        {
            return response;
        }

        using (response)
        {
            if (notFound && response.StatusCode == HttpStatusCode.NotFound)
            {
                return null;
            }

            var text = await response.Content.ReadAsStringAsync(cancellationToken);
            throw Error(method.Method, path, (int)response.StatusCode, response.ReasonPhrase, text, RetryAfter(response.Headers.RetryAfter?.Delta, response.Headers.RetryAfter?.Date));
        }
    }

    /// <summary>One watch GET through the transport (TLS, impersonation, credentials); error answers throw.</summary>
    private async Task<HttpResponseMessage> OpenWatchAsync(string path, string query, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(_transport.BaseUri, path + query));
        request.Headers.Accept.ParseAdd("application/json");
        await _transport.AuthorizeAsync(request, cancellationToken);
        var response = await _transport.HttpClient.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
        if (response.IsSuccessStatusCode || response.StatusCode == HttpStatusCode.Gone)
        {
            return response;
        }

        using (response)
        {
            var body = await response.Content.ReadAsStringAsync(cancellationToken);
            throw Error("GET", path, (int)response.StatusCode, response.ReasonPhrase, body, RetryAfter(response.Headers.RetryAfter?.Delta, response.Headers.RetryAfter?.Date));
        }
    }

    /// <summary>Runs one request under the retry pipeline, each attempt with its own timeout; maps the library's errors.</summary>
    private async Task<TResult> SendAsync<TResult>(string method, string path, Func<CancellationToken, Task<TResult>> send, CancellationToken cancellationToken) =>
        await _retry.ExecuteAsync(
            async ct =>
            {
                using var timeout = new CancellationTokenSource(RequestTimeout, _time);
                using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, timeout.Token);
                try
                {
                    return await send(linked.Token);
                }
                catch (OperationCanceledException ex) when (timeout.IsCancellationRequested && !ct.IsCancellationRequested)
                {
                    throw new TimeoutException($"{method} /{path} got no answer within {RequestTimeout.TotalSeconds:0.#} s.", ex);
                }
            },
            cancellationToken);

    private KubeApiException Error(string method, string path, int code, string? phrase, string? body, TimeSpan? retryAfter)
    {
        var status = Status(body);
        var request = $"{method} /{path}";
        return new KubeApiException(code, status?.Reason ?? phrase, $"{request} failed with {code}: {status?.Message ?? phrase}", request, retryAfter);
    }

    private TimeSpan? RetryAfter(TimeSpan? delta, DateTimeOffset? date) =>
        delta ?? (date is { } at ? at - _time.GetUtcNow() : null);

    private static V1Status? Status(string? body)
    {
        if (string.IsNullOrWhiteSpace(body))
        {
            return null;
        }

        try
        {
            return KubeJson.Deserialize<V1Status>(body);
        }
        catch (JsonException)
        {
            return null;
        }
    }

    private static WatchEvent<T> ParseWatchLine<T>(string line)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        using var document = JsonDocument.Parse(line);
        var root = document.RootElement;
        var type = root.TryGetProperty("type", out var t) ? t.GetString() : null;
        if (type is null || !root.TryGetProperty("object", out var obj))
        {
            throw new JsonException("A watch line has no type or object.");
        }

        return type == WatchEventTypes.Error
            ? new WatchEvent<T>(type, null, KubeJson.Deserialize<V1Status>(obj))
            : new WatchEvent<T>(type, KubeJson.Deserialize<T>(obj), null);
    }
}
