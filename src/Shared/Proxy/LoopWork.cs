namespace Wormhole.Tunnel.Proxy;

/// <summary>Something a loop watches (a listening socket, a connection). Touched only on its loop's thread once started.</summary>
internal abstract class LoopWork
{
    /// <summary>The command <see cref="EpollLoop.Post"/> sends first: the work gets its slot, then <see cref="OnCommand"/>.</summary>
    public const int StartCommand = 0;

    /// <summary>The command that stops a work (what stopping means is the work's own).</summary>
    public const int StopCommand = 1;

    internal int Slot = -1;
    internal uint Generation;
    private EpollLoop? _loop;

    protected EpollLoop Loop => _loop!;

    /// <summary>Whether the work holds a slot of its loop (it was started and has not let go yet).</summary>
    internal bool Active => Slot >= 0;

    /// <summary>Readiness of one of the work's descriptors (<paramref name="side"/> is what it registered with).</summary>
    internal abstract void OnEvent(int side, uint events);

    /// <summary>A command posted with <see cref="EpollLoop.Post"/>, on the loop's thread (also when the work has already
    /// let go of its slot: a command may cross with the work's own end).</summary>
    internal abstract void OnCommand(int command);

    /// <summary>Continues work that <see cref="EpollLoop.Defer"/>red itself.</summary>
    internal virtual void OnResume()
    {
    }

    /// <summary>The loop's timer sweep: acts on whatever is due at <paramref name="now"/> (<see cref="EpollLoop.Now"/>'s
    /// scale) and returns when the work wants to be looked at again, or <see cref="long.MaxValue"/>.</summary>
    internal virtual long OnSweep(long now) => long.MaxValue;

    internal abstract void OnCrash(Exception exception);

    internal void Bind(EpollLoop loop) => _loop = loop;

    protected ulong EventData(int side) => ((ulong)Generation << 32) | (uint)((Slot << 1) | side);
}
