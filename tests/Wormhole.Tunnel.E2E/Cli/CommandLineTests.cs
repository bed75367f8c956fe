using System.Diagnostics;
using Wormhole.Tunnel.E2E.Infrastructure;

namespace Wormhole.Tunnel.E2E.Cli;

/// <summary>The executables' command line, run as a user runs it.</summary>
public class CommandLineTests
{
    private static readonly string[] CommonFlags =
    [
        "--name", "--invite-token", "--kubernetes", "--kubernetes-namespace", "--kubernetes-labels", "--network-policies",
        "--kubeconfig", "--apps-file", "--state-dir", "--wg-interface", "--api-listen-address", "--metrics", "--metrics-port",
        "--proxy-engine",
    ];

    [Fact]
    public async Task Hub_help_lists_every_flag_of_the_design_with_its_default()
    {
        var (code, stdout, _) = await RunAsync(Executables.Server, "--help");
        code.Should().Be(0);
        foreach (var flag in CommonFlags.Concat(["--wg-internal-host", "--wg-subnet-mask", "--wg-public-host", "--wg-port", "--ext-server-listen-address", "--int-server-listen-port", "--basic-auth-username", "--basic-auth-password"]))
        {
            stdout.Should().Contain(flag + " ");
        }

        stdout.Should().Contain("[default: 10.188.0.1]").And.Contain("[default: 51820]").And.Contain("[default: 0.0.0.0:8080]").And.Contain("[default: /storage]");
    }

    [Fact]
    public async Task Spoke_help_lists_every_flag_of_the_design_with_its_default()
    {
        var (code, stdout, _) = await RunAsync(Executables.Client, "--help");
        code.Should().Be(0);
        foreach (var flag in CommonFlags.Concat(["--server", "--client-metadata"]))
        {
            stdout.Should().Contain(flag + " ");
        }

        stdout.Should().Contain("[default: http://localhost:8080]").And.Contain("[default: wg0]");
    }

    [Theory]
    [InlineData("client", "--server http://hub:8080", "--name")]
    [InlineData("client", "--name c1 --server not-a-url", "--server")]
    [InlineData("client", "--name c1 --client-metadata [1]", "--client-metadata")]
    [InlineData("client", "--name Bad_Name", "--name")]
    [InlineData("server", "--name hub", "--wg-public-host")]
    [InlineData("server", "--wg-public-host h --wg-port abc", "--wg-port")]
    [InlineData("server", "--wg-public-host h --wg-subnet-mask 31", "mask")]
    [InlineData("server", "--wg-public-host h --invite-token abc", "at least 6 characters")]
    [InlineData("server", "--wg-public-host h --kubernetes", "--kubernetes-namespace")]
    [InlineData("server", "--wg-public-host h --api-listen-address nowhere", "--api-listen-address")]
    [InlineData("server", "--wg-public-host h --peer-ttl soon", "--peer-ttl")]
    [InlineData("server", "--wg-public-host h --wg-interface this-name-is-too-long", "--wg-interface")]
    [InlineData("client", "--name c1 --proxy-engine fast", "--proxy-engine")]
    [InlineData("client", "--name c1 --log-format xml", "--log-format")]
    public async Task A_missing_or_invalid_flag_exits_non_zero_with_one_clear_sentence(string side, string arguments, string mentions)
    {
        var (code, stdout, stderr) = await RunAsync(side == "server" ? Executables.Server : Executables.Client, arguments.Split(' '));
        code.Should().Be(2);
        stdout.Should().BeEmpty("no help dump hides the message");
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        lines.Should().ContainSingle().Which.Should().Contain(mentions);
    }

    [Theory]
    [InlineData("sockets", "proxy engine sockets")]
    [InlineData("splice", "proxy engine splice")]
    [InlineData("auto", "proxy engine splice (auto)")]
    public async Task Check_reports_the_proxy_engine_in_use(string engine, string expected)
    {
        var (code, stdout, stderr) = await RunAsync(Executables.Client, "--name", "c1", "--proxy-engine", engine, "--check");

        code.Should().Be(0, stderr);
        stdout.Should().Contain(expected);
    }

    private static async Task<(int Code, string Stdout, string Stderr)> RunAsync(string exe, params string[] args)
    {
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await process.WaitForExitAsync(cts.Token);
        return (process.ExitCode, await stdout, await stderr);
    }
}
