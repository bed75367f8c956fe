using Wormhole.Tunnel.Chart.Tests.Infrastructure;

namespace Wormhole.Tunnel.Chart.Tests;

public sealed class ChartLintTests
{
    public static TheoryData<string, string[]> ValueSets => new()
    {
        { "defaults (nothing enabled)", [] },
        { "hub", HelmChart.Server },
        { "hub in cluster", HelmChart.ServerInCluster },
        { "spoke", HelmChart.Client },
        { "minimal spoke", HelmChart.ClientMinimal },
    };

    [Theory]
    [MemberData(nameof(ValueSets))]
    public async Task Helm_lint_strict_passes(string what, string[] values)
    {
        var result = await HelmChart.LintAsync(values);

        result.Succeeded.Should().BeTrue($"helm lint --strict of the {what} values should pass: {result}");
        result.StandardOutput.Should().Contain("0 chart(s) failed");
    }
}
