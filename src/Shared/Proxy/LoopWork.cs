namespace Wormhole.Tunnel.Proxy;

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
