using Wormhole.Tunnel.Chart.Tests.Infrastructure;

namespace Wormhole.Tunnel.Chart.Tests;

/// <summary>Every rendered document against the Kubernetes schemas (kubernetes-models: <c>new Kind(doc).validate()</c>).</summary>
public sealed class SchemaValidationTests
{
    [Theory]
    [MemberData(nameof(RenderedSets.All), MemberType = typeof(RenderedSets))]
    public async Task Every_rendered_document_is_valid_against_the_kubernetes_schemas(string what, string role, string release, string ns, string[] values)
    {
        var m = await HelmChart.TemplateAsync(release, ns, values);

        var result = await SchemaValidator.ValidateAsync(m.Yaml);

        m.Deployment["metadata"]!["labels"]!["app.kubernetes.io/component"]!.GetValue<string>().Should().Be(role);
        result.Succeeded.Should().BeTrue($"the {what} documents should all be valid: {result.StandardOutput}{result.StandardError}");
        result.StandardOutput.Should().Contain($"{m.Documents.Count} documents valid");
    }

    [Fact]
    public async Task The_validator_reports_an_invalid_document()
    {
        const string yaml = """
            apiVersion: v1
            kind: Service
            metadata: {name: fine}
            spec: {ports: [{port: 80}]}
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: broken}
            spec: {ports: [{port: eighty}]}
            """;

        var result = await SchemaValidator.ValidateAsync(yaml);

        result.ExitCode.Should().Be(1);
        result.StandardOutput.Trim().Should().Be("1 Service/broken: data/spec/ports/0/port must be integer");
    }
}

/// <summary>schema/validate.js (node, kubernetes-models 4.5.1, js-yaml) over multi-document YAML on stdin.</summary>
public static class SchemaValidator
{
    public static Task<ProcessResult> ValidateAsync(string yaml)
    {
        var modules = Path.Combine(Repository.SchemaValidator, "node_modules", "kubernetes-models", "package.json");
        if (!File.Exists(modules))
        {
            throw new InvalidOperationException($"{modules} is missing: {Tools.InstallHint}.");
        }

        return Tools.RunAsync(Tools.Node, [Path.Combine(Repository.SchemaValidator, "validate.js")], input: yaml, workingDirectory: Repository.SchemaValidator);
    }
}
