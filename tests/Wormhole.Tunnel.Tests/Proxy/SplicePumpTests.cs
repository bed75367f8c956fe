using System.Net;
using System.Net.Sockets;
using Wormhole.Tunnel.Proxy;
using static Wormhole.Tunnel.Tests.Proxy.SocketTestKit;

namespace Wormhole.Tunnel.Tests.Proxy;

/// <summary>
/// The Linux pump below ProxyTable, driven over real loopback sockets whose buffers the test sizes, so the moments that
/// are timing-dependent through a whole proxy (a receiver that can take only part of a message; data and FIN already
/// queued together before the first read) happen every run.
/// </summary>
public sealed class SplicePumpTests : IDisposable
{
    private readonly List<Socket> _sockets = [];

    public void Dispose()
    {
        foreach (var socket in _sockets)
        {
            socket.Dispose();
        }
    }

    [Fact]
    public async Task What_the_receiver_cannot_take_yet_is_held_and_delivered_in_order()
    {
        var engine = RequireEngine();
        // reader ⇄ pumpClient: 4 KiB buffers both sides, so a 10 KiB message cannot all be sent while the reader waits.
        var (reader, pumpClient) = await PairAsync(receiveBuffer: 4096, acceptedSendBuffer: 4096);
        var (writer, pumpUpstream) = await PairAsync();
        var owner = new CountingOwner();
        var pump = SocketPump.Start(engine.NextLoop(), pumpClient, pumpUpstream, owner);

        var first = Pattern(10_000, seed: 1);
        await writer.SendAllAsync(first);
        (await reader.ReadExactlyAsync(first.Length)).Should().Equal(first);

        var second = Pattern(30_000, seed: 2); // more than one receive's worth: the pump's bulk path follows
        await writer.SendAllAsync(second);
        writer.Shutdown(SocketShutdown.Send);
        (await reader.ReadToEndAsync().WaitAsync(Patience)).Should().Equal(second);

        reader.Shutdown(SocketShutdown.Send);
        (await pump.Completion.WaitAsync(Patience)).Should().Be(new PumpEnd(CopyResult.Eof, CopyResult.Eof));
        owner.Down.Should().Be(first.Length + second.Length);
    }

    [Fact]
    public async Task Data_and_FIN_queued_before_the_first_read_are_both_passed_on()
    {
        var engine = RequireEngine();
        var (reader, pumpClient) = await PairAsync();
        var (writer, pumpUpstream) = await PairAsync();
        var message = Pattern(100, seed: 3);
        await writer.SendAllAsync(message);
        writer.Shutdown(SocketShutdown.Send); // on loopback both are in pumpUpstream's queue when these calls return

        var pump = SocketPump.Start(engine.NextLoop(), pumpClient, pumpUpstream, new CountingOwner());

        (await reader.ReadToEndAsync().WaitAsync(Patience)).Should().Equal(message, "a short read must not hide the FIN behind it");
        reader.Shutdown(SocketShutdown.Send);
        (await writer.ReadToEndAsync().WaitAsync(Patience)).Should().BeEmpty();
        (await pump.Completion.WaitAsync(Patience)).Should().Be(new PumpEnd(CopyResult.Eof, CopyResult.Eof));
    }

    private static SpliceEngine RequireEngine() =>
        SpliceEngine.Shared ?? throw new InvalidOperationException("the splice engine is not available on this machine");

    private static byte[] Pattern(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    /// <summary>A connected pair: the outer socket (blocking, for the test) and the accepted one (non-blocking, for the pump).</summary>
    private async Task<(Socket Outer, Socket Accepted)> PairAsync(int receiveBuffer = 0, int acceptedSendBuffer = 0)
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        var outer = Own(new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp));
        if (receiveBuffer > 0)
        {
            outer.ReceiveBufferSize = receiveBuffer;
        }

        await outer.ConnectAsync(listener.LocalEndPoint!).WaitAsync(Patience);
        var accepted = Own(await listener.AcceptAsync().WaitAsync(Patience));
        if (acceptedSendBuffer > 0)
        {
            accepted.SendBufferSize = acceptedSendBuffer;
        }

        accepted.NoDelay = true;
        accepted.Blocking = false;
        return (outer, accepted);
    }

    private Socket Own(Socket socket)
    {
        _sockets.Add(socket);
        return socket;
    }

    private sealed class CountingOwner : IPumpOwner
    {
        private long _up;
        private long _down;

        public long Up => Interlocked.Read(ref _up);

        public long Down => Interlocked.Read(ref _down);

        public void OnBytes(bool upstream, int count) => Interlocked.Add(ref upstream ? ref _up : ref _down, count);
    }
}
