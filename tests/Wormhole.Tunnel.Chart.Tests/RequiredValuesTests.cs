using Wormhole.Tunnel.Chart.Tests.Infrastructure;

namespace Wormhole.Tunnel.Chart.Tests;

/// <summary>A value the chart cannot guess stops the install with one sentence saying what to set.</summary>
public sealed class RequiredValuesTests
{
    [Fact]
    public async Task A_hub_without_server_wg_publicHost_fails_saying_what_to_set()
    {
        var result = await HelmChart.TryTemplateAsync("wormhole-server", "wormhole", "server.enabled=true");

        result.Succeeded.Should().BeFalse();
        result.StandardError.Should().Contain("Please set server.wg.publicHost").And.Contain("--set server.wg.publicHost=");
    }

    [Fact]
    public async Task A_spoke_without_client_name_fails_saying_what_to_set()
    {
        var result = await HelmChart.TryTemplateAsync("wormhole-client", "wormhole", "client.enabled=true", "client.serverDsn=http://hub.example.com:8080");

        result.Succeeded.Should().BeFalse();
        result.StandardError.Should().Contain("Please set client.name").And.Contain("--set client.name=");
    }

    [Fact]
    public async Task A_spoke_without_client_serverDsn_fails_saying_what_to_set()
    {
        var result = await HelmChart.TryTemplateAsync("wormhole-client", "wormhole", "client.enabled=true", "client.name=site-b");

        result.Succeeded.Should().BeFalse();
        result.StandardError.Should().Contain("Please set client.serverDsn").And.Contain("http://<server.wg.publicHost>:8080");
    }

    [Fact]
    public async Task Hub_and_spoke_in_one_release_fail_asking_for_separate_releases()
    {
        var result = await HelmChart.TryTemplateAsync("wormhole", "wormhole", [.. HelmChart.Server, .. HelmChart.Client]);

        result.Succeeded.Should().BeFalse();
        result.StandardError.Should().Contain("install the hub and each spoke as separate releases");
    }

    [Theory]
    [InlineData("client.name=Site_B", "/client/name")]
    [InlineData("peering.psk=short", "/peering/psk")]
    [InlineData("server.service.type=External", "/server/service/type")]
    [InlineData("logFormat=xml", "/logFormat")]
    [InlineData("server.wg.publicHots=typo.example.com", "publicHots")]
    public async Task The_values_schema_rejects_values_the_executables_would_refuse(string value, string path)
    {
        var result = await HelmChart.TryTemplateAsync("wormhole", "wormhole", [.. HelmChart.Client.Where(v => !v.StartsWith("networkPolicies", StringComparison.Ordinal)), value]);

        result.Succeeded.Should().BeFalse();
        result.StandardError.Should().Contain(path);
    }

    [Fact]
    public async Task With_neither_side_enabled_nothing_is_rendered_and_the_notes_say_what_to_enable()
    {
        var rendered = await HelmChart.TemplateAsync("wormhole", "wormhole");
        var notes = await HelmChart.NotesAsync("wormhole", "wormhole");

        rendered.Documents.Should().BeEmpty();
        notes.Should().Contain("set server.enabled=true").And.Contain("client.enabled=true");
    }
}
