namespace Wormhole.Tunnel.Chart.Tests.Infrastructure;

/// <summary>helm over the chart in helm/: template, lint and the NOTES of a client-side dry run.</summary>
public static class HelmChart
{
    /// <summary>A hub as the issue describes it: public host, NetworkPolicies, basic auth, a LoadBalancer.</summary>
    public static readonly string[] Server =
    [
        "server.enabled=true", "server.wg.publicHost=hub.example.com", "networkPolicies.enabled=true",
        "server.basicAuth.username=kajtek", "server.basicAuth.password=12345678", "server.service.type=LoadBalancer",
        "peering.psk=correct-horse-battery-staple",
    ];

    /// <summary>A hub as glothriel/wormhole's tests and dev setup install it: ClusterIP, in-cluster public host, debug.</summary>
    public static readonly string[] ServerInCluster =
    [
        "server.enabled=true", "server.wg.publicHost=wormhole-server.server.svc.cluster.local", "server.service.type=ClusterIP",
        "networkPolicies.enabled=true", "server.debug=true", "server.pvc.enabled=false",
    ];

    /// <summary>A spoke: name, hub URL, sync metadata.</summary>
    public static readonly string[] Client =
    [
        "client.enabled=true", "client.name=dev1", "client.serverDsn=http://wormhole-server.server.svc.cluster.local:8080",
        "client.syncMetadata.metadata_key=metadata_value_dev1", "client.syncMetadata.team=platform", "networkPolicies.enabled=true",
        "peering.psk=correct-horse-battery-staple",
    ];

    /// <summary>A spoke with the defaults of everything optional (no NetworkPolicies, no metadata, no metrics).</summary>
    public static readonly string[] ClientMinimal =
    [
        "client.enabled=true", "client.name=site-b", "client.serverDsn=http://hub.example.com:8080", "metrics.enabled=false",
    ];

    public static async Task<Manifests> TemplateAsync(string release, string ns, params string[] sets)
    {
        var result = await TryTemplateAsync(release, ns, sets);
        if (!result.Succeeded)
        {
            throw new InvalidOperationException($"helm template {release} failed: {result}");
        }

        return Manifests.Parse(result.StandardOutput);
    }

    public static Task<ProcessResult> TryTemplateAsync(string release, string ns, params string[] sets) =>
        Tools.RunAsync(Tools.Helm, ["template", release, Repository.Chart, "--namespace", ns, .. Sets(sets)]);

    public static Task<ProcessResult> LintAsync(params string[] sets) =>
        Tools.RunAsync(Tools.Helm, ["lint", "--strict", Repository.Chart, .. Sets(sets)]);

    /// <summary>The NOTES.txt a user sees after <c>helm install</c> (a client-side dry run needs no cluster).</summary>
    public static async Task<string> NotesAsync(string release, string ns, params string[] sets)
    {
        var output = await Tools.RunCheckedAsync(Tools.Helm, ["install", release, Repository.Chart, "--namespace", ns, "--dry-run=client", .. Sets(sets)]);
        var start = output.IndexOf("NOTES:", StringComparison.Ordinal);
        return start < 0 ? throw new InvalidOperationException("helm printed no NOTES:\n" + output) : output[start..];
    }

    private static IEnumerable<string> Sets(IEnumerable<string> sets) => sets.SelectMany(s => new[] { "--set", s });
}
