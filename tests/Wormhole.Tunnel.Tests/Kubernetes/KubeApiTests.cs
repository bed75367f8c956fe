using System.Text.Json.Nodes;
using k8s;
using k8s.Models;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging.Abstractions;
using Wormhole.Tunnel.Kubernetes;
using static Wormhole.Tunnel.Tests.Kubernetes.FakeApiServer;

namespace Wormhole.Tunnel.Tests.Kubernetes;

/// <summary>Our layer over the library's client against a scripted apiserver: paths, errors, watch lines, timeouts.</summary>
public sealed class KubeApiTests : IAsyncLifetime
{
    private const string Selector = "wormhole.glothriel.github.com/exposed-by=wormhole,tier in (a,b)";

    private FakeApiServer _api = null!;
    private KubeTransport _kubernetes = null!;
    private KubeApi _client = null!;

    public async Task InitializeAsync()
    {
        _api = await StartAsync();
        _kubernetes = KubeTransport.Create(new KubernetesClientConfiguration { Host = _api.Url.ToString() });
        _client = new KubeApi(_kubernetes, TimeProvider.System, NullLogger.Instance);
    }

    public async Task DisposeAsync()
    {
        _kubernetes.Dispose();
        await _api.DisposeAsync();
    }

    [Fact]
    public async Task List_sends_the_label_selector_and_a_page_limit_and_reads_items_and_resource_version()
    {
        _api.Handler = (c, _) => Respond(c, 200, ServiceList("42", ServiceJson("web", "40"), ServiceJson("db", "41")));

        var list = await _client.ListAsync<V1Service>("apps", Selector, CancellationToken.None);

        var request = _api.Requests.Single();
        request.Path.Should().Be("/api/v1/namespaces/apps/services");
        request.Query["labelSelector"].Should().Be(Selector);
        request.Query["limit"].Should().Be("500");
        list.ResourceVersion.Should().Be("42");
        list.Items.Select(s => s.Metadata.Name).Should().Equal("web", "db");
        list.Items[0].Spec.Ports.Single().TargetPort.Value.Should().Be("web");
    }

    [Fact]
    public async Task Get_of_a_missing_object_is_null_and_delete_of_one_is_false()
    {
        _api.Handler = (c, _) => Respond(c, 404, Status(404, "NotFound", "not found"));

        (await _client.GetAsync<V1Service>("apps", "web", CancellationToken.None)).Should().BeNull();
        (await _client.DeleteAsync<V1NetworkPolicy>("apps", "web", CancellationToken.None)).Should().BeFalse();
        _api.Requests.Select(r => (r.Method, r.Path)).Should().Equal(
            ("GET", "/api/v1/namespaces/apps/services/web"), ("DELETE", "/apis/networking.k8s.io/v1/namespaces/apps/networkpolicies/web"));
    }

    [Fact]
    public async Task Merge_patch_sends_merge_patch_json_and_keeps_nulls_that_remove_keys()
    {
        _api.Handler = (c, _) => Respond(c, 200, ServiceJson("web", "52"));
        var patch = new JsonObject { ["metadata"] = new JsonObject { ["labels"] = new JsonObject { ["tier"] = "web", ["old"] = null } } };

        var patched = await _client.MergePatchAsync<V1Service>("apps", "web", patch, CancellationToken.None);

        var request = _api.Requests.Single();
        request.Method.Should().Be("PATCH");
        request.ContentType.Should().StartWith("application/merge-patch+json");
        request.Body.Should().Be("""{"metadata":{"labels":{"tier":"web","old":null}}}""");
        patched.Metadata.ResourceVersion.Should().Be("52");
    }

    [Fact]
    public async Task Conflict_is_a_KubeApiException_with_code_409_reason_and_the_servers_message()
    {
        _api.Handler = (c, _) => Respond(c, 409, Status(409, "AlreadyExists", "services \\\"web\\\" already exists"));
        var service = new V1Service { Metadata = new V1ObjectMeta { Name = "web", NamespaceProperty = "apps" } };

        var act = () => _client.CreateAsync(service, CancellationToken.None);

        var thrown = (await act.Should().ThrowAsync<KubeApiException>()).Which;
        thrown.Code.Should().Be(409);
        thrown.Reason.Should().Be("AlreadyExists");
        thrown.Message.Should().Contain("already exists");
        thrown.Request.Should().Be("POST /api/v1/namespaces/apps/services");
    }

    [Fact]
    public async Task Error_without_a_status_body_still_carries_the_http_code()
    {
        _api.Handler = (c, _) =>
        {
            c.Response.StatusCode = 503;
            return c.Response.WriteAsync("upstream unavailable");
        };

        var act = () => _client.ListAsync<V1Service>("apps", null, CancellationToken.None);

        (await act.Should().ThrowAsync<KubeApiException>()).Which.Code.Should().Be(503);
    }

    [Fact]
    public async Task Watch_asks_for_bookmarks_from_the_resource_version_and_parses_every_event_type()
    {
        _api.Handler = async (c, r) =>
        {
            var stream = new WatchStream(r);
            stream.Send(WatchLine("ADDED", ServiceJson("web", "11")));
            stream.Send("");
            stream.Send(WatchLine("MODIFIED", ServiceJson("web", "12")));
            stream.Send(Bookmark("13"));
            stream.Send(WatchLine("DELETED", ServiceJson("web", "14")));
            stream.Send(WatchLine("ERROR", Status(410, "Expired", "too old resource version: 10 (14)")));
            stream.End();
            await stream.ServeAsync(c);
        };

        var events = new List<WatchEvent<V1Service>>();
        await foreach (var e in _client.WatchAsync<V1Service>("apps", Selector, "10", CancellationToken.None))
        {
            events.Add(e);
        }

        var query = _api.Requests.Single().Query;
        query.Should().Contain("watch", "1").And.Contain("resourceVersion", "10").And.Contain("allowWatchBookmarks", "true")
            .And.Contain("timeoutSeconds", "290").And.Contain("labelSelector", Selector);
        events.Select(e => e.Type).Should().Equal("ADDED", "MODIFIED", "BOOKMARK", "DELETED", "ERROR");
        events.Take(4).Select(e => e.Item!.Metadata.ResourceVersion).Should().Equal("11", "12", "13", "14");
        events[4].Item.Should().BeNull();
        events[4].Status!.Code.Should().Be(410);
        events[4].Status!.Reason.Should().Be("Expired");
    }

    [Fact]
    public async Task Watch_answered_with_http_410_yields_a_single_error_event_and_403_throws()
    {
        _api.Handler = (c, _) => Respond(c, 410, """{"kind":"Status","status":"Failure","reason":"Gone"}""");
        var events = new List<WatchEvent<V1Service>>();
        await foreach (var e in _client.WatchAsync<V1Service>("apps", null, "1", CancellationToken.None))
        {
            events.Add(e);
        }

        events.Should().ContainSingle().Which.Should().Match<WatchEvent<V1Service>>(e => e.Type == "ERROR" && e.Status!.Code == 410);

        _api.Handler = (c, _) => Respond(c, 403, Status(403, "Forbidden", "services is forbidden"));
        var act = async () =>
        {
            await foreach (var _ in _client.WatchAsync<V1Service>("apps", null, "1", CancellationToken.None))
            {
            }
        };

        (await act.Should().ThrowAsync<KubeApiException>()).Which.Code.Should().Be(403);
    }

    [Fact]
    public async Task A_request_without_an_answer_times_out_after_thirty_seconds()
    {
        var time = new ManualTimeProvider();
        var client = new KubeApi(_kubernetes, time, NullLogger.Instance);
        _api.Handler = (c, _) => Task.Delay(Timeout.Infinite, c.RequestAborted);

        var get = client.GetAsync<V1Service>("apps", "web", CancellationToken.None);
        await Eventually.HoldsAsync(() => _api.Requests.Count == 1, "the request to reach the server");
        time.Advance(TimeSpan.FromSeconds(29));
        get.IsCompleted.Should().BeFalse();
        time.Advance(TimeSpan.FromSeconds(1));

        await get.Invoking(async g => await g).Should().ThrowAsync<TimeoutException>();
    }

    [Fact]
    public async Task A_watch_outlives_the_request_timeout_while_lines_arrive_and_is_abandoned_when_silent_too_long()
    {
        var time = new ManualTimeProvider();
        var client = new KubeApi(_kubernetes, time, NullLogger.Instance);
        var stream = new TaskCompletionSource<WatchStream>();
        _api.Handler = (c, r) =>
        {
            var watch = new WatchStream(r);
            stream.SetResult(watch);
            return watch.ServeAsync(c);
        };
        await using var events = client.WatchAsync<V1Service>("apps", null, "1", CancellationToken.None).GetAsyncEnumerator();
        var next = events.MoveNextAsync().AsTask();
        var server = await stream.Task;

        time.Advance(TimeSpan.FromSeconds(300));
        server.Send(WatchLine("ADDED", ServiceJson("web", "2")));
        (await next).Should().BeTrue();
        time.Advance(TimeSpan.FromSeconds(300));
        server.Send(WatchLine("MODIFIED", ServiceJson("web", "3")));
        (await events.MoveNextAsync()).Should().BeTrue("each line re-arms the idle timeout (320 s)");
        next = events.MoveNextAsync().AsTask();
        time.Advance(TimeSpan.FromSeconds(320));

        await next.Invoking(async n => await n).Should().ThrowAsync<TimeoutException>();
    }
}
