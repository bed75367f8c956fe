using System.Collections.Concurrent;
using System.Runtime.InteropServices;

namespace Wormhole.Tunnel.Proxy;

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
