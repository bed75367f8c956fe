using System.Collections.Concurrent;
using System.Threading.Channels;
using Microsoft.AspNetCore.Http;
using k8s;
using k8s.Models;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Wormhole.Tunnel.Kubernetes;
using static Wormhole.Tunnel.Tests.Kubernetes.FakeApiServer;

namespace Wormhole.Tunnel.Tests.Kubernetes;

/// <summary>
/// The informer against a scripted apiserver: each LIST is answered from <see cref="_lists"/>, each WATCH becomes a
/// <see cref="WatchStream"/> the test drives; backoff delays run on a manual clock.
/// </summary>
public sealed class ResourceInformerTests : IAsyncLifetime
{
    private const string Selector = "wormhole.glothriel.github.com/exposed-by=wormhole";

    private readonly ManualTimeProvider _time = new();
    private readonly RecordingLogger _log = new();
    private readonly ConcurrentQueue<Func<HttpContext, Task>> _lists = new();
    private readonly ConcurrentQueue<Func<HttpContext, Task>> _watchAnswers = new();
    private readonly Channel<WatchStream> _watches = Channel.CreateUnbounded<WatchStream>();
    private readonly CancellationTokenSource _stop = new();
    private FakeApiServer _api = null!;
    private KubeTransport _kubernetes = null!;
    private KubeApi _client = null!;
    private ResourceInformer<V1Service> _informer = null!;
    private Task _run = Task.CompletedTask;
    private int _changed;

    private IEnumerable<RecordedRequest> ListRequests => _api.Requests.Where(r => !r.Query.ContainsKey("watch"));

    public async Task InitializeAsync()
    {
        _api = await StartAsync();
        _api.Handler = (context, request) =>
        {
            if (!request.Query.ContainsKey("watch"))
            {
                return _lists.TryDequeue(out var list) ? list(context) : Respond(context, 500, Status(500, "InternalError", "no list scripted"));
            }

            if (_watchAnswers.TryDequeue(out var answer))
            {
                return answer(context);
            }

            var stream = new WatchStream(request);
            _watches.Writer.TryWrite(stream);
            return stream.ServeAsync(context);
        };
        _kubernetes = KubeTransport.Create(new KubernetesClientConfiguration { Host = _api.Url.ToString() });
        _client = new KubeApi(_kubernetes, TimeProvider.System, NullLogger.Instance);
        _informer = new ResourceInformer<V1Service>(_client, "apps", Selector, _time, _log);
        _informer.Changed += () => Interlocked.Increment(ref _changed);
    }

    public async Task DisposeAsync()
    {
        await _stop.CancelAsync();
        await _run.WaitAsync(TimeSpan.FromSeconds(10));
        _stop.Dispose();
        _kubernetes.Dispose();
        await _api.DisposeAsync();
    }

    [Fact]
    public async Task Initial_list_makes_the_informer_ready_with_the_listed_objects_and_the_watch_starts_from_its_version()
    {
        ListAnswers(ServiceList("10", ServiceJson("web", "8"), ServiceJson("db", "9")));

        Start();
        await _informer.ReadyAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));

        Names().Should().Equal("db", "web");
        _changed.Should().Be(1);
        ListRequests.Single().Query["labelSelector"].Should().Be(Selector);
        var watch = await NextWatchAsync();
        watch.Request.Query["resourceVersion"].Should().Be("10");
        watch.Request.Query["labelSelector"].Should().Be(Selector);
    }

    [Fact]
    public async Task The_first_list_is_ready_when_its_change_is_announced()
    {
        // A listener that looks at ReadyAsync when told of the change (KubernetesAppSource does, on another thread) must
        // find it complete: otherwise it waits for a next change that a quiet cluster never makes, and the side never
        // builds its first plan (a restarted hub pod answered every sync 503 for minutes).
        var readyWhenAnnounced = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        _informer.Changed += () => readyWhenAnnounced.TrySetResult(_informer.ReadyAsync(CancellationToken.None).IsCompletedSuccessfully);
        ListAnswers(ServiceList("10", ServiceJson("web", "8")));

        Start();

        (await readyWhenAnnounced.Task.WaitAsync(TimeSpan.FromSeconds(10))).Should().BeTrue();
    }

    [Fact]
    public async Task Ready_is_pending_until_a_list_succeeds()
    {
        _lists.Enqueue(c => Respond(c, 403, Status(403, "Forbidden", "services is forbidden")));
        ListAnswers(ServiceList("10"));

        Start();
        await Eventually.HoldsAsync(() => _time.PendingTimers.Count == 1, "a retry to be scheduled");

        _informer.ReadyAsync(CancellationToken.None).IsCompleted.Should().BeFalse();
        _time.Advance(TimeSpan.FromSeconds(1));
        await _informer.ReadyAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task Watch_events_update_the_snapshot_and_bookmarks_only_move_the_version()
    {
        ListAnswers(ServiceList("10", ServiceJson("web", "8")));
        Start();
        var watch = await NextWatchAsync();
        var before = _informer.Snapshot();

        watch.Send(WatchLine("ADDED", ServiceJson("db", "11")));
        await Eventually.HoldsAsync(() => Names().SequenceEqual(["db", "web"]), "db to be added");
        watch.Send(WatchLine("MODIFIED", ServiceJson("web", "12")));
        await Eventually.HoldsAsync(() => Version("web") == "12", "web to be modified");
        watch.Send(WatchLine("DELETED", ServiceJson("db", "13")));
        await Eventually.HoldsAsync(() => Names().SequenceEqual(["web"]), "db to be deleted");
        watch.Send(Bookmark("14"));
        watch.End();
        var next = await NextWatchAsync();

        next.Request.Query["resourceVersion"].Should().Be("14");
        _changed.Should().Be(4, "one list and three changes; the bookmark changes nothing");
        before.Select(s => s.Metadata.ResourceVersion).Should().Equal(["8"], "a snapshot taken earlier never changes");
    }

    [Fact]
    public async Task A_watch_that_ends_resumes_from_the_last_seen_version_without_listing_or_waiting()
    {
        ListAnswers(ServiceList("10", ServiceJson("web", "8")));
        Start();
        var first = await NextWatchAsync();

        first.Send(WatchLine("MODIFIED", ServiceJson("web", "15")));
        first.End();
        var second = await NextWatchAsync();

        second.Request.Query["resourceVersion"].Should().Be("15");
        ListRequests.Should().ContainSingle();
        _time.PendingTimers.Should().BeEmpty();
        Version("web").Should().Be("15");
    }

    [Fact]
    public async Task Error_410_in_the_stream_relists_and_watches_from_the_new_lists_version()
    {
        ListAnswers(ServiceList("10", ServiceJson("web", "8"), ServiceJson("db", "9")), ServiceList("20", ServiceJson("web", "19")));
        Start();
        var first = await NextWatchAsync();

        first.Send(WatchLine("ERROR", Status(410, "Expired", "too old resource version: 10 (18)")));
        var second = await NextWatchAsync();

        second.Request.Query["resourceVersion"].Should().Be("20");
        ListRequests.Should().HaveCount(2);
        Names().Should().Equal("web");
        Version("web").Should().Be("19");
        _changed.Should().Be(2);
        _log.Lines.Should().Contain(l => l.EventId == 1503 && l.Level == LogLevel.Information);
    }

    [Fact]
    public async Task Http_410_answering_the_watch_relists()
    {
        ListAnswers(ServiceList("10", ServiceJson("web", "8")), ServiceList("30"));
        _watchAnswers.Enqueue(c => Respond(c, 410, Status(410, "Gone", "resourceVersion 10 is too old")));

        Start();
        var watch = await NextWatchAsync();

        watch.Request.Query["resourceVersion"].Should().Be("30");
        ListRequests.Should().HaveCount(2);
        _informer.Snapshot().Should().BeEmpty();
    }

    [Fact]
    public async Task Connection_failures_back_off_exponentially_with_jitter_and_each_is_logged_once()
    {
        _lists.Enqueue(Abort);
        _lists.Enqueue(Abort);
        ListAnswers(ServiceList("10", ServiceJson("web", "8")));

        Start();
        await Eventually.HoldsAsync(() => _time.PendingTimers.Count == 1, "the first retry to be scheduled");
        _time.PendingTimers.Single().Should().BeGreaterThanOrEqualTo(TimeSpan.FromMilliseconds(100)).And.BeLessThanOrEqualTo(TimeSpan.FromMilliseconds(200));
        ListRequests.Should().ContainSingle("nothing is retried before the delay is over");
        _time.Advance(TimeSpan.FromMilliseconds(200));
        await Eventually.HoldsAsync(() => _time.PendingTimers.Count == 1 && ListRequests.Count() == 2, "the second retry to be scheduled");
        _time.PendingTimers.Single().Should().BeGreaterThanOrEqualTo(TimeSpan.FromMilliseconds(200)).And.BeLessThanOrEqualTo(TimeSpan.FromMilliseconds(400));
        _time.Advance(TimeSpan.FromMilliseconds(400));

        await _informer.ReadyAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));
        Names().Should().Equal("web");
        var failures = _log.Lines.Where(l => l.EventId == 1504).ToList();
        failures.Should().HaveCount(2).And.OnlyContain(l => l.Level == LogLevel.Warning && l.Message.Contains("services", StringComparison.Ordinal));
        failures.Select(l => l.Message).Should().OnlyContain(m => m.Contains("attempt", StringComparison.Ordinal) && m.Contains("error", StringComparison.OrdinalIgnoreCase));
    }

    [Fact]
    public void Backoff_doubles_up_to_the_cap_with_up_to_half_taken_off_by_jitter()
    {
        var delays = Enumerable.Range(1, 12).Select(n => _informer.Schedule.Delay(n)).ToList();

        delays[0].Should().BeGreaterThanOrEqualTo(TimeSpan.FromMilliseconds(100)).And.BeLessThanOrEqualTo(TimeSpan.FromMilliseconds(200));
        delays[3].Should().BeGreaterThanOrEqualTo(TimeSpan.FromMilliseconds(800)).And.BeLessThanOrEqualTo(TimeSpan.FromMilliseconds(1600));
        delays.Skip(8).Should().OnlyContain(d => d >= TimeSpan.FromSeconds(15) && d <= TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task Other_error_events_rewatch_from_the_last_seen_version_after_a_backoff()
    {
        ListAnswers(ServiceList("10", ServiceJson("web", "8")));
        Start();
        var first = await NextWatchAsync();

        first.Send(WatchLine("MODIFIED", ServiceJson("web", "11")));
        first.Send(WatchLine("ERROR", Status(500, "InternalError", "etcd leader changed")));
        await Eventually.HoldsAsync(() => _time.PendingTimers.Count == 1, "a retry to be scheduled");
        _time.Advance(TimeSpan.FromMilliseconds(200));
        var second = await NextWatchAsync();

        second.Request.Query["resourceVersion"].Should().Be("11");
        ListRequests.Should().ContainSingle();
        _log.Lines.Should().Contain(l => l.EventId == 1504 && l.Message.Contains("etcd leader changed", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Cancelling_stops_the_informer_without_an_exception()
    {
        ListAnswers(ServiceList("10"));
        Start();
        await NextWatchAsync();

        await _stop.CancelAsync();

        await _run.WaitAsync(TimeSpan.FromSeconds(10));
        _run.IsCompletedSuccessfully.Should().BeTrue();
    }

    private static Task Abort(HttpContext context)
    {
        context.Abort();
        return Task.CompletedTask;
    }

    private void ListAnswers(params string[] lists)
    {
        foreach (var list in lists)
        {
            _lists.Enqueue(c => Respond(c, 200, list));
        }
    }

    private void Start() => _run = Task.Run(() => _informer.RunAsync(_stop.Token));

    private async Task<WatchStream> NextWatchAsync() => await _watches.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(10));

    private List<string?> Names() => [.. _informer.Snapshot().Select(s => s.Metadata.Name)];

    private string? Version(string name) => _informer.Snapshot().SingleOrDefault(s => s.Metadata.Name == name)?.Metadata.ResourceVersion;
}
