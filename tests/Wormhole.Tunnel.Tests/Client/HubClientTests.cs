using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging.Abstractions;
using Wormhole.Tunnel.Client;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.Pairing;
using Wormhole.Tunnel.Sync;
using Wormhole.Tunnel.Tests.Server;

namespace Wormhole.Tunnel.Tests.Client;

public class HubClientTests
{
    [Fact]
    public async Task A_refusal_body_from_the_hub_reaches_the_spokes_log_escaped_and_cut()
    {
        var servers = new List<WebApplication>();
        var forged = "nope\u001b[2K\n13:00:00.000 CRT Wormhole.Tunnel.Client.Spoke: forged line" + new string('x', 10_000);
        var app = WebHost.Create(new IPEndPoint(IPAddress.Loopback, 0), NullLoggerFactory.Instance, SyncCodec.MaxBodyBytes, a =>
        {
            a.MapPost("/pairing", () => Results.Text(forged, statusCode: StatusCodes.Status400BadRequest));
            a.MapPost("/sync", () => Results.Text(forged, statusCode: StatusCodes.Status400BadRequest));
        });
        var url = await LoopbackHost.StartAsync(app, servers);
        try
        {
            using var client = new HubClient(url, new PairingCodec(null));
            var pairing = await client.Invoking(c => c.PairAsync(new PairingRequest("spoke1", new PairingWireGuard(HubFixture.NewKey()), []), CancellationToken.None))
                .Should().ThrowAsync<HubCallException>();
            var sync = await client.Invoking(c => c.SyncAsync(url, SyncCodec.Encode("spoke1", null, []), null, CancellationToken.None))
                .Should().ThrowAsync<HubCallException>();
            foreach (var message in new[] { pairing.Which.Message, sync.Which.Message })
            {
                message.Should().NotContain("\n").And.NotContain("\u001b").And.Contain("nope\\u001B[2K\\n13:00:00.000 CRT");
                message.Length.Should().BeLessThan(500);
            }
        }
        finally
        {
            foreach (var server in servers)
            {
                await server.DisposeAsync();
            }
        }
    }
}
