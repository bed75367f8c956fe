using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Wormhole.Tunnel.Proxy;

/// <summary>
/// Both directions of one connection. A direction carries small messages the way nginx does — recv into the loop's
/// scratch buffer, send on at once — and switches to splice (src → pipe → dst, no copy) once a receive fills the scratch
/// buffer, i.e. for bulk transfers, until a burst moves less than that again. Either way it sends what it holds before it
/// reads again, so a slow receiver stops the reads from its sender (TCP back-pressure: at most one pipe, 64 KiB, or one
/// 16 KiB stash in flight), and after EOF from src with nothing held it shuts down dst's sending side (half-close).
/// Edge-triggered: readiness is remembered per socket until a call says EAGAIN, or until a receive comes back short —
/// recv copies all the socket has, so a short one means the queue is empty and the next arrival raises a new edge
/// (unless the peer's FIN or an error was already reported: then no edge follows, so it reads on to the 0 or the error).
/// A splice read can stop short for lack of pipe slots too, so bulk mode always reads to EAGAIN. An error on either side
/// ends both directions at once. A pump may start while its upstream connect is still in progress: it then watches only
/// the upstream socket until the connect is done, so a new connection costs one hand-off to the loop, not two.
/// </summary>
internal sealed class SplicePump : LoopWork
{
    private const int Client = 0;
    private const int Upstream = 1;
    private const int Chunk = 1 << 20; // the pipe takes what fits (its capacity, 64 KiB by default)
    private const int Budget = 1 << 20; // bytes one direction moves per turn before the loop serves others

    private readonly SafeSocketHandle[] _handles;
    private readonly int[] _fds;
    private readonly IPumpOwner _owner;
    private readonly TaskCompletionSource<PumpEnd> _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly bool[] _readable = new bool[2];
    private readonly bool[] _writable = new bool[2];
    private readonly bool[] _ending = new bool[2]; // FIN, reset or error reported: no further edge will come
    private readonly Direction _up = new(Client, Upstream, upstream: true);
    private readonly Direction _down = new(Upstream, Client, upstream: false);
    private bool _finished;
    private bool _deferred;
    private bool _connecting;
    private volatile bool _aborting;
    private int _refs;

    private SplicePump(Socket client, Socket upstream, IPumpOwner owner, bool connecting)
    {
        _handles = [client.SafeHandle, upstream.SafeHandle];
        _fds = [(int)client.Handle, (int)upstream.Handle];
        _owner = owner;
        _connecting = connecting;
    }

    /// <summary>
    /// Runs both directions until each has ended (EOF passed on) or one failed, or until aborted (both results are then
    /// <see cref="CopyResult.Eof"/>: the aborter knows why). With <paramref name="connecting"/>, the upstream socket's
    /// non-blocking connect is still in progress: the pump waits for it first, and ends with
    /// <see cref="PumpEnd.ConnectError"/> set if it fails. Both sockets must be non-blocking; they must stay open until
    /// the task completes (the descriptors are in use by the loop until then).
    /// </summary>
    public static SplicePump Start(EpollLoop loop, Socket client, Socket upstream, IPumpOwner owner, bool connecting = false)
    {
        var pump = new SplicePump(client, upstream, owner, connecting);
        foreach (var handle in pump._handles)
        {
            // A Dispose elsewhere cannot close a descriptor the loop still uses (nor let its number be reused).
            var added = false;
            handle.DangerousAddRef(ref added);
            pump._refs += added ? 1 : 0;
        }

        loop.Post(pump);
        return pump;
    }

    public Task<PumpEnd> Completion => _done.Task;

    /// <summary>Ends the pump whatever it is doing (from any thread).</summary>
    public void Abort()
    {
        _aborting = true;
        Cancel();
    }

    /// <summary>Ends the pump only if its upstream connect is still in progress (from any thread; for a connect timeout
    /// that may fire just after the connect succeeded).</summary>
    public void CancelConnect() => Cancel();

    private const uint Interest = LinuxNative.EPOLLIN | LinuxNative.EPOLLOUT | LinuxNative.EPOLLRDHUP | LinuxNative.EPOLLET;

    internal override void Start()
    {
        if (_connecting)
        {
            Watch(Upstream, LinuxNative.EPOLL_CTL_ADD, LinuxNative.EPOLLOUT | LinuxNative.EPOLLET);
            return;
        }

        Watch(Client, LinuxNative.EPOLL_CTL_ADD, Interest);
        Watch(Upstream, LinuxNative.EPOLL_CTL_ADD, Interest);
    }

    private void Watch(int side, int op, uint events)
    {
        if (LinuxNative.EpollControl(Loop.Epoll, op, _fds[side], events, EventData(side)) != 0)
        {
            throw new InvalidOperationException($"epoll_ctl {op} failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    /// <summary>The upstream socket reported while its connect was in progress: connected (writable, no error) or failed.</summary>
    private void OnConnectEvent(uint events)
    {
        var error = LinuxNative.SocketError(_fds[Upstream]);
        if (error == 0 && (events & LinuxNative.EPOLLOUT) == 0)
        {
            return;
        }

        if (error != 0)
        {
            EndConnect(error);
            return;
        }

        _connecting = false;
        Watch(Upstream, LinuxNative.EPOLL_CTL_MOD, Interest);
        Watch(Client, LinuxNative.EPOLL_CTL_ADD, Interest);
        _writable[Upstream] = true;
        _owner.OnConnected();
        Turn();
    }

    /// <summary>Ends a pump whose connect failed or was cancelled; the client socket was never watched.</summary>
    private void EndConnect(int error)
    {
        _connecting = false;
        LinuxNative.EpollControl(Loop.Epoll, LinuxNative.EPOLL_CTL_DEL, _fds[Upstream], 0, 0);
        Finish(new PumpEnd(CopyResult.Eof, CopyResult.Eof, error));
    }

    internal override void OnEvent(int side, uint events)
    {
        if (_connecting)
        {
            OnConnectEvent(events); // only the upstream socket is watched until then
            return;
        }

        if ((events & (LinuxNative.EPOLLIN | LinuxNative.EPOLLRDHUP | LinuxNative.EPOLLHUP | LinuxNative.EPOLLERR)) != 0)
        {
            _readable[side] = true;
        }

        if ((events & (LinuxNative.EPOLLRDHUP | LinuxNative.EPOLLHUP | LinuxNative.EPOLLERR)) != 0)
        {
            _ending[side] = true;
        }

        if ((events & (LinuxNative.EPOLLOUT | LinuxNative.EPOLLHUP | LinuxNative.EPOLLERR)) != 0)
        {
            _writable[side] = true;
        }

        if (!_deferred)
        {
            Turn();
        }
    }

    internal override void OnResume()
    {
        _deferred = false;
        Turn();
    }

    private void Turn()
    {
        var budget = Budget;
        var up = Move(_up, ref budget);
        var more = budget <= 0;
        budget = Budget;
        var down = Move(_down, ref budget);
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

    internal override void OnCancel()
    {
        if (_finished)
        {
            return; // the descriptors may already be closed, their numbers reused
        }

        if (_connecting)
        {
            EndConnect(-1);
        }
        else if (_aborting)
        {
            Finish(new PumpEnd(CopyResult.Eof, CopyResult.Eof));
        }
    }

    internal override void OnCrash(Exception exception)
    {
        if (!_finished)
        {
            ReleaseAll();
            _done.TrySetException(exception);
        }
    }

    /// <returns><see cref="CopyResult.Eof"/> while all is well (whether or not the direction has ended).</returns>
    private CopyResult Move(Direction d, ref int budget)
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
                    ? LinuxNative.Send(_fds[d.To], stash.AsSpan(d.StashOffset, d.Pending))
                    : LinuxNative.Splice(d.Pipe.Read, _fds[d.To], d.Pending);
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
                _owner.OnBytes(d.IsUpstream, (int)sent);
                if (d.Pending == 0)
                {
                    ReleaseHeld(d);
                }

                continue;
            }

            if (d.SourceEnded)
            {
                LinuxNative.Shutdown(_fds[d.To], LinuxNative.SHUT_WR); // fails only if the peer is gone: the other direction finds out
                d.Done = true;
                return CopyResult.Eof;
            }

            if (!_readable[d.From])
            {
                return CopyResult.Eof;
            }

            var read = d.Bulk ? SpliceIn(d) : ReceiveIn(d, ref budget);
            if (read != CopyResult.Eof)
            {
                return read;
            }
        }

        return CopyResult.Eof;
    }

    /// <summary>One recv into the loop's scratch buffer, sent on at once; what the receiver cannot take yet is stashed.</summary>
    private CopyResult ReceiveIn(Direction d, ref int budget)
    {
        var scratch = Loop.Scratch;
        var received = LinuxNative.Receive(_fds[d.From], scratch);
        if (received <= 0)
        {
            return ReadEnded(d, received);
        }

        var count = (int)received;
        var sent = _writable[d.To] ? LinuxNative.Send(_fds[d.To], scratch[..count]) : 0;
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
            _owner.OnBytes(d.IsUpstream, (int)sent);
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
        else if (!_ending[d.From])
        {
            _readable[d.From] = false; // a short recv emptied the queue: the next arrival raises a new edge
        }

        return CopyResult.Eof;
    }

    /// <summary>One splice into the direction's pipe (bulk mode).</summary>
    private CopyResult SpliceIn(Direction d)
    {
        if (d.Pipe.Read < 0 && !Loop.RentPipe(out d.Pipe))
        {
            return CopyResult.ReadFailed;
        }

        var read = LinuxNative.Splice(_fds[d.From], d.Pipe.Write, Chunk);
        if (read > 0)
        {
            d.Pending = (int)read;
            d.Burst += (int)read;
            return CopyResult.Eof;
        }

        var errno = Marshal.GetLastPInvokeError();
        ReleaseHeld(d);
        if (read < 0 && errno == LinuxNative.EAGAIN)
        {
            // Back to recv for small messages when this burst was small (the mode follows the traffic).
            d.Bulk = d.Burst >= EpollLoop.ScratchSize;
            d.Burst = 0;
        }

        Marshal.SetLastPInvokeError(errno);
        return ReadEnded(d, read);
    }

    /// <summary>A read that moved nothing: end of input, nothing there (EAGAIN), or a failure.</summary>
    private CopyResult ReadEnded(Direction d, nint result)
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
    private void ReleaseHeld(Direction d)
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
        if (_finished)
        {
            return;
        }

        ReleaseAll();
        _done.TrySetResult(end);
    }

    private void ReleaseAll()
    {
        _finished = true;
        foreach (var d in (ReadOnlySpan<Direction>)[_up, _down])
        {
            ReleaseHeld(d);
        }

        // The descriptors stay in the epoll set until the sockets are closed; events that still arrive carry this
        // work's generation and are ignored once its slot is reused.
        Loop.Release(this);
        for (var i = 0; i < _refs; i++)
        {
            _handles[i].DangerousRelease();
        }

        _refs = 0;
    }

    private sealed class Direction(int from, int to, bool upstream)
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
