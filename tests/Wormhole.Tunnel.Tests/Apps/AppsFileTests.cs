using Microsoft.Extensions.Logging.Abstractions;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Runtime;

namespace Wormhole.Tunnel.Tests.Apps;

public class AppsFileTests
{
    [Fact]
    public void Parses_names_and_addresses()
    {
        AppsFileSource.TryParse("""
            apps:
              - name: web
                address: 127.0.0.1:8088
              - name: db
                address: " db.internal:5432 "
            """, out var apps, out var error).Should().BeTrue(error);
        apps.Should().Equal(new LocalApp("web", "127.0.0.1", 8088, 8088), new LocalApp("db", "db.internal", 5432, 5432));
    }

    [Theory]
    [InlineData("")]
    [InlineData("apps:")]
    [InlineData("apps: []")]
    public void Empty_file_means_no_apps(string content)
    {
        AppsFileSource.TryParse(content, out var apps, out _).Should().BeTrue();
        apps.Should().BeEmpty();
    }

    [Theory]
    [InlineData("apps: [", "not valid YAML")]
    [InlineData("- a\n- b", "top level")]
    [InlineData("apps: 5", "must be a list")]
    [InlineData("apps:\n  - name: web\n    address: 127.0.0.1:http", "invalid 'address'")]
    [InlineData("apps:\n  - name: web\n    address: 127.0.0.1:70000", "invalid 'address'")]
    [InlineData("apps:\n  - name: ../x\n    address: 127.0.0.1:80", "no valid 'name'")]
    [InlineData("apps:\n  - name: web\n    address: a:1\n  - name: web\n    address: b:2", "listed twice")]
    public void Invalid_files_get_one_clear_reason(string content, string reason)
    {
        AppsFileSource.TryParse(content, out _, out var error).Should().BeFalse();
        error.Should().Contain(reason);
    }

    [Fact]
    public async Task A_change_on_disk_is_picked_up_and_an_invalid_edit_keeps_the_previous_apps()
    {
        var dir = Directory.CreateTempSubdirectory("wh-apps-");
        try
        {
            var path = Path.Combine(dir.FullName, "apps.yaml");
            await File.WriteAllTextAsync(path, "apps:\n  - name: web\n    address: 127.0.0.1:8088\n");
            var signal = new ReconcileSignal();
            var source = new AppsFileSource(path, signal, NullLogger<AppsFileSource>.Instance, TimeProvider.System);
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            var run = source.RunAsync(cts.Token);
            await WaitUntil(() => source.Current.Count == 1);

            await File.WriteAllTextAsync(path, "apps:\n  - name: web\n    address: 127.0.0.1:8088\n  - name: api\n    address: 127.0.0.1:9000\n");
            await WaitUntil(() => source.Current.Count == 2);

            await File.WriteAllTextAsync(path, "apps: [ broken");
            source.Load().Should().BeFalse();
            source.Current.Select(a => a.Name).Should().BeEquivalentTo("web", "api");

            await File.WriteAllTextAsync(path, "apps: []\n");
            await WaitUntil(() => source.Current.Count == 0);
            await cts.CancelAsync();
            await run.ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    private static async Task WaitUntil(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (!condition())
        {
            DateTime.UtcNow.Should().BeBefore(deadline, "the apps file change should be picked up");
            await Task.Delay(20);
        }
    }
}
