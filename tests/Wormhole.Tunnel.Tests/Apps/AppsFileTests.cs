using System.Diagnostics;
using Microsoft.Extensions.Logging.Abstractions;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Runtime;
using Wormhole.Tunnel.Sources;
using Wormhole.Tunnel.Tests.Hosting;

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

    private const string Web = "apps:\n  - name: web\n    address: 127.0.0.1:8088\n";
    private const string Api = "apps:\n  - name: api\n    address: 127.0.0.1:9000\n";
    private const int Unreadable = 1202;
    private const int Invalid = 1201;

    [Fact]
    public async Task A_symlink_to_dev_zero_is_refused_at_once_keeps_the_previous_apps_and_the_loader_goes_on()
    {
        using var dir = new TempDir();
        var path = dir.File("apps.yaml");
        File.WriteAllText(path, Web);
        var log = new RecordingLog();
        var source = new AppsFileSource(path, new ReconcileSignal(), log.For<AppsFileSource>(), TimeProvider.System);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var run = source.RunAsync(cts.Token);
        await WaitUntil(() => source.Current.Count == 1);

        File.Delete(path);
        File.CreateSymbolicLink(path, "/dev/zero");
        await WaitUntil(() => log.WithEvent(Unreadable).Any());
        var allocatedBefore = GC.GetAllocatedBytesForCurrentThread();
        source.Load().Should().BeFalse();
        var allocated = GC.GetAllocatedBytesForCurrentThread() - allocatedBefore;

        allocated.Should().BeLessThan(256 * 1024, "the device is refused before anything is read from it");
        log.WithEvent(Unreadable)[0].Message.Should().Contain(path).And.Contain("character device").And.Contain("keeping the previous apps");
        source.Current.Select(a => a.Name).Should().Equal("web");
        run.IsCompleted.Should().BeFalse("the loader keeps running");

        File.Delete(path);
        File.WriteAllText(path, Api);
        await WaitUntil(() => source.Current.Select(a => a.Name).SequenceEqual(["api"]));
        await cts.CancelAsync();
        await run.ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
    }

    [Fact]
    public async Task A_fifo_is_refused_without_blocking_the_reader()
    {
        using var dir = new TempDir();
        var path = dir.File("apps.yaml");
        using (var mkfifo = Process.Start("mkfifo", [path]))
        {
            await mkfifo.WaitForExitAsync();
            mkfifo.ExitCode.Should().Be(0);
        }

        var log = new RecordingLog();
        var source = new AppsFileSource(path, new ReconcileSignal(), log.For<AppsFileSource>(), TimeProvider.System);

        var loaded = await Task.Run(source.Load).WaitAsync(TimeSpan.FromSeconds(10));

        loaded.Should().BeFalse();
        log.WithEvent(Unreadable).Should().ContainSingle().Which.Message.Should().Contain("a FIFO, not a regular file");
    }

    [Fact]
    public async Task A_configmap_mount_a_chain_of_symlinks_is_read_and_its_update_picked_up()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.File("..2026_12_03"));
        File.WriteAllText(dir.File("..2026_12_03/apps.yaml"), Web);
        File.CreateSymbolicLink(dir.File("..data"), "..2026_12_03/");
        File.CreateSymbolicLink(dir.File("apps.yaml"), "..data/apps.yaml");
        var source = new AppsFileSource(dir.File("apps.yaml"), new ReconcileSignal(), NullLogger<AppsFileSource>.Instance, TimeProvider.System);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var run = source.RunAsync(cts.Token);
        await WaitUntil(() => source.Current.Select(a => a.Name).SequenceEqual(["web"]));

        // The kubelet's update: a new timestamped folder, then ..data swapped to it with a rename.
        Directory.CreateDirectory(dir.File("..2026_12_04"));
        File.WriteAllText(dir.File("..2026_12_04/apps.yaml"), Api);
        File.CreateSymbolicLink(dir.File("..data_tmp"), "..2026_12_04/");
        using (var rename = Process.Start("mv", ["-T", dir.File("..data_tmp"), dir.File("..data")]))
        {
            await rename.WaitForExitAsync();
            rename.ExitCode.Should().Be(0);
        }

        await WaitUntil(() => source.Current.Select(a => a.Name).SequenceEqual(["api"]));
        await cts.CancelAsync();
        await run.ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
    }

    [Fact]
    public void A_file_up_to_the_cap_is_read_and_one_byte_more_is_refused()
    {
        using var dir = new TempDir();
        var path = dir.File("apps.yaml");
        var log = new RecordingLog();
        var source = new AppsFileSource(path, new ReconcileSignal(), log.For<AppsFileSource>(), TimeProvider.System);
        var padding = "#" + new string('x', AppsFileSource.MaxBytes - Web.Length - 2) + "\n";
        File.WriteAllText(path, padding + Web);
        new FileInfo(path).Length.Should().Be(AppsFileSource.MaxBytes);

        source.Load().Should().BeTrue();
        source.Current.Select(a => a.Name).Should().Equal("web");

        File.WriteAllText(path, "#" + padding + Api);
        source.Load().Should().BeFalse();
        source.Current.Select(a => a.Name).Should().Equal("web");
        log.WithEvent(Unreadable).Should().ContainSingle().Which.Message.Should().Contain($"larger than {AppsFileSource.MaxBytes} bytes");
    }

    [Fact]
    public void A_directory_in_place_of_the_file_is_refused()
    {
        using var dir = new TempDir();
        var path = dir.File("apps.yaml");
        Directory.CreateDirectory(path);
        var log = new RecordingLog();
        var source = new AppsFileSource(path, new ReconcileSignal(), log.For<AppsFileSource>(), TimeProvider.System);

        source.Load().Should().BeFalse();

        log.WithEvent(Unreadable).Should().ContainSingle().Which.Message.Should().Contain("a directory");
    }

    [Fact]
    public async Task A_problem_is_told_again_on_every_change_but_not_on_every_poll()
    {
        using var dir = new TempDir();
        var path = dir.File("apps.yaml");
        File.WriteAllText(path, Web);
        var log = new RecordingLog();
        var source = new AppsFileSource(path, new ReconcileSignal(), log.For<AppsFileSource>(), TimeProvider.System);
        source.Load().Should().BeTrue();

        File.WriteAllText(path, "apps: [ broken");
        source.Load().Should().BeFalse();
        source.Load().Should().BeFalse();
        source.Load().Should().BeFalse();
        log.WithEvent(Invalid).Should().ContainSingle("the same problem without a change in between is told once");

        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var run = source.RunAsync(cts.Token);
        File.WriteAllText(path, "apps: [ broken");
        await WaitUntil(() => log.WithEvent(Invalid).Count >= 2);
        File.Delete(path);
        File.CreateSymbolicLink(path, "/dev/zero");
        await WaitUntil(() => log.WithEvent(Unreadable).Count >= 1);
        File.Delete(path);
        File.WriteAllText(path, "apps: [ broken");
        await WaitUntil(() => log.WithEvent(Invalid).Count >= 3);

        source.Current.Select(a => a.Name).Should().Equal("web");
        await cts.CancelAsync();
        await run.ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
    }

    [Fact]
    public void A_reason_from_the_file_is_escaped_in_the_log()
    {
        using var dir = new TempDir();
        var path = dir.File("apps.yaml");
        File.WriteAllText(path, "apps:\n  - name: web\n    address: \"nowhere\\nWRN forged line\"\n");
        var log = new RecordingLog();
        var source = new AppsFileSource(path, new ReconcileSignal(), log.For<AppsFileSource>(), TimeProvider.System);

        source.Load().Should().BeFalse();

        log.WithEvent(Invalid).Should().ContainSingle().Which.Message.Should().NotContain("\n").And.Contain("\\n");
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

    private sealed class TempDir : IDisposable
    {
        private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("wh-apps-");

        public string File(string name) => Path.Combine(_dir.FullName, name);

        public void Dispose() => _dir.Delete(recursive: true);
    }
}
