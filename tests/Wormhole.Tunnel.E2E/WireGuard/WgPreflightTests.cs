using System.ComponentModel;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.WireGuard;

namespace Wormhole.Tunnel.E2E.WireGuard;

/// <summary>Preflight and key checks with a fake runner: no root needed.</summary>
public sealed class WgPreflightTests
{
    private static readonly Func<string, bool> NoKernelModuleButTun = p => p == WgPreflight.TunDevicePath;

    [Fact]
    public async Task Preflight_passes_when_everything_is_there()
    {
        var runner = new FakeRunner();

        (await WgPreflight.CheckAsync(runner, isPrivileged: true, NoKernelModuleButTun, CancellationToken.None)).Should().BeNull();
        runner.Calls.Should().Contain(["ip", "wg", "wireguard-go"]);
    }

    [Fact]
    public async Task Preflight_reports_not_root_first()
    {
        var message = await WgPreflight.CheckAsync(new FakeRunner(), isPrivileged: false, NoKernelModuleButTun, CancellationToken.None);

        message.Should().Contain("root");
    }

    [Theory]
    [InlineData("ip", "`ip`", "iproute2")]
    [InlineData("wg", "`wg`", "wireguard-tools")]
    [InlineData("wireguard-go", "wireguard-go", "kernel module")]
    public async Task Preflight_names_a_missing_tool(string missing, string named, string hint)
    {
        var runner = new FakeRunner(missing);

        var message = await WgPreflight.CheckAsync(runner, isPrivileged: true, NoKernelModuleButTun, CancellationToken.None);

        message.Should().Contain(named).And.Contain(hint);
        message!.Count(c => c == '.').Should().BeLessThanOrEqualTo(1, "it is one sentence");
    }

    [Fact]
    public async Task Preflight_treats_a_failing_tool_as_missing_as_ip_netns_exec_reports_it()
    {
        // `ip netns exec NS wg` exits 255 with "exec of "wg" failed" instead of throwing.
        var runner = new FakeRunner(exitCodes: new Dictionary<string, int> { ["wg"] = 255 });

        (await WgPreflight.CheckAsync(runner, isPrivileged: true, NoKernelModuleButTun, CancellationToken.None)).Should().Contain("`wg`");
    }

    [Fact]
    public async Task Preflight_needs_no_wireguard_go_with_the_kernel_module()
    {
        var runner = new FakeRunner("wireguard-go");

        (await WgPreflight.CheckAsync(runner, isPrivileged: true, p => p == "/sys/module/wireguard", CancellationToken.None)).Should().BeNull();
    }

    [Fact]
    public async Task Preflight_reports_a_missing_tun_device_for_wireguard_go()
    {
        var message = await WgPreflight.CheckAsync(new FakeRunner(), isPrivileged: true, _ => false, CancellationToken.None);

        message.Should().Contain("/dev/net/tun");
    }

    [Theory]
    [InlineData("eVX2N2F1zznyyI306V7fY9G23hb81gCwmFokDzRegBU=", true)]
    [InlineData("eVX2N2F1zznyyI306V7fY9G23hb81gCwmFokDzRegB=", false)]
    [InlineData("eVX2N2F1zznyyI306V7fY9G23hb81gCwmFokDzRegBUU", false)]
    [InlineData("eVX2N2F1zznyyI306V7fY9G23hb81gCwmFokDzReg*U=", false)]
    [InlineData("", false)]
    public void IsValidKey_accepts_only_32_bytes_of_base64(string key, bool valid) =>
        WgKeys.IsValidKey(key).Should().Be(valid);

    [Fact]
    public async Task Failing_tool_message_names_the_command_and_its_stderr()
    {
        var runner = new FakeRunner(exitCodes: new Dictionary<string, int> { ["wg"] = 1 }, stderr: "wg: something broke");

        var act = async () => await WgKeys.GenerateAsync(runner, CancellationToken.None);

        (await act.Should().ThrowAsync<WireGuardCommandException>()).Which.Message.Should().Contain("wg genkey").And.Contain("something broke");
    }

    private sealed class FakeRunner(string? missing = null, IDictionary<string, int>? exitCodes = null, string stderr = "") : IProcessRunner
    {
        public List<string> Calls { get; } = [];

        public Task<ProcessResult> RunAsync(string fileName, IReadOnlyList<string> arguments, string? standardInput = null, CancellationToken cancellationToken = default)
        {
            Calls.Add(fileName);
            if (fileName == missing)
            {
                throw new Win32Exception(2, $"An error occurred trying to start process '{fileName}'. No such file or directory");
            }

            return Task.FromResult(exitCodes?.TryGetValue(fileName, out var code) == true
                ? new ProcessResult(code, string.Empty, stderr)
                : new ProcessResult(0, string.Empty, string.Empty));
        }
    }
}
