using Wormhole.Tunnel.Chart.Tests.Infrastructure;
using Wormhole.Tunnel.KubeEmulator;

namespace Wormhole.Tunnel.Chart.Tests;

/// <summary><c>kubectl apply -f</c> of the rendered chart into the Kubernetes API emulator, as a user would into a cluster.</summary>
public sealed class EmulatorApplyTests
{
    [Theory]
    [MemberData(nameof(RenderedSets.All), MemberType = typeof(RenderedSets))]
    public async Task Kubectl_apply_of_the_rendered_manifests_succeeds(string what, string role, string release, string ns, string[] values)
    {
        var m = await HelmChart.TemplateAsync(release, ns, values);
        await using var emulator = await KubeEmulator.KubeEmulator.StartAsync(new KubeEmulatorOptions());
        using var work = new TempDirectory();
        var kubeconfig = emulator.WriteKubeconfig(Path.Combine(work.Path, "kubeconfig"));
        var manifest = Path.Combine(work.Path, "rendered.yaml");
        await File.WriteAllTextAsync(manifest, m.Yaml);
        Task<ProcessResult> Kubectl(params string[] args) => Tools.RunAsync(Tools.Kubectl, ["--kubeconfig", kubeconfig, .. args]);

        (await Kubectl("create", "namespace", ns)).Succeeded.Should().BeTrue();
        var applied = await Kubectl("apply", "-f", manifest);
        var again = await Kubectl("apply", "-f", manifest);

        applied.Succeeded.Should().BeTrue($"the {what} ({role}) manifests should apply: {applied}");
        applied.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries).Should().HaveCount(m.Documents.Count)
            .And.OnlyContain(line => line.EndsWith(" created", StringComparison.Ordinal));
        again.Succeeded.Should().BeTrue($"applying again should be a no-op: {again}");
        foreach (var doc in m.Documents)
        {
            var kind = Manifests.Kind(doc).ToLowerInvariant();
            var get = Manifests.Namespace(doc) is { } docNs
                ? await Kubectl("get", kind, Manifests.Name(doc), "-n", docNs, "-o", "name")
                : await Kubectl("get", kind, Manifests.Name(doc), "-o", "name");
            get.Succeeded.Should().BeTrue($"{kind}/{Manifests.Name(doc)} should exist after apply: {get}");
        }
    }
}
