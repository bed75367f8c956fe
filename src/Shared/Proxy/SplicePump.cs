using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Wormhole.Tunnel.Proxy;

/// <summary>
/// Both directions of one connection between two non-blocking sockets. A direction carries small messages the way nginx
/// does — recv into the loop's scratch buffer, send on at once — and switches to splice (src → pipe → dst, no copy) once a
/// receive fills the scratch buffer, i.e. for bulk transfers, until a burst moves less than that again. Either way it sends
/// what it holds before it reads again, so a slow receiver stops the reads from its sender (TCP back-pressure: at most one
/// pipe, 64 KiB, or one 16 KiB stash in flight), and after EOF from src with nothing held it shuts down dst's sending side
/// (half-close). Edge-triggered: readiness is remembered per socket until a call says EAGAIN, or until a receive comes back
/// short — recv copies all the socket has, so a short one means the queue is empty and the next arrival raises a new edge
/// (unless the peer's FIN or an error was already reported: then no edge follows, so it reads on to the error, or, after a
/// FIN, takes the short read as the end of input: nothing can follow a FIN).
/// A splice read can stop short for lack of pipe slots too, so bulk mode always reads to EAGAIN. An error on either side
/// ends both directions at once. Until <see cref="Pumping"/> is set (the owner's upstream connect is in progress), events
/// are only remembered.
/// </summary>
internal abstract class SplicePump : LoopWork
{
    protected const int Client = 0;
    protected const int Upstream = 1;

    /// <summary>What both sockets are registered for (edge-triggered).</summary>
    protected const uint Interest = LinuxNative.EPOLLIN | LinuxNative.EPOLLOUT | LinuxNative.EPOLLRDHUP | LinuxNative.EPOLLET;

    private const int Chunk = 1 << 20; // the pipe takes what fits (its capacity, 64 KiB by default)
    private const int Budget = 1 << 20; // bytes one direction moves per turn before the loop serves others

    // Per side and per direction state lives in the pump itself (inline arrays, structs): one object per connection.
    private Two<bool> _readable;
    private Two<bool> _writable;
    private Two<bool> _ending; // FIN, reset or error reported: no further edge will come
    private Two<bool> _peerFin; // the peer's FIN was reported: once the queue is empty, nothing but EOF can follow
    private Direction _up = new(Client, Upstream, upstream: true);
    private Direction _down = new(Upstream, Client, upstream: false);
    private bool _finished;
    private bool _deferred;

    protected SplicePump()
    {
        Fds[Client] = -1;
        Fds[Upstream] = -1;
    }

    /// <summary>Whether bytes may move (both sockets connected); until then events are only remembered.</summary>
    protected bool Pumping { get; set; }

    protected bool Finished => _finished;

    /// <summary>The client's and the upstream's descriptor (-1: none yet, or closed).</summary>
#pragma warning disable CA1051, SA1401 // a field, so Fds[side] reads and writes in place
    protected Two<int> Fds;
#pragma warning restore CA1051, SA1401

    /// <summary>Whether the owner closes both sockets as soon as the pump has ended: then the last direction to end needs no
    /// shutdown of its own, as the close sends that FIN (everything was read from that socket, up to its own FIN).</summary>
    protected virtual bool ClosesAtEnd => false;

    /// <summary>Both directions ended (EOF passed on) or one failed; called once, on the loop's thread, after the pump let
    /// go of its slot, pipes and stashes. The descriptors are the owner's to close.</summary>
    protected abstract void Ended(PumpEnd end);

    /// <summary>Bytes passed on in one direction (on the loop's thread: keep it short).</summary>
    protected abstract void Moved(bool upstream, int count);

    protected void Watch(int side, int op, uint events)
    {
        if (LinuxNative.EpollControl(Loop.Epoll, op, Fds[side], events, EventData(side)) != 0)
        {
            throw new InvalidOperationException($"epoll_ctl {op} failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    internal override void OnEvent(int side, uint events)
    {
        if ((events & (LinuxNative.EPOLLIN | LinuxNative.EPOLLRDHUP | LinuxNative.EPOLLHUP | LinuxNative.EPOLLERR)) != 0)
        {
            _readable[side] = true;
        }

        if ((events & (LinuxNative.EPOLLRDHUP | LinuxNative.EPOLLHUP | LinuxNative.EPOLLERR)) != 0)
        {
            _ending[side] = true;
            _peerFin[side] |= (events & (LinuxNative.EPOLLHUP | LinuxNative.EPOLLERR)) == 0;
        }

        if ((events & (LinuxNative.EPOLLOUT | LinuxNative.EPOLLHUP | LinuxNative.EPOLLERR)) != 0)
        {
            _writable[side] = true;
        }

        if (Pumping && !_deferred)
        {
            Turn();
        }
    }

    internal override void OnResume()
    {
        _deferred = false;
        Turn();
    }

    /// <summary>Moves what can be moved in both directions now.</summary>
    private void Turn()
    {
        var budget = Budget;
        var up = Move(ref _up, ref budget);
        var more = budget <= 0;
        budget = Budget;
        var down = Move(ref _down, ref budget);
        more |= budget <= 0;
        if (up != CopyResult.Eof || down != CopyResult.Eof)
        {
            Finish(new PumpEnd(up, down));
        }
        else if (_up.Done && _down.Done)
        {
            Finish(new PumpEnd(CopyResult.Eof, CopyResult.Eof));
        }
        else if (more)
        {
            // Out of budget with bytes possibly still waiting: no new edge may come for them, so continue next turn.
            _deferred = true;
            Loop.Defer(this);
        }
    }

    /// <summary>Stops the pump where it is: gives back what it holds and its slot. False if it had already ended.</summary>
    protected bool Release()
    {
        if (_finished)
        {
            return false;
        }

        _finished = true;
        ReleaseHeld(ref _up);
        ReleaseHeld(ref _down);

        // A descriptor stays in the epoll set until it is closed; events that still arrive carry this work's generation
        // and are dropped once its slot is free or reused.
        Loop.Release(this);
        return true;
    }

    /// <returns><see cref="CopyResult.Eof"/> while all is well (whether or not the direction has ended).</returns>
    private CopyResult Move(ref Direction d, ref int budget)
    {
        while (!d.Done && budget > 0)
        {
            if (d.Pending > 0)
            {
                if (!_writable[d.To])
                {
                    return CopyResult.Eof;
                }

                var sent = d.Stash is { } stash
                    ? LinuxNative.Send(Fds[d.To], stash.AsSpan(d.StashOffset, d.Pending))
                    : LinuxNative.Splice(d.Pipe.Read, Fds[d.To], d.Pending);
                if (sent < 0)
                {
                    if (Marshal.GetLastPInvokeError() == LinuxNative.EAGAIN)
                    {
                        _writable[d.To] = false;
                        return CopyResult.Eof;
                    }

                    return CopyResult.WriteFailed;
                }

                d.Pending -= (int)sent;
                d.StashOffset += (int)sent;
                budget -= (int)sent;
                Moved(d.IsUpstream, (int)sent);
                if (d.Pending == 0)
                {
                    ReleaseHeld(ref d);
                }

                continue;
            }

            if (d.SourceEnded)
            {
                if (!(ClosesAtEnd && (d.IsUpstream ? _down.Done : _up.Done)))
                {
                    LinuxNative.Shutdown(Fds[d.To], LinuxNative.SHUT_WR); // fails only if the peer is gone: the other direction finds out
                }

                d.Done = true;
                return CopyResult.Eof;
            }

            if (!_readable[d.From])
            {
                return CopyResult.Eof;
            }

            var read = d.Bulk ? SpliceIn(ref d) : ReceiveIn(ref d, ref budget);
            if (read != CopyResult.Eof)
            {
                return read;
            }
        }

        return CopyResult.Eof;
    }

    /// <summary>One recv into the loop's scratch buffer, sent on at once; what the receiver cannot take yet is stashed.</summary>
    private CopyResult ReceiveIn(ref Direction d, ref int budget)
    {
        var scratch = Loop.Scratch;
        var received = LinuxNative.Receive(Fds[d.From], scratch);
        if (received <= 0)
        {
            return ReadEnded(ref d, received);
        }

        var count = (int)received;
        var sent = _writable[d.To] ? LinuxNative.Send(Fds[d.To], scratch[..count]) : 0;
        if (sent < 0)
        {
            if (Marshal.GetLastPInvokeError() != LinuxNative.EAGAIN)
            {
                return CopyResult.WriteFailed;
            }

            _writable[d.To] = false;
            sent = 0;
        }

        if (sent > 0)
        {
            budget -= (int)sent;
            Moved(d.IsUpstream, (int)sent);
        }

        if (sent < count)
        {
            d.Stash = Loop.RentStash();
            scratch[(int)sent..count].CopyTo(d.Stash);
            d.StashOffset = 0;
            d.Pending = count - (int)sent;
        }

        if (count == scratch.Length)
        {
            d.Bulk = true; // more may be waiting, and it came in bulk: move it without copies from here on
        }
        else if (_peerFin[d.From])
        {
            d.SourceEnded = true; // a short recv emptied the queue after the peer's FIN: the next read could only say EOF
        }
        else if (!_ending[d.From])
        {
            _readable[d.From] = false; // a short recv emptied the queue: the next arrival raises a new edge
        }

        return CopyResult.Eof;
    }

    /// <summary>One splice into the direction's pipe (bulk mode).</summary>
    private CopyResult SpliceIn(ref Direction d)
    {
        if (d.Pipe.Read < 0 && !Loop.RentPipe(out d.Pipe))
        {
            return CopyResult.ReadFailed;
        }

        var read = LinuxNative.Splice(Fds[d.From], d.Pipe.Write, Chunk);
        if (read > 0)
        {
            d.Pending = (int)read;
            d.Burst += (int)read;
            return CopyResult.Eof;
        }

        var errno = Marshal.GetLastPInvokeError();
        ReleaseHeld(ref d);
        if (read < 0 && errno == LinuxNative.EAGAIN)
        {
            // Back to recv for small messages when this burst was small (the mode follows the traffic).
            d.Bulk = d.Burst >= EpollLoop.ScratchSize;
            d.Burst = 0;
        }

        Marshal.SetLastPInvokeError(errno);
        return ReadEnded(ref d, read);
    }

    /// <summary>A read that moved nothing: end of input, nothing there (EAGAIN), or a failure.</summary>
    private CopyResult ReadEnded(ref Direction d, nint result)
    {
        if (result == 0)
        {
            d.SourceEnded = true;
            return CopyResult.Eof;
        }

        if (Marshal.GetLastPInvokeError() == LinuxNative.EAGAIN)
        {
            _readable[d.From] = false;
            return CopyResult.Eof;
        }

        return CopyResult.ReadFailed;
    }

    /// <summary>Gives back the stash or pipe a direction holds (a pipe that still holds bytes is closed, not kept).</summary>
    private void ReleaseHeld(ref Direction d)
    {
        if (d.Stash is { } stash)
        {
            Loop.ReturnStash(stash);
            d.Stash = null;
        }
        else if (d.Pipe.Read >= 0)
        {
            Loop.ReturnPipe(d.Pipe, empty: d.Pending == 0);
            d.Pipe = (-1, -1);
        }
    }

    private void Finish(PumpEnd end)
    {
        if (Release())
        {
            Ended(end);
        }
    }

    private struct Direction(int from, int to, bool upstream)
    {
        public readonly int From = from;
        public readonly int To = to;
        public readonly bool IsUpstream = upstream;
        public (int Read, int Write) Pipe = (-1, -1);
        public byte[]? Stash;
        public int StashOffset;
        public int Pending; // bytes held in the pipe or the stash, not yet sent
        public bool Bulk; // splice mode
        public int Burst; // bytes spliced in since the last EAGAIN
        public bool SourceEnded;
        public bool Done;
    }
}

/// <summary>A pump between two connected <see cref="Socket"/>s that someone else owns (the tests drive the pump with it).</summary>
internal sealed class SocketPump : SplicePump
{
    private readonly SafeSocketHandle[] _handles;
    private readonly IPumpOwner _owner;
    private readonly TaskCompletionSource<PumpEnd> _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _refs;

    private SocketPump(Socket client, Socket upstream, IPumpOwner owner)
    {
        _handles = [client.SafeHandle, upstream.SafeHandle];
        Fds[Client] = (int)client.Handle;
        Fds[Upstream] = (int)upstream.Handle;
        _owner = owner;
        Pumping = true;
    }

    /// <summary>Runs both directions on <paramref name="loop"/> until each has ended (EOF passed on) or one failed. Both sockets
    /// must be connected and non-blocking, and stay open until <see cref="Completion"/> completes.</summary>
    public static SocketPump Start(EpollLoop loop, Socket client, Socket upstream, IPumpOwner owner)
    {
        var pump = new SocketPump(client, upstream, owner);
        foreach (var handle in pump._handles)
        {
            // A Dispose elsewhere cannot close a descriptor the loop still uses (nor let its number be reused).
            var added = false;
            handle.DangerousAddRef(ref added);
            pump._refs += added ? 1 : 0;
        }

        loop.Post(pump, StartCommand);
        return pump;
    }

    public Task<PumpEnd> Completion => _done.Task;

    internal override void OnCommand(int command)
    {
        if (command == StartCommand)
        {
            Watch(Client, LinuxNative.EPOLL_CTL_ADD, Interest);
            Watch(Upstream, LinuxNative.EPOLL_CTL_ADD, Interest);
        }
    }

    internal override void OnCrash(Exception exception)
    {
        if (Release())
        {
            LetGo();
            _done.TrySetException(exception);
        }
    }

    protected override void Ended(PumpEnd end)
    {
        LetGo();
        _done.TrySetResult(end);
    }

    protected override void Moved(bool upstream, int count) => _owner.OnBytes(upstream, count);

    private void LetGo()
    {
        for (var i = 0; i < _refs; i++)
        {
            _handles[i].DangerousRelease();
        }

        _refs = 0;
    }
}

/// <summary>Two of something, stored inline (one per side of a connection).</summary>
[System.Runtime.CompilerServices.InlineArray(2)]
internal struct Two<T>
{
#pragma warning disable IDE0044, IDE0051 // the element is reached through the indexer
    private T _element;
#pragma warning restore IDE0044, IDE0051
}
