using System.Net;
using System.Net.Sockets;

namespace Wormhole.Tunnel.Global;

/// <summary>
/// Active health of global apps' sites: every <see cref="Interval"/> (jittered by up to a fifth either way, so many
/// consumers do not probe in step) a TCP connect to every site's tunnel listener, each bounded by
/// <see cref="GlobalSites.AttemptTimeout"/>. A refused or timed-out probe marks the site down at once; a down site
/// comes back after <see cref="GlobalSites.RiseAfter"/> successful probes in a row. A probe is a connect and a close:
/// the site's listener sees a connection that sends nothing. An HTTP app with a health path is probed with a GET of
/// that path instead (<see cref="HttpProxy.HttpHealthProbe"/>).
/// </summary>
public sealed class GlobalHealthProbe(GlobalSites sites, TimeProvider time)
{
    public static readonly TimeSpan Interval = TimeSpan.FromSeconds(1);

    public async Task RunAsync(CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            var jitter = (Random.Shared.NextDouble() * 0.4) - 0.2;
            await Task.Delay(Interval * (1 + jitter), time, cancellationToken);
            await ProbeAllAsync(cancellationToken);
        }
    }

    /// <summary>One round: every site of every global app, all at once.</summary>
    public Task ProbeAllAsync(CancellationToken cancellationToken) =>
        Task.WhenAll(sites.Apps.SelectMany(app => app.Sites.Select(site => ProbeAsync(app, site, cancellationToken))));

    private static async Task ProbeAsync(GlobalApp app, SiteState site, CancellationToken cancellationToken)
    {
        if (app.Listener?.Http is { HealthPath: { } path })
        {
            await HttpProxy.HttpHealthProbe.ProbeAsync(app, site, path, cancellationToken);
            return;
        }

        using var socket = new Socket(site.Site.Address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(GlobalSites.AttemptTimeout);
        try
        {
            await socket.ConnectAsync(new IPEndPoint(site.Site.Address, site.Site.Port), timeout.Token);
            site.Succeeded(app, "a probe connected");
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            site.Down(app, $"a probe timed out after {GlobalSites.AttemptTimeout.TotalSeconds:0.#} s");
        }
        catch (SocketException ex)
        {
            site.Down(app, $"a probe failed: {ex.SocketErrorCode}");
        }
    }
}
