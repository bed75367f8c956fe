using System.Collections.Concurrent;
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.Extensions.Logging;

namespace Wormhole.Tunnel.Tests.Kubernetes;

/// <summary>What the fake apiserver received.</summary>
internal sealed record RecordedRequest(
    string Method, string Path, IReadOnlyDictionary<string, string> Query, string RawQuery, string? ContentType, string Body, string? Authorization, string? ClientCertificateSubject);

/// <summary>
/// A tiny scripted apiserver: real Kestrel on 127.0.0.1 (HTTP or HTTPS, optionally requiring a client certificate),
/// every request recorded and answered by <see cref="Handler"/>, which each test scripts.
/// </summary>
internal sealed class FakeApiServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly ConcurrentQueue<RecordedRequest> _requests = new();

    private FakeApiServer(WebApplication app) => _app = app;

    public Func<HttpContext, RecordedRequest, Task> Handler { get; set; } = (context, _) => Respond(context, 404, Status(404, "NotFound", "not scripted"));

    public Uri Url { get; private set; } = null!;

    public IReadOnlyList<RecordedRequest> Requests => [.. _requests];

    public static async Task<FakeApiServer> StartAsync(X509Certificate2? serverCertificate = null, bool requireClientCertificate = false)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(kestrel => kestrel.Listen(IPAddress.Loopback, 0, listen =>
        {
            if (serverCertificate is not null)
            {
                listen.UseHttps(https =>
                {
                    https.ServerCertificate = serverCertificate;
                    if (requireClientCertificate)
                    {
                        https.ClientCertificateMode = ClientCertificateMode.RequireCertificate;
                        https.AllowAnyClientCertificate();
                    }
                });
            }
        }));
        var app = builder.Build();
        var server = new FakeApiServer(app);
        app.Run(server.HandleAsync);
        await app.StartAsync();
        server.Url = new Uri(app.Urls.Single());
        return server;
    }

    public static async Task Respond(HttpContext context, int status, string json)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json";
        await context.Response.WriteAsync(json, context.RequestAborted);
    }

    public static string Status(int code, string reason, string message) =>
        $$"""{"kind":"Status","apiVersion":"v1","status":"Failure","message":"{{message}}","reason":"{{reason}}","code":{{code}}}""";

    public static string ServiceJson(string name, string resourceVersion, string ns = "apps") =>
        $$$"""{"metadata":{"name":"{{{name}}}","namespace":"{{{ns}}}","resourceVersion":"{{{resourceVersion}}}","labels":{"app":"{{{name}}}"}},"spec":{"type":"ClusterIP","ports":[{"name":"http","port":80,"targetPort":"web"}]}}""";

    public static string ServiceList(string resourceVersion, params string[] items) =>
        $$"""{"kind":"ServiceList","apiVersion":"v1","metadata":{"resourceVersion":"{{resourceVersion}}"},"items":[{{string.Join(",", items)}}]}""";

    public static string WatchLine(string type, string json) => $$"""{"type":"{{type}}","object":{{json}}}""";

    public static string Bookmark(string resourceVersion) =>
        WatchLine("BOOKMARK", $$$"""{"kind":"Service","apiVersion":"v1","metadata":{"resourceVersion":"{{{resourceVersion}}}"}}""");

    public async ValueTask DisposeAsync()
    {
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(2));
        await _app.StopAsync(stop.Token);
        await _app.DisposeAsync();
    }

    private async Task HandleAsync(HttpContext context)
    {
        using var reader = new StreamReader(context.Request.Body, Encoding.UTF8);
        var recorded = new RecordedRequest(
            context.Request.Method,
            context.Request.Path.Value ?? "",
            context.Request.Query.ToDictionary(q => q.Key, q => q.Value.ToString()),
            context.Request.QueryString.Value ?? "",
            context.Request.ContentType,
            await reader.ReadToEndAsync(context.RequestAborted),
            context.Request.Headers.Authorization.ToString() is { Length: > 0 } auth ? auth : null,
            context.Connection.ClientCertificate?.Subject);
        _requests.Enqueue(recorded);
        await Handler(context, recorded);
    }
}

/// <summary>An open watch response: the test writes lines into it and ends it.</summary>
internal sealed class WatchStream
{
    private readonly Channel<string> _lines = Channel.CreateUnbounded<string>();

    public WatchStream(RecordedRequest request) => Request = request;

    public RecordedRequest Request { get; }

    public void Send(string line) => _lines.Writer.TryWrite(line);

    public void End() => _lines.Writer.TryComplete();

    public async Task ServeAsync(HttpContext context)
    {
        context.Response.ContentType = "application/json";
        await context.Response.StartAsync(context.RequestAborted);
        try
        {
            await foreach (var line in _lines.Reader.ReadAllAsync(context.RequestAborted))
            {
                await context.Response.WriteAsync(line + "\n", context.RequestAborted);
                await context.Response.Body.FlushAsync(context.RequestAborted);
            }
        }
        catch (OperationCanceledException)
        {
            // The client went away.
        }
    }
}

/// <summary>Self-signed CAs and certificates issued by them, made in memory for TLS tests.</summary>
internal sealed class TestCertificateAuthority : IDisposable
{
    private readonly ECDsa _key = ECDsa.Create(ECCurve.NamedCurves.nistP256);

    public TestCertificateAuthority(string name)
    {
        var request = new CertificateRequest($"CN={name}", _key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        Certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));
    }

    public X509Certificate2 Certificate { get; }

    public string Pem => Certificate.ExportCertificatePem();

    /// <summary>A server certificate for 127.0.0.1 and localhost, with its private key, ready for Kestrel.</summary>
    public X509Certificate2 IssueServer() => Issue("CN=apiserver", server: true);

    public X509Certificate2 IssueClient(string commonName) => Issue($"CN={commonName}", server: false);

    /// <summary>The certificate and its key as PEM, as a kubeconfig holds them (the key as "EC PRIVATE KEY", as k3s writes it).</summary>
    public static (string Certificate, string Key) ToPem(X509Certificate2 certificate)
    {
        using var key = certificate.GetECDsaPrivateKey()!;
        return (certificate.ExportCertificatePem(), key.ExportECPrivateKeyPem());
    }

    public void Dispose()
    {
        Certificate.Dispose();
        _key.Dispose();
    }

    private X509Certificate2 Issue(string subject, bool server)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, false));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(
            [server ? new Oid("1.3.6.1.5.5.7.3.1") : new Oid("1.3.6.1.5.5.7.3.2")], false));
        if (server)
        {
            var names = new SubjectAlternativeNameBuilder();
            names.AddIpAddress(IPAddress.Loopback);
            names.AddDnsName("localhost");
            request.CertificateExtensions.Add(names.Build());
        }

        var serial = RandomNumberGenerator.GetBytes(8);
        using var issued = request.Create(Certificate, DateTimeOffset.UtcNow.AddHours(-1), DateTimeOffset.UtcNow.AddDays(29), serial);
        using var withKey = issued.CopyWithPrivateKey(key);
        return X509CertificateLoader.LoadPkcs12(withKey.Export(X509ContentType.Pkcs12), null);
    }
}

/// <summary>A clock that moves only when told to; timers fire on <see cref="Advance"/>.</summary>
internal sealed class ManualTimeProvider : TimeProvider
{
    private readonly Lock _gate = new();
    private readonly List<ManualTimer> _timers = [];
    private DateTimeOffset _now = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    public override long TimestampFrequency => TimeSpan.TicksPerSecond;

    /// <summary>How far ahead each armed timer is due.</summary>
    public IReadOnlyList<TimeSpan> PendingTimers
    {
        get
        {
            lock (_gate)
            {
                return [.. _timers.Where(t => t.Due is not null).Select(t => t.Due!.Value - _now)];
            }
        }
    }

    public override DateTimeOffset GetUtcNow()
    {
        lock (_gate)
        {
            return _now;
        }
    }

    public override long GetTimestamp() => GetUtcNow().UtcTicks;

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        var timer = new ManualTimer(this, callback, state);
        lock (_gate)
        {
            _timers.Add(timer);
        }

        timer.Change(dueTime, period);
        return timer;
    }

    public void Advance(TimeSpan by)
    {
        List<ManualTimer> due;
        lock (_gate)
        {
            _now += by;
            due = [.. _timers.Where(t => t.Due <= _now)];
            foreach (var timer in due)
            {
                timer.Due = timer.Period == Timeout.InfiniteTimeSpan || timer.Period == TimeSpan.Zero ? null : _now + timer.Period;
            }
        }

        foreach (var timer in due)
        {
            timer.Fire();
        }
    }

    private sealed class ManualTimer(ManualTimeProvider owner, TimerCallback callback, object? state) : ITimer
    {
        public DateTimeOffset? Due { get; set; }

        public TimeSpan Period { get; private set; }

        public bool Change(TimeSpan dueTime, TimeSpan period)
        {
            lock (owner._gate)
            {
                Due = dueTime == Timeout.InfiniteTimeSpan ? null : owner._now + dueTime;
                Period = period;
            }

            return true;
        }

        public void Fire() => callback(state);

        public void Dispose()
        {
            lock (owner._gate)
            {
                owner._timers.Remove(this);
            }
        }

        public ValueTask DisposeAsync()
        {
            Dispose();
            return ValueTask.CompletedTask;
        }
    }
}

/// <summary>Log lines kept for assertions.</summary>
internal sealed class RecordingLogger : ILogger
{
    private readonly ConcurrentQueue<(LogLevel Level, int EventId, string Message)> _lines = new();

    public IReadOnlyList<(LogLevel Level, int EventId, string Message)> Lines => [.. _lines];

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
        _lines.Enqueue((logLevel, eventId.Id, formatter(state, exception)));
}

internal static class Eventually
{
    /// <summary>Waits until <paramref name="condition"/> holds (re-checked every few milliseconds), failing after 10 s.</summary>
    public static async Task HoldsAsync(Func<bool> condition, string what)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (!condition())
        {
            try
            {
                await Task.Delay(5, timeout.Token);
            }
            catch (OperationCanceledException)
            {
                throw new TimeoutException($"Still waiting for: {what}");
            }
        }
    }
}
