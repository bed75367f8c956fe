using Wormhole.Tunnel.Chart.Tests.Infrastructure;

namespace Wormhole.Tunnel.Chart.Tests;

/// <summary>The releases the schema, flags and apply tests render: (what, role, release, namespace, values).</summary>
public static class RenderedSets
{
    public static TheoryData<string, string, string, string, string[]> All => new()
    {
        { "hub", "server", "wormhole-server", "wormhole", HelmChart.Server },
        { "hub in cluster", "server", "server", "server", HelmChart.ServerInCluster },
        { "hub with every option", "server", "hub", "hub", [.. HelmChart.Server, "server.debug=true", "logFormat=json", "wireguard.mountTunDevice=true",
            "docker.pullSecrets[0]=regcred", "server.priorityClassName=high", "server.nodeSelector.kubernetes\\.io/os=linux",
            "server.tolerations[0].operator=Exists", "server.extraArgs[0]=--peer-ttl=2m", "server.wg.port=51821", "server.pvc.storageClassName=standard",
            "server.extraArgs[1]=--stuck-after=2m", "globalServices.enabled=true", "globalServices.priority.web={site-a,site-b}"] },
        { "hub with existing secrets", "server", "wormhole-server", "wormhole", [.. HelmChart.Server, "peering.existingSecret=hub-psk", "server.basicAuth.existingSecret=hub-admin"] },
        { "spoke", "client", "dev1", "dev1", HelmChart.Client },
        { "minimal spoke", "client", "wormhole-client", "wormhole", HelmChart.ClientMinimal },
        { "spoke with every option", "client", "client", "client", [.. HelmChart.Client, "client.debug=true", "logFormat=json", "client.pvc.enabled=false",
            "client.kubernetesGcGrace=30s", "client.extraArgs[0]=--peer-ttl=90s", "client.basicAuth.username=u", "client.basicAuth.password=p",
            "globalServices.enabled=true", "globalServices.priority.db={hub}"] },
    };
}
