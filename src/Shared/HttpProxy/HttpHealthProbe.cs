using System.Net;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Global;

namespace Wormhole.Tunnel.HttpProxy;

/// <summary>
/// The active health check of an HTTP global app's site: <c>GET &lt;health path&gt;</c> through the tunnel, answered
/// with a status from 200 to 399 within <see cref="GlobalSites.AttemptTimeout"/> (as a Kubernetes HTTP probe counts
/// it). Anything else marks the site down at once; <see cref="GlobalSites.RiseAfter"/> good answers in a row bring it
/// back — the same site state the proxy's passive checks and the TCP probes use. Probes reuse one keep-alive
/// connection per site, so a probe also notices a path that stopped carrying packets.
/// </summary>
public static class HttpHealthProbe
{
    private static readonly HttpMessageInvoker Client = new(new SocketsHttpHandler
    {
        UseProxy = false,
        AllowAutoRedirect = false,
        UseCookies = false,
        AutomaticDecompression = DecompressionMethods.None,
        ConnectTimeout = GlobalSites.AttemptTimeout,
        PooledConnectionIdleTimeout = TimeSpan.FromSeconds(30),
        ActivityHeadersPropagator = null,
    });

    public static async Task ProbeAsync(GlobalApp app, SiteState site, string path, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(GlobalSites.AttemptTimeout);
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, new Uri($"http://{AppAddress.Format(site.Site.Address.ToString(), site.Site.Port)}{path}"))
            {
                Version = HttpVersion.Version11,
                VersionPolicy = HttpVersionPolicy.RequestVersionOrLower,
            };
            request.Headers.UserAgent.ParseAdd("wormhole-health/1");
            using var response = await Client.SendAsync(request, timeout.Token);
            var status = (int)response.StatusCode;
            if (status is >= 200 and < 400)
            {
                site.Succeeded(app, $"GET {path} answered {status}");
            }
            else
            {
                site.Down(app, $"GET {path} answered {status}");
            }
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            site.Down(app, $"GET {path} got no answer within {GlobalSites.AttemptTimeout.TotalSeconds:0.#} s");
        }
        catch (HttpRequestException ex)
        {
            site.Down(app, $"GET {path} failed: {ex.HttpRequestError}");
        }
    }
}
