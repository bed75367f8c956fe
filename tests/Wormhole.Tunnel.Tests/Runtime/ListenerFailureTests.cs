using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Metrics;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Proxy;
using Wormhole.Tunnel.Runtime;
using Wormhole.Tunnel.Sinks;
using Wormhole.Tunnel.Sources;
using Wormhole.Tunnel.Tests.Server;

namespace Wormhole.Tunnel.Tests.Runtime;

/// <summary>A local app whose port is taken by another process: real sockets, the real proxy table.</summary>
public class ListenerFailureTests
{
    [Fact]
    public async Task An_app_whose_port_is_taken_is_never_advertised_there_and_moves_to_the_next_port()
    {
        // Another process holds the first port of the range on our tunnel address.
        using var squatter = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        squatter.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        squatter.Listen();
        var taken = ((IPEndPoint)squatter.LocalEndPoint!).Port;
        // Ports near an ephemeral one may be in use by other tests' sockets too: the range leaves room for that.
        var range = new PortRange(taken, taken + 20);
        var signal = new ReconcileSignal();
        var local = new MutableLocalApps(signal);
        var metrics = new WormholeMetrics();
        await using var proxy = new ProxyTable(new ProxyOptions(), metrics, NullLogger<ProxyTable>.Instance, TimeProvider.System);
        var tunnel = new TunnelSource(signal);
        tunnel.SetAddress(IPAddress.Loopback);
        var reconciler = new Reconciler(
            new ReconcilerOptions("spoke1", TimeSpan.FromHours(1)) { LocalPorts = range },
            local, new RemoteAppStore(signal, TimeProvider.System), tunnel, [new ProxySink(proxy)], signal, TimeProvider.System, NullLogger<Reconciler>.Instance);
        local.Set([new LocalApp("web", "127.0.0.1", 9, 80)]);

        await reconciler.ReconcileOnceAsync(CancellationToken.None);

        reconciler.Current.Advertised.Should().BeEmpty("the app's listener could not be opened: it is not offered to peers");
        reconciler.Current.Problems.Should().ContainSingle(p => p.App == "web")
            .Which.Reason.Should().StartWith($"cannot listen on port {taken}:");

        for (var pass = 0; pass < 10 && reconciler.Current.Advertised.IsEmpty; pass++)
        {
            await reconciler.ReconcileOnceAsync(CancellationToken.None);
        }

        var advertised = reconciler.Current.Advertised.Should().ContainSingle().Subject;
        AppAddress.TryParse(advertised.Address, out var host, out var port).Should().BeTrue();
        host.Should().Be("127.0.0.1");
        port.Should().NotBe(taken).And.BeInRange(range.First, range.Last);
        reconciler.Current.Problems.Should().BeEmpty();
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(IPAddress.Loopback, port);
    }
}
