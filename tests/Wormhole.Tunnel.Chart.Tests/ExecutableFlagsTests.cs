using Wormhole.Tunnel.Chart.Tests.Infrastructure;

namespace Wormhole.Tunnel.Chart.Tests;

/// <summary>
/// Every flag the chart passes exists and is accepted: the real executable's argument parser runs over the rendered
/// arguments, with the environment the rendered Secret and ConfigMap give it, and <c>--check</c> (validate and exit).
/// </summary>
public sealed class ExecutableFlagsTests
{
    [Theory]
    [MemberData(nameof(RenderedSets.All), MemberType = typeof(RenderedSets))]
    public async Task The_executable_accepts_the_rendered_arguments_and_environment(string what, string role, string release, string ns, string[] values)
    {
        var m = await HelmChart.TemplateAsync(release, ns, values);
        var environment = m.ConfigEnvironment.ToDictionary(e => e.Key, e => (string?)e.Value);
        foreach (var env in m.Container["env"]?.AsArray() ?? [])
        {
            if (env!["value"] is { } value)
            {
                environment[env["name"]!.GetValue<string>()] = value.GetValue<string>();
            }
        }

        var result = await Tools.RunAsync(Executables.For(role), [.. m.Args, "--check"], environment, clearEnvironment: true);

        result.ExitCode.Should().Be(0, $"the {what} arguments {string.Join(' ', m.Args)} should be accepted: {result}");
        result.StandardOutput.Should().Contain("configuration OK").And.Contain($"Kubernetes namespace {ns}");
    }

    [Fact]
    public async Task The_check_catches_a_flag_the_executable_does_not_have()
    {
        var m = await HelmChart.TemplateAsync("wormhole-server", "wormhole", [.. HelmChart.Server, "server.extraArgs[0]=--no-such-flag"]);

        var result = await Tools.RunAsync(Executables.Server, [.. m.Args, "--check"], m.ConfigEnvironment.ToDictionary(e => e.Key, e => (string?)e.Value), clearEnvironment: true);

        result.ExitCode.Should().Be(2);
        result.StandardError.Should().Contain("--no-such-flag");
    }

    [Fact]
    public async Task The_check_catches_a_psk_the_executable_would_refuse()
    {
        var m = await HelmChart.TemplateAsync("wormhole-server", "wormhole", HelmChart.Server);
        var environment = m.ConfigEnvironment.ToDictionary(e => e.Key, e => (string?)e.Value);
        environment["INVITE_TOKEN"] = "short";

        var result = await Tools.RunAsync(Executables.Server, [.. m.Args, "--check"], environment, clearEnvironment: true);

        result.ExitCode.Should().Be(2, "the values schema demands 6 characters because the executable does");
        result.StandardError.Should().Contain("at least 6 characters");
    }
}
