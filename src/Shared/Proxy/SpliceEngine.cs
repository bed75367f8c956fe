using System.Runtime.InteropServices;

namespace Wormhole.Tunnel.Proxy;

/// <summary>
/// The Linux data plane: a few event-loop threads (one per core, at most 8), each with its own epoll set, each accepting
/// from every listener and running the connections it accepted from start to end (<see cref="LoopListener"/>). Small messages
/// go through the loop's scratch buffer (recv, send), bulk data socket → pipe → socket with splice(2), so bulk payload
/// never enters user space, and an idle connection owns no buffer (a direction borrows a pipe or a stash from its loop
/// only while bytes are in flight). This is nginx's shape — one thread reads a socket when epoll says it is readable —
/// without nginx's copies of bulk data; the .NET socket layer instead posts a receive before
/// data arrives and hands every completion (accepts included) from its epoll thread to a pool thread, which on small
/// exchanges costs more than the transfer itself (docs/benchmarks.md, "What limits it").
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

    public IReadOnlyList<EpollLoop> Loops => _loops;

    /// <summary>Loops handed out round-robin (for work that does not arrive through a listener).</summary>
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
