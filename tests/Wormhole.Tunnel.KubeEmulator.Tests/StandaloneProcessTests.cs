using System.Diagnostics;
using System.Text.RegularExpressions;

namespace Wormhole.Tunnel.KubeEmulator.Tests;

/// <summary>The <c>kube-emulator</c> executable as end-to-end tests run it: a separate process, a ready line, SIGTERM to stop.</summary>
public sealed partial class StandaloneProcessTests
{
    [KubectlFact]
    public async Task The_process_prints_ready_with_its_url_serves_kubectl_and_exits_cleanly_on_SIGTERM()
    {
        var directory = Path.Combine(Path.GetTempPath(), "kube-emulator-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(directory);
        var kubeconfig = Path.Combine(directory, "kubeconfig");
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var arg in new[] { Path.Combine(AppContext.BaseDirectory, "kube-emulator.dll"), "--listen", "127.0.0.1:0", "--token", "standalone-token", "--kubeconfig-out", kubeconfig })
        {
            start.ArgumentList.Add(arg);
        }

        using var process = Process.Start(start)!;
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            var ready = await process.StandardOutput.ReadLineAsync(timeout.Token);

            ready.Should().MatchRegex(@"^ready https://127\.0\.0\.1:\d+$");
            File.ReadAllText(kubeconfig).Should().Contain("server: " + ready![6..]).And.Contain("token: \"standalone-token\"").And.Contain("current-context: emulator");
            var namespaces = (await Kubectl.RunAsync(kubeconfig, directory, null, "get", "namespaces")).ShouldSucceed().Output;
            namespaces.Should().MatchRegex(@"\ndefault\s+Active");
            (await Kubectl.RunAsync(kubeconfig, directory, null, "create", "namespace", "from-kubectl")).ShouldSucceed();

            using var kill = Process.Start("kill", ["-TERM", process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
            await process.WaitForExitAsync(timeout.Token);
            process.ExitCode.Should().Be(0, await process.StandardError.ReadToEndAsync());
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
            }

            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public async Task The_process_refuses_to_start_without_a_token()
    {
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet") { RedirectStandardError = true, RedirectStandardOutput = true };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "kube-emulator.dll"));
        start.ArgumentList.Add("--listen");
        start.ArgumentList.Add("127.0.0.1:0");
        start.Environment.Remove("KUBE_EMULATOR_TOKEN");

        using var process = Process.Start(start)!;
        var error = await process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();

        process.ExitCode.Should().Be(2);
        UsageRegex().IsMatch(error).Should().BeTrue(error);
    }

    [GeneratedRegex("^usage: kube-emulator --listen")]
    private static partial Regex UsageRegex();
}
