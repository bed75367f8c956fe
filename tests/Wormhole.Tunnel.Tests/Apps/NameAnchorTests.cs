using Microsoft.Extensions.Logging.Abstractions;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.Kubernetes;
using Wormhole.Tunnel.WireGuard;

namespace Wormhole.Tunnel.Tests.Apps;

/// <summary>
/// Name checks on remote input match the whole string: a regex '$' also matches before a final newline, so
/// "spoke1\n" would pass as a DNS label and end up in names, labels and log lines.
/// </summary>
public sealed class NameAnchorTests
{
    [Theory]
    [InlineData("spoke1\n")]
    [InlineData("spoke1\r\n")]
    [InlineData("\nspoke1")]
    public void A_peer_name_with_a_newline_is_no_dns_label(string name)
    {
        Names.IsValidPeerName(name).Should().BeFalse();
    }

    [Fact]
    public void A_service_name_or_label_value_with_a_final_newline_is_invalid_and_made_valid()
    {
        KubeNames.IsValidServiceName("web\n").Should().BeFalse();
        KubeNames.IsValidLabelValue("web\n").Should().BeFalse();

        var objectName = KubeNames.ObjectName("spoke1", "web\n");
        objectName.Should().NotContain("\n");
        KubeNames.IsValidServiceName(objectName).Should().BeTrue(objectName);
        objectName.Should().NotBe(KubeNames.ObjectName("spoke1", "web"));
        KubeNames.LabelValue("web\n").Should().NotContain("\n").And.NotBe("web");
    }

    [Fact]
    public async Task An_interface_name_with_a_final_newline_is_refused_before_any_command_runs()
    {
        var runner = new NoCommands();
        await using var device = new WgToolsDevice(runner, NullLogger<WgToolsDevice>.Instance);

        var up = () => device.UpAsync(new WgInterfaceConfig("wg0\n", HubKey, "10.0.0.1/24", 51820, []), CancellationToken.None);

        await up.Should().ThrowAsync<ArgumentException>().WithMessage("*Interface name*");
        runner.Ran.Should().BeEmpty();
    }

    private static readonly string HubKey = Convert.ToBase64String(new byte[32].Select((_, i) => (byte)(i + 1)).ToArray());

    private sealed class NoCommands : IProcessRunner
    {
        public List<string> Ran { get; } = [];

        public Task<ProcessResult> RunAsync(string fileName, IReadOnlyList<string> arguments, string? standardInput = null, CancellationToken cancellationToken = default)
        {
            Ran.Add(fileName);
            return Task.FromResult(new ProcessResult(1, "", "not in this test"));
        }
    }
}
