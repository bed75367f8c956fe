using Wormhole.Tunnel.E2E.Infrastructure;

namespace Wormhole.Tunnel.E2E.Kubernetes;

/// <summary>
/// Global services with Kubernetes: the hub runs with <c>--global-services</c> (off by default: the reference's behaviour,
/// which the other Kubernetes tests cover) and makes one <c>global-&lt;app&gt;</c> Service and NetworkPolicy per app name
/// next to the per-peer ones, annotated with its sites and their health.
/// </summary>
public class GlobalServiceTests
{
    private const string Ns = "wormhole";
    private const string Global = "global-nginx-nginx";
    private const string Sites = "wormhole.glothriel.github.com/global-sites";

    [RootFact]
    public async Task An_exposed_app_gets_a_global_service_that_carries_traffic_shows_its_sites_health_and_goes_with_the_app()
    {
        await using var k = await KubeLab.StartAsync(hubFlags: ["--global-services"]);
        await k.Client.KubectlAsync("annotate", "svc", "nginx", "-n", "nginx", "wormhole.glothriel.github.com/exposed=yes");

        await k.EventuallyServerServicesAsync(["client-nginx-nginx", Global], "the per-peer and the global Service exist");
        var service = (await k.Server.GetAsync("svc", Ns, Global))!;
        service["metadata"]!["annotations"]![Sites]!.GetValue<string>().Should().Be("client=healthy");
        service["metadata"]!["labels"]!["wormhole.glothriel.github.com/exposed-app"]!.GetValue<string>().Should().Be("nginx-nginx");
        service["spec"]!["ports"]![0]!["port"]!.GetValue<int>().Should().Be(k.ClientBackendPort, "the global Service shows the app's own port");
        var targetPort = service["spec"]!["ports"]![0]!["targetPort"]!.GetValue<int>();
        (await k.Server.GetAsync("networkpolicy", Ns, Global))!["spec"]!["ingress"]![0]!["ports"]![0]!["port"]!.GetValue<int>().Should().Be(targetPort);
        (await TunnelLab.FetchAsync(k.Lab.Hub, targetPort)).Should().Be("Hello world from the client cluster!");

        k.ClientProcess.Kill();
        await TunnelLab.EventuallyAsync(
            async () => (string?)(await k.Server.GetAsync("svc", Ns, Global))!["metadata"]!["annotations"]![Sites] == "client=down",
            "the annotation shows the killed spoke's site down");

        k.ClientProcess = await k.Lab.StartSpokeAsync(k.Lab.Network["client"], extra: k.Client.Flags("application=wormhole-client", true), appsFile: false, waitForPairing: false);
        await TunnelLab.EventuallyAsync(
            async () => (string?)(await k.Server.GetAsync("svc", Ns, Global))!["metadata"]!["annotations"]![Sites] == "client=healthy",
            "the annotation shows the site healthy again");

        await k.Client.KubectlAsync("annotate", "svc", "nginx", "-n", "nginx", "wormhole.glothriel.github.com/exposed-");
        await k.EventuallyServerServicesAsync([], "both Services go with the app");
        (await k.Server.GetAsync("networkpolicy", Ns, Global)).Should().BeNull();
    }
}
