using System.Text.Json.Nodes;

namespace Wormhole.Tunnel.KubeEmulator.Tests;

/// <summary>List and watch as informers use them: resourceVersions, bookmarks, 410 after compaction, dropped streams.</summary>
public sealed class WatchTests
{
    private const string Services = "/api/v1/namespaces/demo/services";

    [KubectlFact]
    public async Task A_watch_from_a_lists_resourceVersion_sees_kubectl_changes_in_order()
    {
        await using var cluster = await Cluster.StartAsync();
        await cluster.KubectlAsync("create", "namespace", "demo");
        using var client = cluster.Emulator.CreateHttpClient();
        var listVersion = await ListVersionAsync(client, Services);
        await using var watch = await WatchStream.OpenAsync(client, $"{Services}?watch=true&resourceVersion={listVersion}");

        (await cluster.KubectlWithInputAsync(KubectlTests.WebApp.Split("---")[0], "apply", "-f", "-")).ShouldSucceed();
        (await cluster.KubectlAsync("annotate", "svc", "web", "-n", "demo", "example.com/seen=yes")).ShouldSucceed();
        (await cluster.KubectlAsync("delete", "svc", "web", "-n", "demo")).ShouldSucceed();

        var events = new[] { await watch.NextChangeAsync(), await watch.NextChangeAsync(), await watch.NextChangeAsync() };
        events.Select(e => e.Str("type")).Should().Equal("ADDED", "MODIFIED", "DELETED");
        events.Select(e => e!["object"].Str("metadata.name")).Should().AllBe("web");
        events.Select(e => e!["object"].Str("kind")).Should().AllBe("Service");
        events[1]!["object"]!["metadata"]!["annotations"]!["example.com/seen"]!.GetValue<string>().Should().Be("yes");
        var versions = events.Select(e => long.Parse(e!["object"].Str("metadata.resourceVersion")!)).ToList();
        versions.Should().BeInAscendingOrder().And.OnlyHaveUniqueItems().And.OnlyContain(v => v > listVersion);
        versions[^1].Should().Be(cluster.Emulator.ResourceVersion);
    }

    [Fact]
    public async Task A_watch_opened_after_changes_replays_them_from_its_resourceVersion()
    {
        await using var emulator = await KubeEmulator.StartAsync();
        using var client = emulator.CreateHttpClient();
        emulator.Apply("""{"kind":"Namespace","apiVersion":"v1","metadata":{"name":"demo"}}""");
        var listVersion = await ListVersionAsync(client, Services);
        emulator.Apply(Svc("a"));
        emulator.Apply(Svc("b"));
        emulator.Delete("svc", "demo", "a");

        await using var watch = await WatchStream.OpenAsync(client, $"{Services}?watch=1&resourceVersion={listVersion}");

        var events = new[] { await watch.NextAsync(), await watch.NextAsync(), await watch.NextAsync() };
        events.Select(e => $"{e.Str("type")} {e!["object"].Str("metadata.name")}").Should().Equal("ADDED a", "ADDED b", "DELETED a");
    }

    [Fact]
    public async Task A_watch_without_resourceVersion_starts_with_ADDED_for_what_exists()
    {
        await using var emulator = await KubeEmulator.StartAsync();
        using var client = emulator.CreateHttpClient();

        await using var watch = await WatchStream.OpenAsync(client, "/api/v1/services?watch=true");

        var first = await watch.NextAsync();
        first.Str("type").Should().Be("ADDED");
        first!["object"].Str("metadata.name").Should().Be("kubernetes");
    }

    [Fact]
    public async Task Bookmarks_come_when_asked_for_and_carry_only_the_current_resourceVersion()
    {
        await using var emulator = await KubeEmulator.StartAsync(new KubeEmulatorOptions { BookmarkInterval = TimeSpan.FromMilliseconds(200) });
        using var client = emulator.CreateHttpClient();
        var version = await ListVersionAsync(client, "/api/v1/namespaces/default/services");
        await using var plain = await WatchStream.OpenAsync(client, $"/api/v1/namespaces/default/services?watch=true&resourceVersion={version}");
        await using var withBookmarks = await WatchStream.OpenAsync(client, $"/api/v1/namespaces/default/services?watch=true&resourceVersion={version}&allowWatchBookmarks=true");

        var bookmark = await withBookmarks.NextAsync();

        bookmark.Str("type").Should().Be("BOOKMARK");
        bookmark!["object"].ShouldBeJson("""{"kind":"Service","apiVersion":"v1","metadata":{"resourceVersion":"RV"}}""".Replace("RV", $"{emulator.ResourceVersion}", StringComparison.Ordinal));
        var noBookmark = () => plain.NextAsync(timeoutSeconds: 1);
        await noBookmark.Should().ThrowAsync<TimeoutException>();
    }

    [Fact]
    public async Task A_watch_from_a_compacted_resourceVersion_gets_a_410_Expired_error_event_and_ends()
    {
        await using var emulator = await KubeEmulator.StartAsync();
        using var client = emulator.CreateHttpClient();
        var old = await ListVersionAsync(client, "/api/v1/namespaces/default/services");
        emulator.Apply(Svc("a", "default"));
        emulator.CompactBefore(emulator.ResourceVersion);

        await using var expired = await WatchStream.OpenAsync(client, $"/api/v1/namespaces/default/services?watch=true&resourceVersion={old}");
        await using var current = await WatchStream.OpenAsync(client, $"/api/v1/namespaces/default/services?watch=true&resourceVersion={emulator.ResourceVersion}");

        var error = await expired.NextAsync();
        error.Str("type").Should().Be("ERROR");
        error!["object"].ShouldBeJson($$"""
            {"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old resource version: {{old}} ({{emulator.ResourceVersion}})","reason":"Expired","code":410}
            """);
        (await expired.NextAsync()).Should().BeNull("the stream ends after the error");
        emulator.Apply(Svc("b", "default"));
        (await current.NextAsync())!["object"].Str("metadata.name").Should().Be("b");
    }

    [Fact]
    public async Task DropWatches_ends_every_open_stream_so_clients_must_reconnect()
    {
        await using var emulator = await KubeEmulator.StartAsync();
        using var client = emulator.CreateHttpClient();
        var version = emulator.ResourceVersion;
        await using var first = await WatchStream.OpenAsync(client, $"/api/v1/services?watch=true&resourceVersion={version}");
        await using var second = await WatchStream.OpenAsync(client, $"/apis/networking.k8s.io/v1/networkpolicies?watch=true&resourceVersion={version}");
        await WaitUntilAsync(() => emulator.WatchCount == 2);

        emulator.DropWatches();

        (await first.NextAsync()).Should().BeNull();
        (await second.NextAsync()).Should().BeNull();
        await WaitUntilAsync(() => emulator.WatchCount == 0);
    }

    [Fact]
    public async Task A_watch_ends_after_timeoutSeconds()
    {
        await using var emulator = await KubeEmulator.StartAsync();
        using var client = emulator.CreateHttpClient();
        var started = DateTime.UtcNow;

        await using var watch = await WatchStream.OpenAsync(client, $"/api/v1/namespaces?watch=true&resourceVersion={emulator.ResourceVersion}&timeoutSeconds=1");

        (await watch.NextAsync(timeoutSeconds: 5)).Should().BeNull();
        (DateTime.UtcNow - started).Should().BeGreaterThan(TimeSpan.FromSeconds(0.9));
    }

    [Fact]
    public async Task A_label_selected_watch_sees_objects_entering_and_leaving_the_selection_as_ADDED_and_DELETED()
    {
        await using var emulator = await KubeEmulator.StartAsync();
        using var client = emulator.CreateHttpClient();
        await using var watch = await WatchStream.OpenAsync(client, $"/api/v1/services?watch=true&resourceVersion={emulator.ResourceVersion}&labelSelector=tier%3Dweb");

        emulator.Apply(Svc("a", "default", "db"));
        emulator.Apply(Svc("a", "default", "web"));
        emulator.Apply(Svc("a", "default", "web", annotation: "x"));
        emulator.Apply(Svc("a", "default", "db"));

        var events = new[] { await watch.NextAsync(), await watch.NextAsync(), await watch.NextAsync() };
        events.Select(e => e.Str("type")).Should().Equal("ADDED", "MODIFIED", "DELETED");
        events[2]!["object"]!["metadata"]!["labels"]!["tier"]!.GetValue<string>().Should().Be("db", "the object as it is after leaving the selection");
    }

    [Fact]
    public async Task Deleting_a_namespace_reports_its_objects_as_DELETED_before_the_namespace()
    {
        await using var emulator = await KubeEmulator.StartAsync();
        using var client = emulator.CreateHttpClient();
        emulator.Apply("""{"kind":"Namespace","apiVersion":"v1","metadata":{"name":"demo"}}""");
        emulator.Apply(Svc("a"));
        var version = emulator.ResourceVersion;
        await using var services = await WatchStream.OpenAsync(client, $"/api/v1/services?watch=true&resourceVersion={version}");
        await using var namespaces = await WatchStream.OpenAsync(client, $"/api/v1/namespaces?watch=true&resourceVersion={version}&fieldSelector=metadata.name%3Ddemo");

        using var response = await client.DeleteAsync(new Uri("/api/v1/namespaces/demo", UriKind.Relative));

        (await StrictnessTests.ReadAsync(response)).Str("status.phase").Should().Be("Terminating");
        var deleted = await services.NextAsync();
        $"{deleted.Str("type")} {deleted!["object"].Str("metadata.name")}".Should().Be("DELETED a");
        var terminating = await namespaces.NextAsync();
        var gone = await namespaces.NextAsync();
        $"{terminating.Str("type")} {terminating!["object"].Str("status.phase")}".Should().Be("MODIFIED Terminating");
        gone.Str("type").Should().Be("DELETED");
        long.Parse(gone!["object"].Str("metadata.resourceVersion")!).Should().BeGreaterThan(long.Parse(deleted["object"].Str("metadata.resourceVersion")!));
    }

    [Fact]
    public async Task Lists_page_with_limit_and_continue_and_omit_kind_on_items()
    {
        await using var emulator = await KubeEmulator.StartAsync();
        using var client = emulator.CreateHttpClient();
        foreach (var name in new[] { "e", "d", "c", "b", "a" })
        {
            emulator.Apply(Svc(name, "default"));
        }

        var names = new List<string>();
        string? next = null;
        do
        {
            var page = await GetAsync(client, $"/api/v1/namespaces/default/services?limit=2{(next is null ? "" : "&continue=" + Uri.EscapeDataString(next))}");
            page.Str("kind").Should().Be("ServiceList");
            page["items"]!.AsArray().Should().HaveCountLessThanOrEqualTo(2).And.OnlyContain(i => i!["kind"] == null);
            names.AddRange(page["items"]!.AsArray().Select(i => i.Str("metadata.name")!));
            next = page.Str("metadata.continue");
        }
        while (next is not null);

        names.Should().Equal("a", "b", "c", "d", "e", "kubernetes");
    }

    [Fact]
    public async Task Lists_filter_by_label_and_field_selectors_and_reject_unsupported_fields()
    {
        await using var emulator = await KubeEmulator.StartAsync();
        using var client = emulator.CreateHttpClient();
        emulator.Seed(Svc("a", "default", "web"), Svc("b", "default", "db"));

        var byLabel = await GetAsync(client, "/api/v1/services?labelSelector=" + Uri.EscapeDataString("tier notin (db),tier"));
        var byField = await GetAsync(client, "/api/v1/namespaces/default/services?fieldSelector=metadata.name%3Db");
        using var unsupported = await client.GetAsync(new Uri("/api/v1/services?fieldSelector=spec.selector%3Dx", UriKind.Relative));
        using var malformed = await client.GetAsync(new Uri("/api/v1/services?labelSelector=" + Uri.EscapeDataString("tier in (web"), UriKind.Relative));

        byLabel["items"]!.AsArray().Select(i => i.Str("metadata.name")).Should().Equal("a");
        byField["items"]!.AsArray().Select(i => i.Str("metadata.name")).Should().Equal("b");
        unsupported.StatusCode.Should().Be(System.Net.HttpStatusCode.BadRequest);
        (await StrictnessTests.ReadAsync(unsupported)).Str("message").Should().Be("field label not supported: spec.selector");
        malformed.StatusCode.Should().Be(System.Net.HttpStatusCode.BadRequest);
        using var badContinue = await client.GetAsync(new Uri("/api/v1/services?limit=1&continue=bm9wZQ%3D%3D", UriKind.Relative));
        badContinue.StatusCode.Should().Be(System.Net.HttpStatusCode.BadRequest);
    }

    private static string Svc(string name, string ns = "demo", string tier = "web", string? annotation = null)
    {
        var metadata = new JsonObject { ["name"] = name, ["namespace"] = ns, ["labels"] = new JsonObject { ["tier"] = tier } };
        if (annotation is not null)
        {
            metadata["annotations"] = new JsonObject { ["a"] = annotation };
        }

        return new JsonObject
        {
            ["kind"] = "Service", ["apiVersion"] = "v1", ["metadata"] = metadata,
            ["spec"] = new JsonObject { ["ports"] = new JsonArray(new JsonObject { ["port"] = 80 }) },
        }.ToJsonString();
    }

    private static async Task<JsonObject> GetAsync(HttpClient client, string pathAndQuery)
    {
        using var response = await client.GetAsync(new Uri(pathAndQuery, UriKind.Relative));
        response.EnsureSuccessStatusCode();
        return await StrictnessTests.ReadAsync(response);
    }

    private static async Task<long> ListVersionAsync(HttpClient client, string path) => long.Parse((await GetAsync(client, path)).Str("metadata.resourceVersion")!);

    private static async Task WaitUntilAsync(Func<bool> condition)
    {
        for (var deadline = DateTime.UtcNow.AddSeconds(10); !condition(); await Task.Delay(20))
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException("condition not met within 10 s");
            }
        }
    }
}
