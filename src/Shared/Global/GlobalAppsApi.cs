using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Kubernetes;

namespace Wormhole.Tunnel.Global;

public sealed record GlobalSiteView(
    [property: JsonPropertyName("peer")] string Peer,
    [property: JsonPropertyName("healthy")] bool Healthy,
    [property: JsonPropertyName("activeConnections")] int ActiveConnections);

public sealed record GlobalAppView(
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("address")] string Address,
    [property: JsonPropertyName("sites")] IReadOnlyList<GlobalSiteView> Sites);

[JsonSerializable(typeof(List<GlobalAppView>))]
internal sealed partial class GlobalJsonContext : JsonSerializerContext;

/// <summary><c>GET /api/global-apps/v1</c> on the admin port: every global app, where to reach it, its sites and their health.</summary>
public static class GlobalAppsApi
{
    /// <summary>The name of an app's generated Service: <c>global-&lt;app&gt;</c>, made valid as per-peer names are.</summary>
    public static string ServiceName(string app) => Sinks.GeneratedObjects.GlobalName(app);

    /// <param name="sites">Null when global services are off: the list is empty then.</param>
    /// <param name="kubernetesNamespace">With Kubernetes, the namespace of the generated Services (the address is the Service's); null without.</param>
    public static void MapGlobalApps(this IEndpointRouteBuilder routes, GlobalSites? sites, string? kubernetesNamespace) =>
        routes.MapGet("/api/global-apps/v1", () => Results.Json(sites is null ? [] : View(sites, kubernetesNamespace), GlobalJsonContext.Default.ListGlobalAppView));

    public static List<GlobalAppView> View(GlobalSites sites, string? kubernetesNamespace) =>
        [.. sites.Apps.Where(a => a.Listener is not null).Select(a => new GlobalAppView(
            a.Name,
            kubernetesNamespace is null
                ? AppAddress.Format("localhost", a.Listener!.Port)
                : $"{ServiceName(a.Name)}.{kubernetesNamespace}:{a.Listener!.OriginalPort}",
            [.. a.Sites.Select(s => new GlobalSiteView(s.Site.Peer, s.Healthy, s.ActiveConnections))]))];
}
