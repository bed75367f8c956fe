using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Wormhole.Tunnel.Proxy;

/// <summary>How one proxied connection's two directions ended; <paramref name="ConnectError"/> is the errno of an upstream
/// connect that failed (-1: cancelled) before any byte moved, 0 once connected.</summary>
internal readonly record struct PumpEnd(CopyResult Up, CopyResult Down, int ConnectError = 0);

internal enum CopyResult { Eof, ReadFailed, WriteFailed }

/// <summary>Told when the upstream connect succeeds and about every chunk a pump moves (on the loop's thread: keep it
/// short).</summary>
internal interface IPumpOwner
{
    /// <summary>The upstream connect succeeded; bytes may flow from now on.</summary>
    void OnConnected();

    void OnBytes(bool upstream, int count);
}

/// <summary>
/// The Linux data plane: a few event-loop threads (one per core, at most 8), each with its own epoll set. Small messages
/// go through the loop's scratch buffer (recv, send), bulk data socket → pipe → socket with splice(2), so bulk payload
/// never enters user space, and an idle connection owns no buffer (a direction borrows a pipe or a stash from its loop
/// only while bytes are in flight). This is nginx's shape — one thread reads a socket when epoll says it is readable —
/// without nginx's copies of bulk data; the .NET socket layer instead posts a receive before
/// data arrives and hands every completion from its epoll thread to a pool thread, which on small exchanges costs more
/// than the transfer itself (docs/benchmarks.md, "What limits it").
/// </summary>
internal sealed class SpliceEngine
{
    private static readonly Lazy<SpliceEngine?> LazyShared = new(TryCreate);
    private readonly EpollLoop[] _loops;
    private int _next;

    private SpliceEngine(EpollLoop[] loops) => _loops = loops;

    /// <summary>The process-wide engine, or null where splice/epoll cannot be used (not Linux, other CPU, or refused).</summary>
    public static SpliceEngine? Shared => LazyShared.Value;

    public int LoopCount => _loops.Length;

    /// <summary>Loops are handed out round-robin; a connection stays on its loop for life.</summary>
    public EpollLoop NextLoop() => _loops[(uint)Interlocked.Increment(ref _next) % (uint)_loops.Length];

    private static SpliceEngine? TryCreate()
    {
        if (!LinuxNative.Supported)
        {
            return null;
        }

        try
        {
            // A pipe proves pipe2 and splice are allowed (a seccomp profile could refuse them).
            if (LinuxNative.CreatePipe(out var r, out var w) != 0)
            {
                return null;
            }

            var probe = LinuxNative.Splice(r, w, 1); // empty, non-blocking: EAGAIN, or EINVAL for pipe→same pipe
            var errno = Marshal.GetLastPInvokeError();
            LinuxNative.Close(r);
            LinuxNative.Close(w);
            if (probe < 0 && errno == 38) // ENOSYS
            {
                return null;
            }

            var loops = new EpollLoop[Math.Clamp(Environment.ProcessorCount, 1, 8)];
            for (var i = 0; i < loops.Length; i++)
            {
                loops[i] = new EpollLoop(i);
            }

            return new SpliceEngine(loops);
        }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException or InvalidOperationException)
        {
            return null;
        }
    }
}

/// <summary>Something a loop watches (a connection's pump). Touched only on its loop's thread once started.</summary>
internal abstract class LoopWork
{
    internal int Slot = -1;
    internal uint Generation;
    private EpollLoop? _loop;

    protected EpollLoop Loop => _loop!;

    /// <summary>Runs on the loop's thread, after the work got its slot.</summary>
    internal abstract void Start();

    internal abstract void OnEvent(int side, uint events);

    /// <summary>Continues work that <see cref="EpollLoop.Defer"/>red itself.</summary>
    internal virtual void OnResume()
    {
    }

    /// <summary>Runs on the loop's thread; a no-op once finished.</summary>
    internal abstract void OnCancel();

    internal abstract void OnCrash(Exception exception);

    internal void Bind(EpollLoop loop) => _loop = loop;

    protected ulong EventData(int side) => ((ulong)Generation << 32) | (uint)((Slot << 1) | side);

    /// <summary>Asks the loop to stop this work (from any thread).</summary>
    public void Cancel() => _loop?.Post(this, cancel: true);
}

/// <summary>One event-loop thread with its epoll set. Work arrives through a queue and an eventfd.</summary>
internal sealed class EpollLoop
{
    private const ulong WakeData = ulong.MaxValue;
    private const int MaxEvents = 256;
    private const int PipesKept = 64;

    /// <summary>Bytes one receive into the loop's scratch buffer may take (nginx stream's default buffer size).</summary>
    public const int ScratchSize = 16 * 1024;

    private readonly int _epoll;
    private readonly int _wake;
    private readonly ConcurrentQueue<(LoopWork Work, bool Cancel)> _commands = new();
    private readonly Stack<(int Read, int Write)> _pipes = new();
    private readonly Stack<byte[]> _stashes = new();
    private readonly byte[] _scratch = GC.AllocateUninitializedArray<byte>(ScratchSize, pinned: true);
    private readonly Stack<int> _freeSlots = new();
    private List<LoopWork> _deferred = [];
    private List<LoopWork> _resuming = [];
    private LoopWork?[] _slots = new LoopWork?[64];
    private int _slotCount;
    private uint _generation;
    private int _wakePending;

    public EpollLoop(int index)
    {
        _epoll = LinuxNative.CreateEpoll();
        _wake = LinuxNative.CreateEventFd();
        if (_epoll < 0 || _wake < 0
            || LinuxNative.EpollControl(_epoll, LinuxNative.EPOLL_CTL_ADD, _wake, LinuxNative.EPOLLIN | LinuxNative.EPOLLET, WakeData) != 0)
        {
            throw new InvalidOperationException($"epoll setup failed: errno {Marshal.GetLastPInvokeError()}");
        }

        new Thread(Run) { IsBackground = true, Name = $"wormhole proxy {index}" }.Start();
    }

    /// <summary>Hands work to the loop (start, or cancel when <paramref name="cancel"/>); from any thread.</summary>
    public void Post(LoopWork work, bool cancel = false)
    {
        if (!cancel)
        {
            work.Bind(this);
        }

        _commands.Enqueue((work, cancel));
        if (Interlocked.Exchange(ref _wakePending, 1) == 0)
        {
            LinuxNative.Signal(_wake);
        }
    }

    public int Epoll => _epoll;

    /// <summary>An empty pipe for one direction's bytes in flight, or false when none can be made (descriptors exhausted).</summary>
    public bool RentPipe(out (int Read, int Write) pipe)
    {
        if (_pipes.TryPop(out pipe))
        {
            return true;
        }

        if (LinuxNative.CreatePipe(out var r, out var w) == 0)
        {
            pipe = (r, w);
            return true;
        }

        return false;
    }

    /// <summary>Keeps an empty pipe for the next borrower; closes a pipe that still holds bytes or when enough are kept.</summary>
    public void ReturnPipe((int Read, int Write) pipe, bool empty)
    {
        if (empty && _pipes.Count < PipesKept)
        {
            _pipes.Push(pipe);
            return;
        }

        LinuxNative.Close(pipe.Read);
        LinuxNative.Close(pipe.Write);
    }

    /// <summary>The loop's one receive buffer: whatever is received into it is sent on, or copied to a stash, before the
    /// receiving work returns (every work of this loop runs on its one thread).</summary>
    public Span<byte> Scratch => _scratch;

    /// <summary>A buffer for bytes received but not yet sent (the receiver could not take all of them).</summary>
    public byte[] RentStash() => _stashes.TryPop(out var stash) ? stash : new byte[ScratchSize];

    public void ReturnStash(byte[] stash)
    {
        if (_stashes.Count < PipesKept)
        {
            _stashes.Push(stash);
        }
    }

    /// <summary>Runs <see cref="LoopWork.OnResume"/> on the next turn of the loop, after the events and commands that
    /// are waiting (for work that stopped early so others get their turn).</summary>
    public void Defer(LoopWork work) => _deferred.Add(work);

    public void Release(LoopWork work)
    {
        if (work.Slot >= 0 && _slots[work.Slot] == work)
        {
            _slots[work.Slot] = null;
            _freeSlots.Push(work.Slot);
        }

        work.Slot = -1;
    }

    private unsafe void Run()
    {
        var events = (byte*)NativeMemory.Alloc((nuint)(MaxEvents * LinuxNative.EventSize));
        var size = LinuxNative.EventSize;
        var offset = LinuxNative.EventDataOffset;
        while (true)
        {
            var n = LinuxNative.EpollWait(_epoll, events, MaxEvents, _deferred.Count > 0 ? 0 : -1);
            if (n < 0)
            {
                if (Marshal.GetLastPInvokeError() == LinuxNative.EINTR)
                {
                    continue;
                }

                Environment.FailFast($"epoll_wait failed: errno {Marshal.GetLastPInvokeError()}");
            }

            for (var i = 0; i < n; i++)
            {
                var e = events + (i * size);
                var mask = *(uint*)e;
                var data = *(ulong*)(e + offset);
                if (data == WakeData)
                {
                    LinuxNative.Drain(_wake);
                    Volatile.Write(ref _wakePending, 0);
                    continue;
                }

                var slot = (int)((uint)data >> 1);
                if (slot < _slotCount && _slots[slot] is { } work && work.Generation == (uint)(data >> 32))
                {
                    Dispatch(work, static (w, s) => w.OnEvent(s.Side, s.Mask), (Side: (int)(data & 1), Mask: mask));
                }
            }

            while (_commands.TryDequeue(out var command))
            {
                if (command.Cancel)
                {
                    Dispatch(command.Work, static (w, _) => w.OnCancel(), 0);
                }
                else
                {
                    Assign(command.Work);
                    Dispatch(command.Work, static (w, _) => w.Start(), 0);
                }
            }

            (_resuming, _deferred) = (_deferred, _resuming);
            foreach (var work in _resuming)
            {
                if (work.Slot >= 0)
                {
                    Dispatch(work, static (w, _) => w.OnResume(), 0);
                }
            }

            _resuming.Clear();
        }
    }

    private void Assign(LoopWork work)
    {
        if (!_freeSlots.TryPop(out var slot))
        {
            if (_slotCount == _slots.Length)
            {
                Array.Resize(ref _slots, _slots.Length * 2);
            }

            slot = _slotCount++;
        }

        _slots[slot] = work;
        work.Slot = slot;
        work.Generation = ++_generation;
    }

    private static void Dispatch<TState>(LoopWork work, Action<LoopWork, TState> action, TState state)
    {
        try
        {
            action(work, state);
        }
        catch (Exception ex)
        {
            work.OnCrash(ex);
        }
    }
}

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
