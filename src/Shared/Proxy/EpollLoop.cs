using System.Collections.Concurrent;
using System.Runtime.InteropServices;

namespace Wormhole.Tunnel.Proxy;

/// <summary>
/// One event-loop thread with its epoll set. Work arrives through a queue and an eventfd, or is born on the loop (a
/// connection its listening socket accepted). Timeouts are checked by a sweep over the loop's works when the earliest
/// deadline a work asked for (<see cref="WakeAt"/>) is due, at most every <see cref="MinSweepSpacing"/> ms: no timer
/// object per connection, and nothing to update on the data path but a timestamp.
/// </summary>
internal sealed class EpollLoop
{
    private const ulong WakeData = ulong.MaxValue;
    private const int MaxEvents = 256;
    private const int PipesKept = 64;
    private const int MinSweepSpacing = 10;

    /// <summary>Bytes one receive into the loop's scratch buffer may take (nginx stream's default buffer size).</summary>
    public const int ScratchSize = 16 * 1024;

    private readonly int _epoll;
    private readonly int _wake;
    private readonly ConcurrentQueue<(LoopWork Work, int Command)> _commands = new();
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
    private long _nextSweep = long.MaxValue;

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

    /// <summary>Milliseconds (<see cref="Environment.TickCount64"/>), read once per turn of the loop: what works stamp
    /// activity with and compare deadlines to. Loop thread only.</summary>
    public long Now { get; private set; } = Environment.TickCount64;

    /// <summary>Hands a command to a work on this loop, from any thread. <see cref="LoopWork.StartCommand"/> binds the work to
    /// the loop and gives it a slot first.</summary>
    public void Post(LoopWork work, int command)
    {
        if (command == LoopWork.StartCommand)
        {
            work.Bind(this);
        }

        _commands.Enqueue((work, command));
        if (Interlocked.Exchange(ref _wakePending, 1) == 0)
        {
            LinuxNative.Signal(_wake);
        }
    }

    /// <summary>Binds a work made on the loop's own thread to it and gives it a slot at once (no command round trip).</summary>
    public void Adopt(LoopWork work)
    {
        work.Bind(this);
        Assign(work);
    }

    /// <summary>Asks for a sweep no earlier than <paramref name="at"/> (<see cref="Now"/>'s scale). Loop thread only.</summary>
    public void WakeAt(long at)
    {
        if (at < _nextSweep)
        {
            _nextSweep = at;
        }
    }

    /// <summary>Every work of this loop that <paramref name="match"/> selects, with <paramref name="action"/> applied
    /// (a failure is the work's crash). Loop thread only.</summary>
    public void ForEach<TState>(Func<LoopWork, TState, bool> match, Action<LoopWork, TState> action, TState state)
    {
        for (var i = 0; i < _slotCount; i++)
        {
            if (_slots[i] is { } work && match(work, state))
            {
                Dispatch(work, action, state);
            }
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
    /// are waiting (for work that stopped early so others get their turn). Loop thread only.</summary>
    public void Defer(LoopWork work) => _deferred.Add(work);

    /// <summary>Takes the work's slot back: events that still arrive for its descriptors are dropped. Loop thread only.</summary>
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
            var timeout = _deferred.Count > 0 ? 0
                : _nextSweep == long.MaxValue ? -1
                : (int)Math.Clamp(_nextSweep - Environment.TickCount64, 0, int.MaxValue);
            var n = LinuxNative.EpollWait(_epoll, events, MaxEvents, timeout);
            Now = Environment.TickCount64;
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
                if (command.Command == LoopWork.StartCommand)
                {
                    Assign(command.Work);
                }

                Dispatch(command.Work, static (w, c) => w.OnCommand(c), command.Command);
            }

            (_resuming, _deferred) = (_deferred, _resuming);
            foreach (var work in _resuming)
            {
                if (work.Active)
                {
                    Dispatch(work, static (w, _) => w.OnResume(), 0);
                }
            }

            _resuming.Clear();
            if (Now >= _nextSweep)
            {
                Sweep();
            }
        }
    }

    /// <summary>Lets every work act on what is due and schedules the next sweep for the earliest deadline left.</summary>
    private void Sweep()
    {
        _nextSweep = long.MaxValue;
        var next = long.MaxValue;
        var now = Now;
        for (var i = 0; i < _slotCount; i++)
        {
            if (_slots[i] is not { } work)
            {
                continue;
            }

            try
            {
                next = Math.Min(next, work.OnSweep(now));
            }
            catch (Exception ex)
            {
                work.OnCrash(ex);
            }
        }

        next = Math.Min(next, _nextSweep); // asked for during the sweep
        _nextSweep = next == long.MaxValue ? long.MaxValue : Math.Max(next, now + MinSweepSpacing);
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
