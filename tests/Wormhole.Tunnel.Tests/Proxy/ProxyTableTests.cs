using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Wormhole.Tunnel.Global;
using Wormhole.Tunnel.Metrics;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Proxy;
using Wormhole.Tunnel.Tests.Metrics;
using static Wormhole.Tunnel.Tests.Proxy.SocketTestKit;

namespace Wormhole.Tunnel.Tests.Proxy;

/// <summary>Every behaviour, once per engine: the splice event loops (Linux) and .NET's async sockets.</summary>
public sealed class SpliceProxyTableTests : ProxyTableTests
{
    protected override ProxyEngine Engine => ProxyEngine.Splice;
}

public sealed class SocketsProxyTableTests : ProxyTableTests
{
    protected override ProxyEngine Engine => ProxyEngine.Sockets;
}

public abstract class ProxyTableTests : IAsyncLifetime, IDisposable
{
    private readonly List<IAsyncDisposable> _owned = [];
    private readonly WormholeMetrics _metrics = new();

    protected abstract ProxyEngine Engine { get; }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        for (var i = _owned.Count - 1; i >= 0; i--)
        {
            await _owned[i].DisposeAsync().AsTask().WaitAsync(Patience);
        }
    }

    public void Dispose() => GC.SuppressFinalize(this);

    [Fact]
    public async Task Bytes_flow_both_ways_through_a_local_listener()
    {
        var echo = Own(TargetServer.Echo());
        var port = await ListenAsync(Local(echo.Port));

        using var client = await ConnectAsync(port);
        await client.SendAsync("ping");

        (await client.ReadTextAsync(4)).Should().Be("ping");
    }

    [Fact]
    public async Task A_one_mebibyte_payload_arrives_intact_in_both_directions()
    {
        var echo = Own(TargetServer.Echo());
        var port = await ListenAsync(Local(echo.Port));
        var payload = new byte[1024 * 1024];
        new Random(42).NextBytes(payload);

        using var client = await ConnectAsync(port);
        var sending = Task.Run(async () =>
        {
            await client.SendAllAsync(payload);
            client.Shutdown(SocketShutdown.Send);
        });
        var echoed = await client.ReadToEndAsync().WaitAsync(Patience);
        await sending.WaitAsync(Patience);

        echoed.Length.Should().Be(payload.Length);
        echoed.AsSpan().SequenceEqual(payload).Should().BeTrue("the echo must be byte for byte what was sent");
    }

    [Fact]
    public async Task Half_close_from_client_still_delivers_the_upstream_reply()
    {
        var target = Own(new TargetServer(async socket =>
        {
            var request = await socket.ReadToEndAsync(); // only ends once the client's FIN came through
            await socket.SendAsync($"got {request.Length} bytes");
            socket.Shutdown(SocketShutdown.Send);
        }));
        var port = await ListenAsync(Local(target.Port));

        using var client = await ConnectAsync(port);
        await client.SendAsync("twelve bytes");
        client.Shutdown(SocketShutdown.Send);

        (await client.ReadTextToEndAsync()).Should().Be("got 12 bytes");
    }

    [Fact]
    public async Task Half_close_from_upstream_still_lets_the_client_send()
    {
        var heardAfterFin = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        var target = Own(new TargetServer(async socket =>
        {
            await socket.SendAsync("banner");
            socket.Shutdown(SocketShutdown.Send);
            heardAfterFin.SetResult(await socket.ReadTextToEndAsync());
        }));
        var port = await ListenAsync(Local(target.Port));

        using var client = await ConnectAsync(port);
        (await client.ReadTextToEndAsync()).Should().Be("banner", "the client sees the banner and then EOF");
        await client.SendAsync("still talking");
        client.Shutdown(SocketShutdown.Send);

        (await heardAfterFin.Task.WaitAsync(Patience)).Should().Be("still talking");
    }

    [Fact]
    public async Task Unreachable_upstream_closes_the_client_quickly()
    {
        var port = await ListenAsync(Local(FreePort()));

        (await ConnectAndAwaitCloseAsync(port).WaitAsync(TimeSpan.FromSeconds(2))).Should().Be(0);
    }

    [Fact]
    public async Task A_target_that_refuses_is_passed_on_as_the_end_of_the_stream_after_a_successful_connect()
    {
        var port = await ListenAsync(Local(FreePort()));

        for (var i = 0; i < 20; i++)
        {
            // The proxy may learn of the refusal before the client has seen its own connect complete: a FIN then still
            // lets the connect succeed, where a reset would fail it.
            using var client = await ConnectAsync(port);
            (await client.ReadToEndAsync().WaitAsync(Patience)).Should().BeEmpty();
        }
    }

    [Fact]
    public async Task An_upstream_that_never_answers_is_given_up_after_the_connect_timeout_and_the_listener_keeps_serving()
    {
        // A target whose accept queue is full: the kernel drops further SYNs, so a connect to it neither succeeds nor fails.
        using var silent = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        silent.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        silent.Listen(0);
        var silentPort = ((IPEndPoint)silent.LocalEndPoint!).Port;
        var queued = new List<Socket>();
        try
        {
            await FillAcceptQueueAsync(silentPort, queued);
            var echo = Own(TargetServer.Echo());
            var table = NewTable(new ProxyOptions { ConnectTimeout = TimeSpan.FromMilliseconds(300) });
            var stuck = Local(silentPort);
            var working = Local(echo.Port);
            (await table.ApplyAsync([stuck, working], CancellationToken.None)).Should().BeEmpty();

            var started = System.Diagnostics.Stopwatch.StartNew();
            (await ConnectAndAwaitCloseAsync(stuck.Port).WaitAsync(Patience)).Should().Be(0);
            started.Elapsed.Should().BeGreaterThanOrEqualTo(TimeSpan.FromMilliseconds(250), "it waited for the connect, not less");

            using var client = await ConnectAsync(working.Port);
            await client.SendAsync("still here");
            client.Shutdown(SocketShutdown.Send);
            (await client.ReadTextToEndAsync()).Should().Be("still here");
        }
        finally
        {
            queued.ForEach(s => s.Dispose());
        }
    }

    [Fact]
    public async Task A_global_listener_moves_a_connection_to_the_next_site_when_one_refuses_and_the_client_sees_no_error()
    {
        var b = Own(TargetServer.Saying("from b"));
        var (_, web) = await GlobalWebAsync(("a", FreePort()), ("b", b.Port), priority: true);
        var port = await ListenAsync(Global(web));

        for (var i = 0; i < 5; i++)
        {
            using var client = await ConnectAsync(port);
            (await client.ReadTextToEndAsync().WaitAsync(Patience)).Should().Be("from b", "attempt {0} went to the site that answers", i);
        }

        web.Sites.Single(s => s.Site.Peer == "a").Healthy.Should().BeFalse("the refused connect marked it down at once");
        await Until(() => web.Sites.Single(s => s.Site.Peer == "b").ActiveConnections == 0, "every closed connection was reported");
    }

    [Fact]
    public async Task A_global_listener_gives_a_silent_site_only_the_attempt_timeout_then_connects_to_the_next()
    {
        using var silent = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        silent.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        silent.Listen(0);
        var queued = new List<Socket>();
        try
        {
            await FillAcceptQueueAsync(((IPEndPoint)silent.LocalEndPoint!).Port, queued);
            var b = Own(TargetServer.Echo());
            var (_, web) = await GlobalWebAsync(("a", ((IPEndPoint)silent.LocalEndPoint!).Port), ("b", b.Port), priority: true);
            var port = await ListenAsync(Global(web));

            var started = System.Diagnostics.Stopwatch.StartNew();
            using var client = await ConnectAsync(port);
            await client.SendAsync("sent while the first site was tried");
            client.Shutdown(SocketShutdown.Send);
            (await client.ReadTextToEndAsync().WaitAsync(Patience)).Should().Be("sent while the first site was tried");
            started.Elapsed.Should().BeGreaterThanOrEqualTo(GlobalSites.AttemptTimeout - TimeSpan.FromMilliseconds(50), "the preferred site had its attempt");
            web.Sites.Single(s => s.Site.Peer == "a").Healthy.Should().BeFalse("the timed-out connect marked it down");

            started.Restart();
            using var next = await ConnectAsync(port);
            await next.SendAsync("x");
            (await next.ReadTextAsync(1).WaitAsync(Patience)).Should().Be("x");
            started.Elapsed.Should().BeLessThan(GlobalSites.AttemptTimeout, "a down site is not tried while another is healthy");
        }
        finally
        {
            queued.ForEach(s => s.Dispose());
        }
    }

    /// <summary>A global app "web" with the given sites on loopback (in that priority order when <paramref name="priority"/>).</summary>
    private static async Task<(GlobalSites Sites, GlobalApp Web)> GlobalWebAsync((string Peer, int Port) first, (string Peer, int Port) second, bool priority = false)
    {
        var sites = new GlobalSites(TimeProvider.System, NullLogger<GlobalSites>.Instance);
        var listener = new GlobalListener("web", 0, 80,
            [new GlobalSite(first.Peer, IPAddress.Loopback, first.Port, 0), new GlobalSite(second.Peer, IPAddress.Loopback, second.Port, priority ? 1 : 0)]);
        await sites.ApplyAsync(Plan.Empty with { GlobalListeners = [listener] }, CancellationToken.None);
        return (sites, sites.Find("web")!);
    }

    private static ListenerSpec Global(GlobalApp web) =>
        new(ListenerKind.Global, web.Name, IPAddress.Loopback, FreePort(), web.Sites[0].Upstream.Host, web.Sites[0].Upstream.Port, Picker: web);

    private static async Task Until(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + Patience;
        while (!condition())
        {
            DateTime.UtcNow.Should().BeBefore(deadline, what);
            await Task.Delay(10);
        }
    }

    /// <summary>Connects to a listener that never accepts until one more connect would not complete.</summary>
    private static async Task FillAcceptQueueAsync(int port, List<Socket> queued)
    {
        while (true)
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            queued.Add(socket);
            var connecting = socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port));
            if (await Task.WhenAny(connecting, Task.Delay(TimeSpan.FromMilliseconds(200))) != connecting)
            {
                return; // this one hangs in SYN_SENT: the queue is full
            }

            await connecting;
            queued.Count.Should().BeLessThan(20, "a listener with backlog 0 queues only a few connections");
        }
    }

    [Fact]
    public async Task Bytes_connect_times_and_upstream_failures_are_counted_per_app_kind_and_direction()
    {
        var echo = Own(TargetServer.Echo());
        var working = await ListenAsync(Local(echo.Port, app: "web"));
        var broken = await ListenAsync(new ListenerSpec(ListenerKind.Remote, "db", IPAddress.Loopback, FreePort(), "127.0.0.1", FreePort()));

        using (var client = await ConnectAsync(working))
        {
            await client.SendAsync("hello");
            client.Shutdown(SocketShutdown.Send);
            (await client.ReadTextToEndAsync()).Should().Be("hello");
        }

        await ConnectAndAwaitCloseAsync(broken).WaitAsync(Patience);

        // Recorded as each connection ends, on the proxy's threads.
        var text = await MetricsTestMeter.ScrapeUntilAsync(_metrics, t =>
            MetricsTestMeter.Series(t, "wormhole_proxy_upstream_failures_total").ContainsKey("{app=\"db\",kind=\"remote\"}")
            && MetricsTestMeter.Series(t, "wormhole_proxy_connections_active").GetValueOrDefault("{app=\"web\",kind=\"local\"}", -1) == 0);
        var bytes = MetricsTestMeter.Series(text, "wormhole_proxy_bytes_total");
        bytes["{app=\"web\",kind=\"local\",direction=\"upstream\"}"].Should().Be(5);
        bytes["{app=\"web\",kind=\"local\",direction=\"downstream\"}"].Should().Be(5);
        MetricsTestMeter.Series(text, "wormhole_proxy_upstream_failures_total")["{app=\"db\",kind=\"remote\"}"].Should().Be(1);
        MetricsTestMeter.Series(text, "wormhole_proxy_connections_total")["{app=\"web\",kind=\"local\"}"].Should().Be(1);
        var connects = MetricsTestMeter.Series(text, "wormhole_proxy_upstream_connect_duration_seconds_count");
        connects["{app=\"web\",kind=\"local\"}"].Should().Be(1, "the successful connect is timed");
        connects.GetValueOrDefault("{app=\"db\",kind=\"remote\"}").Should().Be(0, "a refused connect is a failure, not a connect time");
    }

    [Fact]
    public async Task Removing_a_listener_releases_its_port_and_closes_its_connections_but_spares_the_others()
    {
        var echo = Own(TargetServer.Echo());
        var table = NewTable();
        var removed = Local(echo.Port, port: FreePort(), app: "gone");
        var kept = Local(echo.Port, port: FreePort(), app: "kept");
        (await table.ApplyAsync([removed, kept], CancellationToken.None)).Should().BeEmpty();
        using var doomed = await ConnectAsync(removed.Port);
        using var survivor = await ConnectAsync(kept.Port);
        await doomed.SendAsync("a");
        await survivor.SendAsync("b");
        (await doomed.ReadTextAsync(1)).Should().Be("a");
        (await survivor.ReadTextAsync(1)).Should().Be("b");

        (await table.ApplyAsync([kept], CancellationToken.None)).Should().BeEmpty();

        table.Active.Should().Equal(kept);
        await doomed.ClosedAsync().WaitAsync(Patience);
        (await NewTable().ApplyAsync([removed], CancellationToken.None)).Should().BeEmpty("the port was released");
        await survivor.SendAsync("still here");
        (await survivor.ReadTextAsync(10)).Should().Be("still here");
    }

    [Fact]
    public async Task Changing_the_target_sends_new_connections_to_the_new_target()
    {
        var first = Own(TargetServer.Saying("first"));
        var second = Own(TargetServer.Saying("second"));
        var table = NewTable();
        var spec = Local(first.Port);
        (await table.ApplyAsync([spec], CancellationToken.None)).Should().BeEmpty();
        using (var before = await ConnectAsync(spec.Port))
        {
            (await before.ReadTextToEndAsync()).Should().Be("first");
        }

        var retargeted = spec with { TargetPort = second.Port };
        (await table.ApplyAsync([retargeted], CancellationToken.None)).Should().BeEmpty();

        using var after = await ConnectAsync(spec.Port);
        (await after.ReadTextToEndAsync()).Should().Be("second");
        table.Active.Should().Equal(retargeted);
    }

    [Fact]
    public async Task An_idle_connection_is_closed_after_the_idle_timeout()
    {
        var echo = Own(TargetServer.Echo());
        // Long enough for the round trip below on a busy machine (it counts as activity only once it is done).
        var port = await ListenAsync(Local(echo.Port), new ProxyOptions { IdleTimeout = TimeSpan.FromSeconds(1) });
        using var client = await ConnectAsync(port);
        await client.SendAsync("hi");
        (await client.ReadTextAsync(2)).Should().Be("hi");

        (await client.ClosedAsync().WaitAsync(Patience)).Should().Be(0, "nothing more was sent, so nothing more arrives");
    }

    [Fact]
    public async Task A_remote_listener_refuses_connections_to_its_refused_local_address_but_serves_other_addresses()
    {
        var target = Own(TargetServer.Saying("reached"));
        var spec = new ListenerSpec(ListenerKind.Remote, "app", IPAddress.Any, FreePort(), "127.0.0.1", target.Port, RefusedLocalAddress: IPAddress.Loopback);
        await ListenAsync(spec);

        (await ConnectAndAwaitCloseAsync(spec.Port, IPAddress.Loopback).WaitAsync(Patience)).Should().Be(0);

        using var accepted = await ConnectAsync(spec.Port, IPAddress.Parse("127.0.0.2"));
        (await accepted.ReadTextToEndAsync()).Should().Be("reached");
        target.Accepted.Should().Be(1, "the refused connection never reached the target");
    }

    [Fact]
    public async Task A_port_already_in_use_is_reported_and_the_other_listeners_still_bind()
    {
        var echo = Own(TargetServer.Echo());
        using var squatter = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        squatter.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        squatter.Listen();
        var taken = Local(echo.Port, port: ((IPEndPoint)squatter.LocalEndPoint!).Port, app: "taken");
        var free = Local(echo.Port, app: "free");
        var table = NewTable();

        var failures = await table.ApplyAsync([taken, free], CancellationToken.None);

        failures.Should().ContainSingle().Which.Spec.Should().Be(taken);
        failures[0].Reason.Should().Contain("AddressAlreadyInUse");
        table.Active.Should().Equal(free);
        using var client = await ConnectAsync(free.Port);
        await client.SendAsync("ok");
        (await client.ReadTextAsync(2)).Should().Be("ok");
    }

    [Fact]
    public async Task A_port_held_by_another_proxy_table_is_reported_as_in_use_rather_than_shared()
    {
        var echo = Own(TargetServer.Echo());
        var spec = Local(echo.Port);
        (await NewTable().ApplyAsync([spec], CancellationToken.None)).Should().BeEmpty();

        var failures = await NewTable().ApplyAsync([spec], CancellationToken.None);

        failures.Should().ContainSingle().Which.Reason.Should().Contain("AddressAlreadyInUse");
    }

    [Fact]
    public async Task A_port_held_by_a_socket_with_SO_REUSEPORT_is_reported_as_in_use_rather_than_shared()
    {
        // The same user may share a port between sockets that all set SO_REUSEPORT; the proxy's listener must not join them.
        var echo = Own(TargetServer.Echo());
        using var squatter = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        SetReusePort(squatter);
        squatter.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        squatter.Listen();
        var spec = Local(echo.Port, port: ((IPEndPoint)squatter.LocalEndPoint!).Port);

        var failures = await NewTable().ApplyAsync([spec], CancellationToken.None);

        failures.Should().ContainSingle().Which.Reason.Should().Contain("AddressAlreadyInUse");
    }

    [Fact]
    public async Task A_socket_that_joins_the_port_with_SO_REUSEPORT_later_gets_none_of_its_connections()
    {
        // The same user may add a socket with SO_REUSEPORT to a port whose listeners set it too (the splice engine's do,
        // one per event loop): its bind succeeds, but no connection may go to it.
        var echo = Own(TargetServer.Echo());
        var port = await ListenAsync(Local(echo.Port));
        using var joiner = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        SetReusePort(joiner);
        var joined = true;
        try
        {
            joiner.Bind(new IPEndPoint(IPAddress.Loopback, port));
            joiner.Listen();
        }
        catch (SocketException ex) when (ex.SocketErrorCode == SocketError.AddressAlreadyInUse)
        {
            joined = false; // the sockets engine's listener does not share its port at all
        }

        for (var i = 0; i < 40; i++)
        {
            using var client = await ConnectAsync(port);
            await client.SendAsync($"n{i:D2}");
            (await client.ReadTextAsync(3)).Should().Be($"n{i:D2}", "every connection reaches the proxy");
        }

        if (joined)
        {
            joiner.Poll(0, SelectMode.SelectRead).Should().BeFalse("no connection may wait in the joiner's queue");
        }
    }

    /// <summary>SO_REUSEADDR and SO_REUSEPORT, as a process that wants to share a port sets them.</summary>
    private static void SetReusePort(Socket socket)
    {
        socket.SetRawSocketOption(1, 2, BitConverter.GetBytes(1)); // SOL_SOCKET, SO_REUSEADDR
        socket.SetRawSocketOption(1, 15, BitConverter.GetBytes(1)); // SOL_SOCKET, SO_REUSEPORT
    }

    [Fact]
    public async Task Removing_a_listener_closes_its_connections_on_every_event_loop()
    {
        var echo = Own(TargetServer.Echo());
        var table = NewTable();
        var spec = Local(echo.Port);
        (await table.ApplyAsync([spec], CancellationToken.None)).Should().BeEmpty();
        // Connections opened at once and then one at a time, so each loop is likely to have accepted some.
        var clients = new List<Socket>();
        clients.AddRange(await Task.WhenAll(Enumerable.Range(0, 16).Select(_ => ConnectAsync(spec.Port))));
        for (var i = 0; i < 16; i++)
        {
            clients.Add(await ConnectAsync(spec.Port));
        }

        try
        {
            foreach (var client in clients)
            {
                await client.SendAsync("x");
                (await client.ReadTextAsync(1)).Should().Be("x");
            }

            (await table.ApplyAsync([], CancellationToken.None)).Should().BeEmpty();

            await Task.WhenAll(clients.Select(c => c.ClosedAsync())).WaitAsync(Patience);
            (await NewTable().ApplyAsync([spec], CancellationToken.None)).Should().BeEmpty("the port was released");
        }
        finally
        {
            clients.ForEach(c => c.Dispose());
        }
    }

    [Fact]
    public async Task A_target_host_name_is_resolved_for_each_connection()
    {
        var target = Own(TargetServer.Saying("by name"));
        var port = await ListenAsync(Local(target.Port, host: "localhost"));

        for (var i = 0; i < 2; i++)
        {
            using var client = await ConnectAsync(port);
            (await client.ReadTextToEndAsync()).Should().Be("by name");
        }

        target.Accepted.Should().Be(2);
    }

    [Fact]
    public async Task A_reset_from_the_client_reaches_the_target_as_a_reset()
    {
        var targetSaw = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        var connected = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var target = Own(new TargetServer(async socket =>
        {
            connected.SetResult();
            try
            {
                await socket.ReadToEndAsync();
                targetSaw.SetResult("FIN");
            }
            catch (SocketException ex)
            {
                targetSaw.SetResult(ex.SocketErrorCode.ToString());
            }
        }));
        var port = await ListenAsync(Local(target.Port));
        var client = await ConnectAsync(port);
        await client.SendAsync("x");
        await connected.Task.WaitAsync(Patience);

        client.LingerState = new LingerOption(true, 0);
        client.Dispose(); // RST

        (await targetSaw.Task.WaitAsync(Patience)).Should().Be(nameof(SocketError.ConnectionReset));
    }

    [Fact]
    public async Task A_reset_from_the_target_reaches_the_client_as_a_reset()
    {
        var target = Own(new TargetServer(async socket =>
        {
            await socket.ReadTextAsync(5);
            socket.LingerState = new LingerOption(true, 0);
            socket.Dispose();
        }));
        var port = await ListenAsync(Local(target.Port));
        using var client = await ConnectAsync(port);
        await client.SendAsync("reset");

        var reading = () => client.ReadToEndAsync().WaitAsync(Patience);

        (await reading.Should().ThrowAsync<SocketException>()).Which.SocketErrorCode.Should().Be(SocketError.ConnectionReset);
    }

    [Fact]
    public async Task A_slow_reader_holds_back_the_sender_and_still_gets_every_byte()
    {
        // The target sends more than every kernel buffer on the path can hold; the client reads nothing for a while, then
        // everything. What the proxy may hold in between is bounded: the sender must be held back (its send stalls) rather
        // than the proxy buffering it all. The kernel autotunes the proxy's two socket buffers up to tcp_rmem/tcp_wmem's
        // maxima (32 MiB and 4 MiB on some machines), so the payload is sized from them, never a fixed 8 MiB.
        var size = AutotunedBufferCeiling() + 8 * 1024 * 1024;
        var payload = new byte[size];
        new Random(7).NextBytes(payload);
        var sent = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var target = Own(new TargetServer(async socket =>
        {
            socket.SendBufferSize = 64 * 1024;
            await socket.SendAllAsync(payload);
            sent.SetResult();
            socket.Shutdown(SocketShutdown.Send);
            await socket.ReadToEndAsync();
        }));
        var port = await ListenAsync(Local(target.Port));
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveBufferSize = 64 * 1024 };
        await client.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port)).WaitAsync(Patience);

        var stalled = await Task.WhenAny(sent.Task, Task.Delay(TimeSpan.FromMilliseconds(500))) != sent.Task;
        var received = await client.ReadToEndAsync().WaitAsync(Patience);

        stalled.Should().BeTrue($"{size} bytes cannot fit in the socket buffers and one pipe or buffer per direction");
        received.Length.Should().Be(size);
        received.AsSpan().SequenceEqual(payload).Should().BeTrue();
    }

    /// <summary>The most the kernel lets one socket's receive buffer plus another's send buffer grow to.</summary>
    private static int AutotunedBufferCeiling()
    {
        static int Max(string path) =>
            File.Exists(path) ? int.Parse(File.ReadAllText(path).Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)[2]) : 8 * 1024 * 1024;
        return Max("/proc/sys/net/ipv4/tcp_rmem") + Max("/proc/sys/net/ipv4/tcp_wmem");
    }

    [Fact]
    public async Task Two_hundred_concurrent_connections_each_get_their_own_bytes_back()
    {
        var echo = Own(TargetServer.Echo());
        var port = await ListenAsync(Local(echo.Port));

        var results = await Task.WhenAll(Enumerable.Range(0, 200).Select(async i =>
        {
            using var client = await ConnectAsync(port);
            var text = $"connection {i:D3} " + new string((char)('a' + (i % 26)), i * 50);
            await client.SendAsync(text);
            client.Shutdown(SocketShutdown.Send);
            return (Sent: text, Echoed: await client.ReadTextToEndAsync());
        })).WaitAsync(TimeSpan.FromSeconds(20));

        results.Should().OnlyContain(r => r.Echoed == r.Sent);
    }

    [Fact]
    public async Task Bulk_transfers_do_not_hold_up_small_exchanges_on_other_connections()
    {
        using var stop = new CancellationTokenSource();
        var chunk = new byte[256 * 1024];
        var firehose = Own(new TargetServer(async socket =>
        {
            try
            {
                while (!stop.IsCancellationRequested)
                {
                    await socket.SendAsync(chunk, SocketFlags.None, stop.Token);
                }
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException)
            {
            }
        }));
        var echo = Own(TargetServer.Echo());
        var table = NewTable();
        var bulk = Local(firehose.Port, app: "bulk");
        var small = Local(echo.Port, app: "small");
        (await table.ApplyAsync([bulk, small], CancellationToken.None)).Should().BeEmpty();

        // One bulk download per event-loop thread and then some, each drained as fast as the client can.
        var drains = new List<Task>();
        var bulkClients = new List<Socket>();
        for (var i = 0; i < Environment.ProcessorCount + 1; i++)
        {
            var client = await ConnectAsync(bulk.Port);
            bulkClients.Add(client);
            drains.Add(Task.Run(async () =>
            {
                var buffer = new byte[256 * 1024];
                try
                {
                    while (await client.ReceiveAsync(buffer, SocketFlags.None) > 0)
                    {
                    }
                }
                catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
                {
                    // closed by the test when it is done
                }
            }));
        }

        try
        {
            for (var i = 0; i < 20; i++)
            {
                using var client = await ConnectAsync(small.Port);
                await client.SendAsync($"ping {i:D2}");
                (await client.ReadTextAsync(7)).Should().Be($"ping {i:D2}");
            }
        }
        finally
        {
            await stop.CancelAsync();
            bulkClients.ForEach(c => c.Dispose());
            await Task.WhenAll(drains).WaitAsync(Patience);
        }
    }

    [Fact]
    public async Task Disposing_the_table_closes_listeners_and_connections()
    {
        var echo = Own(TargetServer.Echo());
        var table = new ProxyTable(new ProxyOptions { Engine = Engine }, _metrics, NullLogger<ProxyTable>.Instance, TimeProvider.System);
        var spec = Local(echo.Port);
        (await table.ApplyAsync([spec], CancellationToken.None)).Should().BeEmpty();
        using var client = await ConnectAsync(spec.Port);
        await client.SendAsync("x");
        (await client.ReadTextAsync(1)).Should().Be("x");

        await table.DisposeAsync().AsTask().WaitAsync(Patience);

        await client.ClosedAsync().WaitAsync(Patience);
        var connectAgain = () => ConnectAsync(spec.Port);
        await connectAgain.Should().ThrowAsync<SocketException>();
    }

    private static ListenerSpec Local(int targetPort, int? port = null, string app = "app", string host = "127.0.0.1") =>
        new(ListenerKind.Local, app, IPAddress.Loopback, port ?? FreePort(), host, targetPort);

    private ProxyTable NewTable(ProxyOptions? options = null)
    {
        options ??= new ProxyOptions();
        options.Engine = Engine;
        return Own(new ProxyTable(options, _metrics, NullLogger<ProxyTable>.Instance, TimeProvider.System));
    }

    /// <summary>Binds one listener on a fresh table and returns its port.</summary>
    private async Task<int> ListenAsync(ListenerSpec spec, ProxyOptions? options = null)
    {
        (await NewTable(options).ApplyAsync([spec], CancellationToken.None)).Should().BeEmpty();
        return spec.Port;
    }

    private T Own<T>(T disposable)
        where T : IAsyncDisposable
    {
        _owned.Add(disposable);
        return disposable;
    }
}
