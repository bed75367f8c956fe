using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Wormhole.Tunnel.Kubernetes;
using static Wormhole.Tunnel.Tests.Kubernetes.FakeApiServer;

namespace Wormhole.Tunnel.Tests.Kubernetes;

/// <summary>The typed REST client against a scripted apiserver: paths, verbs, bodies, errors, watch lines.</summary>
public sealed class KubernetesClientTests : IAsyncLifetime
{
    private const string Selector = "wormhole.glothriel.github.com/exposed-by=wormhole,tier in (a,b)";

    private FakeApiServer _api = null!;
    private KubernetesClient _client = null!;

    public async Task InitializeAsync()
    {
        _api = await StartAsync();
        _client = new KubernetesClient(new SocketsHttpHandler(), _api.Url, () => null, TimeProvider.System);
    }

    public async Task DisposeAsync()
    {
        _client.Dispose();
        await _api.DisposeAsync();
    }

    [Fact]
    public async Task List_sends_the_label_selector_escaped_and_reads_items_and_resource_version()
    {
        _api.Handler = (c, _) => Respond(c, 200, ServiceList("42", ServiceJson("web", "40"), ServiceJson("db", "41")));

        var list = await _client.ListAsync<Service>("apps", Selector, CancellationToken.None);

        var request = _api.Requests.Single();
        request.Method.Should().Be("GET");
        request.Path.Should().Be("/api/v1/namespaces/apps/services");
        request.Query["labelSelector"].Should().Be(Selector);
        request.RawQuery.Should().Contain("wormhole.glothriel.github.com%2Fexposed-by%3Dwormhole%2Ctier%20in%20%28a%2Cb%29");
        list.Metadata.ResourceVersion.Should().Be("42");
        list.Items.Select(s => s.Metadata.Name).Should().Equal("web", "db");
        list.Items[0].Spec.Ports.Single().TargetPort!.Value.GetString().Should().Be("web");
    }

    [Fact]
    public async Task List_of_network_policies_in_all_namespaces_uses_the_group_path_without_a_query()
    {
        _api.Handler = (c, _) => Respond(c, 200, """{"metadata":{"resourceVersion":"7"},"items":[]}""");

        var list = await _client.ListAsync<NetworkPolicy>(null, null, CancellationToken.None);

        _api.Requests.Single().Path.Should().Be("/apis/networking.k8s.io/v1/networkpolicies");
        _api.Requests.Single().RawQuery.Should().BeEmpty();
        list.Items.Should().BeEmpty();
    }

    [Fact]
    public async Task Get_reads_the_object()
    {
        _api.Handler = (c, _) => Respond(c, 200, ServiceJson("web", "40"));

        var service = await _client.GetAsync<Service>("apps", "web", CancellationToken.None);

        _api.Requests.Single().Path.Should().Be("/api/v1/namespaces/apps/services/web");
        service!.Metadata.ResourceVersion.Should().Be("40");
        service.Metadata.Labels.Should().Contain("app", "web");
        service.Spec.Ports.Single().Port.Should().Be(80);
    }

    [Fact]
    public async Task Get_of_a_missing_object_is_null()
    {
        _api.Handler = (c, _) => Respond(c, 404, Status(404, "NotFound", "services \\\"web\\\" not found"));

        var service = await _client.GetAsync<Service>("apps", "web", CancellationToken.None);

        service.Should().BeNull();
    }

    [Fact]
    public async Task Create_posts_the_object_as_json_without_null_fields_and_returns_the_servers_copy()
    {
        _api.Handler = (c, _) => Respond(c, 201, ServiceJson("web", "50"));
        var service = new Service { Metadata = new ObjectMeta { Name = "web", Namespace = "apps" } };
        service.Spec.Ports.Add(new ServicePort { Port = 80 });

        var created = await _client.CreateAsync(service, CancellationToken.None);

        var request = _api.Requests.Single();
        request.Method.Should().Be("POST");
        request.Path.Should().Be("/api/v1/namespaces/apps/services");
        request.ContentType.Should().Be("application/json");
        request.Body.Should().Be("""{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"apps"},"spec":{"ports":[{"port":80}]}}""");
        created.Metadata.ResourceVersion.Should().Be("50");
    }

    [Fact]
    public async Task Replace_puts_the_object_as_it_is_with_its_resource_version()
    {
        _api.Handler = (c, _) => Respond(c, 200, ServiceJson("web", "51"));
        var service = new Service { Metadata = new ObjectMeta { Name = "web", Namespace = "apps", ResourceVersion = "50" } };

        var replaced = await _client.ReplaceAsync(service, CancellationToken.None);

        var request = _api.Requests.Single();
        request.Method.Should().Be("PUT");
        request.Path.Should().Be("/api/v1/namespaces/apps/services/web");
        JsonDocument.Parse(request.Body).RootElement.GetProperty("metadata").GetProperty("resourceVersion").GetString().Should().Be("50");
        replaced.Metadata.ResourceVersion.Should().Be("51");
    }

    [Fact]
    public async Task Merge_patch_sends_merge_patch_json_and_keeps_nulls_that_remove_keys()
    {
        _api.Handler = (c, _) => Respond(c, 200, ServiceJson("web", "52"));
        var patch = new { metadata = new { labels = new Dictionary<string, string?> { ["tier"] = "web", ["old"] = null } } };

        var patched = await _client.MergePatchAsync<Service>("apps", "web", patch, CancellationToken.None);

        var request = _api.Requests.Single();
        request.Method.Should().Be("PATCH");
        request.Path.Should().Be("/api/v1/namespaces/apps/services/web");
        request.ContentType.Should().Be("application/merge-patch+json");
        request.Body.Should().Be("""{"metadata":{"labels":{"tier":"web","old":null}}}""");
        patched.Metadata.ResourceVersion.Should().Be("52");
    }

    [Fact]
    public async Task Conflict_is_a_KubeApiException_with_code_409_reason_and_the_servers_message()
    {
        _api.Handler = (c, _) => Respond(c, 409, Status(409, "Conflict", "the object has been modified; please apply your changes to the latest version"));
        var service = new Service { Metadata = new ObjectMeta { Name = "web", Namespace = "apps", ResourceVersion = "1" } };

        var act = () => _client.ReplaceAsync(service, CancellationToken.None);

        var thrown = (await act.Should().ThrowAsync<KubeApiException>()).Which;
        thrown.Code.Should().Be(409);
        thrown.Reason.Should().Be("Conflict");
        thrown.Message.Should().Contain("the object has been modified");
    }

    [Fact]
    public async Task Error_without_a_status_body_still_carries_the_http_code()
    {
        _api.Handler = (c, _) =>
        {
            c.Response.StatusCode = 503;
            return c.Response.WriteAsync("upstream unavailable");
        };

        var act = () => _client.ListAsync<Service>("apps", null, CancellationToken.None);

        (await act.Should().ThrowAsync<KubeApiException>()).Which.Code.Should().Be(503);
    }

    [Fact]
    public async Task Delete_is_true_when_the_object_existed_and_false_when_it_did_not()
    {
        _api.Handler = (c, r) => r.Path.EndsWith("/web", StringComparison.Ordinal)
            ? Respond(c, 200, """{"kind":"Status","status":"Success"}""")
            : Respond(c, 404, Status(404, "NotFound", "not found"));

        var existed = await _client.DeleteAsync<NetworkPolicy>("apps", "web", CancellationToken.None);
        var missing = await _client.DeleteAsync<NetworkPolicy>("apps", "gone", CancellationToken.None);

        existed.Should().BeTrue();
        missing.Should().BeFalse();
        _api.Requests.Select(r => (r.Method, r.Path)).Should().Equal(
            ("DELETE", "/apis/networking.k8s.io/v1/namespaces/apps/networkpolicies/web"),
            ("DELETE", "/apis/networking.k8s.io/v1/namespaces/apps/networkpolicies/gone"));
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

        var events = new List<WatchEvent<Service>>();
        await foreach (var e in _client.WatchAsync<Service>("apps", Selector, "10", CancellationToken.None))
        {
            events.Add(e);
        }

        var query = _api.Requests.Single().Query;
        query.Should().Contain("watch", "1").And.Contain("resourceVersion", "10").And.Contain("allowWatchBookmarks", "true")
            .And.Contain("timeoutSeconds", "290").And.Contain("labelSelector", Selector);
        events.Select(e => e.Type).Should().Equal("ADDED", "MODIFIED", "BOOKMARK", "DELETED", "ERROR");
        events.Take(4).Select(e => e.Item!.Metadata.ResourceVersion).Should().Equal("11", "12", "13", "14");
        events[0].Item!.Metadata.Name.Should().Be("web");
        events[4].Item.Should().BeNull();
        events[4].Status!.Code.Should().Be(410);
        events[4].Status!.Reason.Should().Be("Expired");
    }

    [Fact]
    public async Task Watch_answered_with_http_410_yields_a_single_error_event_with_code_410()
    {
        _api.Handler = (c, _) => Respond(c, 410, """{"kind":"Status","status":"Failure","reason":"Gone"}""");

        var events = new List<WatchEvent<Service>>();
        await foreach (var e in _client.WatchAsync<Service>("apps", null, "1", CancellationToken.None))
        {
            events.Add(e);
        }

        events.Should().ContainSingle().Which.Should().Match<WatchEvent<Service>>(e => e.Type == "ERROR" && e.Status!.Code == 410);
    }

    [Fact]
    public async Task Watch_refused_with_403_throws_a_KubeApiException()
    {
        _api.Handler = (c, _) => Respond(c, 403, Status(403, "Forbidden", "services is forbidden"));

        var act = async () =>
        {
            await foreach (var _ in _client.WatchAsync<Service>("apps", null, "1", CancellationToken.None))
            {
            }
        };

        (await act.Should().ThrowAsync<KubeApiException>()).Which.Code.Should().Be(403);
    }

    [Fact]
    public async Task A_request_without_an_answer_times_out_after_thirty_seconds()
    {
        var time = new ManualTimeProvider();
        using var client = new KubernetesClient(new SocketsHttpHandler(), _api.Url, () => null, time);
        _api.Handler = (c, _) => Task.Delay(Timeout.Infinite, c.RequestAborted);

        var get = client.GetAsync<Service>("apps", "web", CancellationToken.None);
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
        using var client = new KubernetesClient(new SocketsHttpHandler(), _api.Url, () => null, time);
        var stream = new TaskCompletionSource<WatchStream>();
        _api.Handler = (c, r) =>
        {
            var watch = new WatchStream(r);
            stream.SetResult(watch);
            return watch.ServeAsync(c);
        };
        await using var events = client.WatchAsync<Service>("apps", null, "1", CancellationToken.None).GetAsyncEnumerator();
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
