using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Wormhole.Tunnel.KubeEmulator;

public sealed record KubeEmulatorOptions
{
    /// <summary>Where to listen; with <see cref="Port"/> 0 a free port is picked.</summary>
    public IPAddress Address { get; init; } = IPAddress.Loopback;

    public int Port { get; init; }

    /// <summary>Serve HTTPS with a generated CA (the kubeconfig trusts it). kubectl sends tokens only over TLS, so keep it on for kubectl.</summary>
    public bool Tls { get; init; } = true;

    /// <summary>The bearer token every request must carry (401 otherwise). Random unless given.</summary>
    public string Token { get; init; } = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));

    /// <summary>Creates the bound listening socket (e.g. one made inside a network namespace); Kestrel's default when null.</summary>
    public Func<EndPoint, Socket>? CreateListenSocket { get; init; }

    /// <summary>How often a watch with <c>allowWatchBookmarks=true</c> gets a BOOKMARK (the apiserver: about a minute).</summary>
    public TimeSpan BookmarkInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Clock for creationTimestamp and ages.</summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    /// <summary>Start like a fresh cluster: namespaces <c>default</c> and <c>kube-system</c>, Service <c>default/kubernetes</c>.</summary>
    public bool SeedDefaultObjects { get; init; } = true;

    /// <summary>
    /// With TLS: the serving certificate names only these DNS names (no IP address), so a client dialling an address
    /// must be told the name to check (a kubeconfig's <c>tls-server-name</c>). Null: localhost, the kubernetes.default names and every local address.
    /// </summary>
    public IReadOnlyList<string>? CertificateDnsNames { get; init; }
}

/// <summary>One request as the emulator received it: method, path with query, the client's User-Agent, and when it arrived.</summary>
public sealed record ReceivedRequest(string Method, string Target, string UserAgent, DateTimeOffset At)
{
    public override string ToString() => $"{Method} {Target}";
}

/// <summary>The impersonation headers of one request, as the apiserver reads them.</summary>
public sealed record Impersonation(string Request, string? User, IReadOnlyList<string> Groups);

/// <summary>
/// An in-memory kube-apiserver subset over real HTTP: namespaces, services, events (core/v1) and networkpolicies
/// (networking.k8s.io/v1) with the apiserver's paths, defaulting, validation, optimistic concurrency, list/watch and
/// discovery, strict enough that kubectl and our own client behave as against a cluster.
/// </summary>
public sealed class KubeEmulator : IAsyncDisposable
{
    /// <summary>Where the request log is served (see <see cref="ReceivedRequests"/>).</summary>
    public const string RequestLogPath = "/emulator/requests";

    private readonly WebApplication _app;
    private readonly ObjectStore _store;
    private readonly KubeEmulatorOptions _options;
    private readonly ConcurrentQueue<ReceivedRequest> _requests = new();
    private readonly ConcurrentQueue<Impersonation> _impersonations = new();
    private readonly X509Certificate2? _authority;
    private volatile string _token;
    private int _throttled;
    private int _retryAfterSeconds;

    private KubeEmulator(WebApplication app, KubeEmulatorOptions options, X509Certificate2? authority)
    {
        _app = app;
        _authority = authority;
        _options = options;
        _token = options.Token;
        _store = new ObjectStore(options.TimeProvider);
        if (options.SeedDefaultObjects)
        {
            Apply("""{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"default"}}""");
            Apply("""{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"kube-system"}}""");
            Apply("""
                {"apiVersion":"v1","kind":"Service","metadata":{"name":"kubernetes","namespace":"default","labels":{"component":"apiserver","provider":"kubernetes"}},
                 "spec":{"clusterIP":"10.96.0.1","ports":[{"name":"https","port":443,"protocol":"TCP","targetPort":6443}]}}
                """);
        }
    }

    /// <summary>The base URL, e.g. <c>http://127.0.0.1:41234</c>.</summary>
    public string Url { get; private set; } = "";

    /// <summary>The bearer token accepted now (see <see cref="RotateToken"/>).</summary>
    public string Token => _token;

    /// <summary>Requests that carried Impersonate-User or Impersonate-Group, oldest first.</summary>
    public IReadOnlyList<Impersonation> Impersonations => _impersonations.ToArray();

    /// <summary>From now on only <paramref name="token"/> is accepted; the previous one gets 401 (a rotated or expired credential).</summary>
    public void RotateToken(string token) => _token = token;

    /// <summary>
    /// The next <paramref name="count"/> API requests (health and discovery excepted) get 429 TooManyRequests with
    /// <c>Retry-After: <paramref name="retryAfterSeconds"/></c>, as the apiserver's priority and fairness answers.
    /// </summary>
    public void ThrottleNext(int count, int retryAfterSeconds)
    {
        Volatile.Write(ref _retryAfterSeconds, retryAfterSeconds);
        Volatile.Write(ref _throttled, count);
    }

    /// <summary>The PEM of the CA that signed the serving certificate; null without TLS.</summary>
    public string? CertificateAuthorityPem => _authority?.ExportCertificatePem();

    /// <summary>The resourceVersion of the latest change.</summary>
    public long ResourceVersion => _store.ResourceVersion;

    /// <summary>How many watch streams are open.</summary>
    public int WatchCount => _store.WatchCount;

    /// <summary>Every request so far as <c>METHOD /path?query</c>, oldest first.</summary>
    public IReadOnlyList<string> Requests => _requests.Select(r => r.ToString()).ToArray();

    /// <summary>
    /// Every request so far with its User-Agent, oldest first. Also served (to a client with the token) as JSON at
    /// <c>GET /emulator/requests[?from=N]</c> — a path no apiserver has — for tests that drive a separate emulator process.
    /// </summary>
    public IReadOnlyList<ReceivedRequest> ReceivedRequests => _requests.ToArray();

    public static async Task<KubeEmulator> StartAsync(KubeEmulatorOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new KubeEmulatorOptions();
        var (authority, serving) = options.Tls ? Certificates.Create(options.Address, options.CertificateDnsNames) : (null, null);
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(kestrel => kestrel.Listen(options.Address, options.Port, listen =>
        {
            if (serving is not null)
            {
                listen.UseHttps(serving);
            }
        }));
        if (options.CreateListenSocket is { } create)
        {
            builder.WebHost.UseSockets(sockets => sockets.CreateBoundListenSocket = create);
        }

        builder.Services.Configure<HostOptions>(host => host.ShutdownTimeout = TimeSpan.FromSeconds(2));
        var app = builder.Build();
        var emulator = new KubeEmulator(app, options, authority);
        app.Run(emulator.HandleAsync);
        await app.StartAsync(cancellationToken);
        var bound = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());
        var host = options.Address.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{options.Address}]" : options.Address.ToString();
        emulator.Url = $"{(options.Tls ? "https" : "http")}://{host}:{bound.Port}";
        return emulator;
    }

    /// <summary>Writes a kubeconfig whose cluster, user and (current) context are all named <c>emulator</c>; returns the path.</summary>
    public string WriteKubeconfig(string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        File.WriteAllText(path, $"""
            apiVersion: v1
            kind: Config
            clusters:
            - name: emulator
              cluster:
                server: {Url}{(_authority is null ? "" : $"\n    certificate-authority-data: {Convert.ToBase64String(Encoding.ASCII.GetBytes(CertificateAuthorityPem!))}")}
            users:
            - name: emulator
              user:
                token: {JsonSerializer.Serialize(Token)}
            contexts:
            - name: emulator
              context:
                cluster: emulator
                user: emulator
                namespace: default
            current-context: emulator
            preferences: {"{}"}

            """);
        return path;
    }

    /// <summary>An <see cref="HttpClient"/> on <see cref="Url"/> that trusts the emulator's CA and, unless told otherwise, sends the token.</summary>
    public HttpClient CreateHttpClient(bool authenticated = true)
    {
        var handler = new HttpClientHandler();
        if (_authority is not null)
        {
            handler.ServerCertificateCustomValidationCallback = (_, certificate, _, errors) =>
                (errors & ~SslPolicyErrors.RemoteCertificateChainErrors) == SslPolicyErrors.None && Certificates.Trusts(_authority, certificate);
        }

        var client = new HttpClient(handler) { BaseAddress = new Uri(Url) };
        if (authenticated)
        {
            client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", Token);
        }

        return client;
    }

    /// <summary>Creates or replaces an object (kind from its <c>kind</c> field) through the same defaulting and validation as HTTP.</summary>
    /// <exception cref="KubeApiException">The object is invalid (422) or its namespace is missing (404).</exception>
    public JsonObject Apply(JsonObject obj) => Apply(obj, "kube-emulator");

    /// <summary>As <see cref="Apply(JsonObject)"/>, recorded in managedFields as an Update by <paramref name="fieldManager"/>.</summary>
    public JsonObject Apply(JsonObject obj, string fieldManager)
    {
        var kind = ResourceKind.Find(obj.Str("kind") ?? throw new ArgumentException("the object has no kind", nameof(obj)));
        var decoded = ObjectStore.Decode(kind, obj.DeepClone(), "Strict", []);
        var ns = kind.Namespaced ? decoded.Str("metadata.namespace") ?? "default" : null;
        var name = decoded.Str("metadata.name") ?? "";
        decoded.Meta().Remove("resourceVersion");
        return _store.Get(kind, ns, name) is null
            ? _store.Create(kind, ns, decoded, dryRun: false, fieldManager)
            : _store.Update(kind, ns, name, decoded, dryRun: false, fieldManager);
    }

    public JsonObject Apply(string json) => Apply(JsonNode.Parse(json) as JsonObject ?? throw new ArgumentException("not a JSON object", nameof(json)));

    /// <summary>Applies several JSON objects in order.</summary>
    public void Seed(params string[] objects)
    {
        foreach (var obj in objects)
        {
            Apply(obj);
        }
    }

    /// <param name="resource">Plural, singular, kind or short name: <c>services</c>, <c>svc</c>, <c>Service</c>.</param>
    public JsonObject? Get(string resource, string? ns, string name) => _store.Get(ResourceKind.Find(resource), ns, name);

    public IReadOnlyList<JsonObject> List(string resource, string? ns = null, string? labelSelector = null)
    {
        var selector = LabelSelector.Parse(labelSelector);
        return _store.List(ResourceKind.Find(resource), ns, selector.Matches).Items;
    }

    public bool Delete(string resource, string? ns, string name)
    {
        var kind = ResourceKind.Find(resource);
        if (_store.Get(kind, ns, name) is null)
        {
            return false;
        }

        _store.Delete(kind, ns, name, null, dryRun: false);
        return true;
    }

    /// <summary>Forgets history before <paramref name="resourceVersion"/>: watches from older versions get 410 Expired.</summary>
    public void CompactBefore(long resourceVersion) => _store.CompactBefore(resourceVersion);

    /// <summary>Ends every open watch stream (cleanly, as the apiserver does on timeout), so clients must reconnect.</summary>
    public void DropWatches() => _store.DropWatches();

    public async ValueTask DisposeAsync()
    {
        _store.DropWatches();
        await _app.StopAsync();
        await _app.DisposeAsync();
        _authority?.Dispose();
    }

    private async Task HandleAsync(HttpContext context)
    {
        var request = context.Request;
        _requests.Enqueue(new ReceivedRequest(request.Method, $"{request.Path}{request.QueryString}", request.Headers.UserAgent.ToString(), _options.TimeProvider.GetUtcNow()));
        try
        {
            var auth = request.Headers.Authorization.ToString();
            if (!CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(auth), Encoding.UTF8.GetBytes("Bearer " + Token)))
            {
                throw KubeApiException.Unauthorized();
            }

            var user = request.Headers["Impersonate-User"].ToString();
            var groups = request.Headers["Impersonate-Group"].Where(g => !string.IsNullOrEmpty(g)).Select(g => g!).ToArray();
            if (user.Length > 0 || groups.Length > 0)
            {
                if (user.Length == 0)
                {
                    throw new KubeApiException(500, "InternalError", $"Internal error occurred: requested [{string.Join(" ", groups.Select(g => $"{{Group  {g}  authentication.k8s.io/v1  }}"))}] without impersonating a user");
                }

                _impersonations.Enqueue(new Impersonation($"{request.Method} {request.Path}", user, groups));
            }

            var path = request.Path.Value is { Length: > 1 } p ? p.TrimEnd('/') : "/";
            if (path.StartsWith("/api", StringComparison.Ordinal) && Discovery.Find(path, new Uri(Url).Authority) is null && TryThrottle())
            {
                context.Response.Headers.RetryAfter = Volatile.Read(ref _retryAfterSeconds).ToString(CultureInfo.InvariantCulture);
                throw new KubeApiException(429, "TooManyRequests", "Too many requests, please try again later.", new JsonObject { ["retryAfterSeconds"] = Volatile.Read(ref _retryAfterSeconds) });
            }
            if (HttpMethods.IsGet(request.Method) && Discovery.Find(path, new Uri(Url).Authority) is { } document)
            {
                await WriteAsync(context, 200, document);
            }
            else if (path == RequestLogPath && HttpMethods.IsGet(request.Method))
            {
                var from = int.TryParse(request.Query["from"], NumberStyles.None, CultureInfo.InvariantCulture, out var f) ? f : 0;
                await WriteAsync(context, 200, new JsonArray(_requests.Skip(from).Select(r => (JsonNode)new JsonObject
                {
                    ["method"] = r.Method, ["target"] = r.Target, ["userAgent"] = r.UserAgent, ["at"] = r.At.ToString("O", CultureInfo.InvariantCulture),
                }).ToArray()));
            }
            else if (path is "/healthz" or "/readyz" or "/livez")
            {
                await context.Response.WriteAsync("ok", context.RequestAborted);
            }
            else if (Route(path) is not { } route)
            {
                context.Response.StatusCode = 404;
                await context.Response.WriteAsync("404 page not found\n", context.RequestAborted);
            }
            else
            {
                await HandleResourceAsync(context, route.Kind, route.Namespace, route.Name);
            }
        }
        catch (KubeApiException e) when (!context.Response.HasStarted)
        {
            await WriteAsync(context, e.Code, e.ToStatus());
        }
        catch (Exception e) when (e is JsonException or FormatException && !context.Response.HasStarted)
        {
            await WriteAsync(context, 400, KubeApiException.BadRequest(e.Message).ToStatus());
        }
        catch (Exception e) when (!context.Response.HasStarted && !context.RequestAborted.IsCancellationRequested)
        {
            await WriteAsync(context, 500, new KubeApiException($"emulator failure: {e.GetType().Name}: {e.Message}").ToStatus());
        }
    }

    private async Task HandleResourceAsync(HttpContext context, ResourceKind kind, string? ns, string? name)
    {
        var query = context.Request.Query;
        var dryRun = query["dryRun"].ToString() switch
        {
            "" => false,
            "All" => true,
            var other => throw KubeApiException.BadRequest($"Invalid dryRun value: \"{other}\": supported values: \"All\""),
        };
        var fieldValidation = query["fieldValidation"].FirstOrDefault();
        var warnings = new List<string>();
        switch (context.Request.Method, name)
        {
            case ("GET", null) when query["watch"].ToString() is "true" or "1":
                await WatchAsync(context, kind, ns, query);
                return;
            case ("GET", null):
                var selector = Filter(kind, query);
                var limit = int.TryParse(query["limit"], NumberStyles.None, CultureInfo.InvariantCulture, out var l) ? l : 0;
                var (items, rv, next, remaining) = _store.List(kind, ns, selector, limit, query["continue"]);
                if (Tables.Requested(context.Request.Headers.Accept))
                {
                    await WriteAsync(context, 200, Tables.Build(kind, items, rv, query["includeObject"], _options.TimeProvider.GetUtcNow()));
                    return;
                }

                var meta = new JsonObject { ["resourceVersion"] = rv.ToString(CultureInfo.InvariantCulture) };
                if (next is not null)
                {
                    meta["continue"] = next;
                    meta["remainingItemCount"] = remaining;
                }

                foreach (var item in items)
                {
                    item.Remove("kind");
                    item.Remove("apiVersion");
                }

                await WriteAsync(context, 200, new JsonObject
                {
                    ["kind"] = kind.Kind + "List", ["apiVersion"] = kind.ApiVersion, ["metadata"] = meta, ["items"] = new JsonArray(items.ToArray<JsonNode>()),
                });
                return;
            case ("POST", null) when ns is not null || !kind.Namespaced:
                var creator = ServerSideApply.UpdateManager("CreateOptions", query, context.Request.Headers.UserAgent.ToString());
                var created = _store.Create(kind, ns, ObjectStore.Decode(kind, await ReadJsonAsync(context), fieldValidation, warnings), dryRun, creator);
                await WriteAsync(context, 201, created, warnings);
                return;
            case ("GET", not null):
                var found = _store.Get(kind, ns, name) ?? throw KubeApiException.NotFound(kind, name);
                await WriteAsync(context, 200, Tables.Requested(context.Request.Headers.Accept)
                    ? Tables.Build(kind, [found], long.Parse(found.Str("metadata.resourceVersion")!, CultureInfo.InvariantCulture), query["includeObject"], _options.TimeProvider.GetUtcNow())
                    : found);
                return;
            case ("PUT", not null):
                var updater = ServerSideApply.UpdateManager("UpdateOptions", query, context.Request.Headers.UserAgent.ToString());
                var replacement = ObjectStore.Decode(kind, await ReadJsonAsync(context), fieldValidation, warnings);
                await WriteAsync(context, 200, _store.Update(kind, ns, name, replacement, dryRun, updater), warnings);
                return;
            case ("PATCH", not null) when ServerSideApply.IsApply(context.Request.ContentType):
                var (applied, wasCreated) = ServerSideApply.Handle(_store, kind, ns, name, await ReadBodyAsync(context), query, fieldValidation, dryRun, _options.TimeProvider.GetUtcNow());
                await WriteAsync(context, wasCreated ? 201 : 200, applied, warnings);
                return;
            case ("PATCH", not null):
                var patcher = ServerSideApply.UpdateManager("PatchOptions", query, context.Request.Headers.UserAgent.ToString());
                var body = await ReadBodyAsync(context);
                var patched = _store.Patch(kind, ns, name, current =>
                    ObjectStore.Decode(kind, Patches.Apply(context.Request.ContentType, current, body, kind), fieldValidation, warnings), dryRun, patcher);
                await WriteAsync(context, 200, patched, warnings);
                return;
            case ("DELETE", not null):
                var text = context.Request.ContentType?.StartsWith(Protobuf.ContentType, StringComparison.Ordinal) == true ? "" : await ReadBodyAsync(context);
                var options = text.Trim().Length == 0 ? null : JsonNode.Parse(text) as JsonObject;
                await WriteAsync(context, 200, _store.Delete(kind, ns, name, options, dryRun));
                return;
            default:
                throw KubeApiException.MethodNotAllowed();
        }
    }

    /// <summary>Streams newline-delimited watch events until timeoutSeconds, the client leaving, or <see cref="DropWatches"/>.</summary>
    private async Task WatchAsync(HttpContext context, ResourceKind kind, string? ns, IQueryCollection query)
    {
        var bookmarks = query["allowWatchBookmarks"] == "true";
        Func<JsonObject, JsonNode>? render = Tables.Requested(context.Request.Headers.Accept)
            ? obj => Tables.Build(kind, [obj], long.Parse(obj.Str("metadata.resourceVersion") ?? "0", CultureInfo.InvariantCulture), query["includeObject"], _options.TimeProvider.GetUtcNow())
            : null;
        var watcher = _store.Watch(kind, ns, Filter(kind, query), render, query["resourceVersion"], bookmarks && query["sendInitialEvents"] == "true");
        try
        {
            context.Response.StatusCode = 200;
            context.Response.ContentType = "application/json";
            await context.Response.StartAsync(context.RequestAborted);
            await context.Response.Body.FlushAsync(context.RequestAborted);
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, watcher.Dropped.Token);
            if (long.TryParse(query["timeoutSeconds"], NumberStyles.None, CultureInfo.InvariantCulture, out var timeout) && timeout > 0)
            {
                stop.CancelAfter(TimeSpan.FromSeconds(timeout));
            }

            var nextBookmark = DateTime.UtcNow + _options.BookmarkInterval;
            while (!stop.IsCancellationRequested)
            {
                using var wait = CancellationTokenSource.CreateLinkedTokenSource(stop.Token);
                if (bookmarks)
                {
                    wait.CancelAfter(TimeSpan.FromTicks(Math.Max(0, (nextBookmark - DateTime.UtcNow).Ticks)));
                }

                try
                {
                    if (!await watcher.Lines.Reader.WaitToReadAsync(wait.Token))
                    {
                        break;
                    }
                }
                catch (OperationCanceledException) when (!stop.IsCancellationRequested)
                {
                    nextBookmark = DateTime.UtcNow + _options.BookmarkInterval;
                    if (_store.BookmarkVersion(watcher) is { } version)
                    {
                        await context.Response.WriteAsync(Watcher.Event("BOOKMARK", ObjectStore.Bookmark(kind, version)) + "\n", stop.Token);
                        await context.Response.Body.FlushAsync(stop.Token);
                    }

                    continue;
                }

                while (watcher.Lines.Reader.TryRead(out var line))
                {
                    await context.Response.WriteAsync(line + "\n", stop.Token);
                }

                await context.Response.Body.FlushAsync(stop.Token);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or IOException)
        {
            // The client went away, the timeout passed, or DropWatches: the stream just ends.
        }
        finally
        {
            _store.Unwatch(watcher);
        }
    }

    private bool TryThrottle()
    {
        while (true)
        {
            var left = Volatile.Read(ref _throttled);
            if (left <= 0)
            {
                return false;
            }

            if (Interlocked.CompareExchange(ref _throttled, left - 1, left) == left)
            {
                return true;
            }
        }
    }

    private static Func<JsonObject, bool> Filter(ResourceKind kind, IQueryCollection query)
    {
        var labels = LabelSelector.Parse(query["labelSelector"]);
        var fields = FieldSelector.Parse(query["fieldSelector"], kind);
        return obj => labels.Matches(obj) && fields.Matches(obj);
    }

    /// <summary>Parses <c>/api/v1/[namespaces/{ns}/]{plural}[/{name}]</c> and <c>/apis/{group}/{version}/...</c>.</summary>
    private static (ResourceKind Kind, string? Namespace, string? Name)? Route(string path)
    {
        var segments = path.Split('/', StringSplitOptions.RemoveEmptyEntries);
        var (group, version, rest) = segments switch
        {
            ["api", var v, .. var r] => ("", v, r),
            ["apis", var g, var v, .. var r] => (g, v, r),
            _ => ("", "", (string[]?)null),
        };
        if (rest is null || !ResourceKind.All.Any(k => k.Group == group && k.Version == version))
        {
            return null;
        }

        string? ns = null;
        if (rest is ["namespaces", var n, _, ..])
        {
            ns = n;
            rest = rest[2..];
        }

        var kind = rest.Length is 1 or 2 ? ResourceKind.All.FirstOrDefault(k => k.Group == group && k.Version == version && k.Plural == rest[0]) : null;
        if (kind is null || (!kind.Namespaced && ns is not null) || (kind.Namespaced && ns is null && rest.Length == 2))
        {
            throw KubeApiException.NoSuchResource();
        }

        return (kind, ns, rest.Length == 2 ? rest[1] : null);
    }

    private static async Task<byte[]> ReadBytesAsync(HttpContext context)
    {
        using var buffer = new MemoryStream();
        await context.Request.Body.CopyToAsync(buffer, context.RequestAborted);
        return buffer.Length <= 3 * 1024 * 1024 ? buffer.ToArray() : throw new KubeApiException(413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728");
    }

    private static async Task<string> ReadBodyAsync(HttpContext context) => Encoding.UTF8.GetString(await ReadBytesAsync(context));

    /// <summary>A create/update body: JSON, or the protobuf kubectl's typed clients send.</summary>
    private static async Task<JsonNode?> ReadJsonAsync(HttpContext context) => context.Request.ContentType?.Split(';')[0].Trim() switch
    {
        "application/json" or null => JsonNode.Parse(await ReadBytesAsync(context)),
        Protobuf.ContentType => Protobuf.Decode(await ReadBytesAsync(context)),
        _ => throw KubeApiException.UnsupportedMediaType("application/json, application/vnd.kubernetes.protobuf"),
    };

    private static async Task WriteAsync(HttpContext context, int code, JsonNode body, List<string>? warnings = null)
    {
        foreach (var warning in warnings ?? [])
        {
            context.Response.Headers.Append("Warning", $"299 - \"{warning.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal)}\"");
        }

        context.Response.StatusCode = code;
        context.Response.ContentType = "application/json";
        await context.Response.WriteAsync(body.ToJsonString(), context.RequestAborted);
    }
}
