using System.Runtime.InteropServices;

namespace Wormhole.Tunnel.Proxy;

/// <summary>
/// The few libc calls the splice data plane needs (epoll, eventfd, pipe2, splice, recv, send, connect, shutdown, getsockopt). Linux only;
/// x64 and arm64 (the layout of <c>struct epoll_event</c> differs: packed, 12 bytes, on x64; 16 bytes on arm64).
/// Every call returns -1 and leaves errno in <see cref="Marshal.GetLastPInvokeError"/> on failure.
/// </summary>
internal static partial class LinuxNative
{
    public const int EAGAIN = 11;
    public const int EINPROGRESS = 115;
    public const int EINTR = 4;

    public const uint EPOLLIN = 0x001;
    public const uint EPOLLOUT = 0x004;
    public const uint EPOLLERR = 0x008;
    public const uint EPOLLHUP = 0x010;
    public const uint EPOLLRDHUP = 0x2000;
    public const uint EPOLLET = 1u << 31;

    public const int EPOLL_CTL_ADD = 1;
    public const int EPOLL_CTL_DEL = 2;
    public const int EPOLL_CTL_MOD = 3;

    private const int EPOLL_CLOEXEC = 0x80000;
    private const int EFD_CLOEXEC = 0x80000;
    private const int EFD_NONBLOCK = 0x800;
    private const int O_CLOEXEC = 0x80000;
    private const int O_NONBLOCK = 0x800;

    public const uint SPLICE_F_MOVE = 1;
    public const uint SPLICE_F_NONBLOCK = 2;

    public const int SHUT_WR = 1;

    private const int MSG_NOSIGNAL = 0x4000;

    private const int SOL_SOCKET = 1;
    private const int SO_ERROR = 4;

    /// <summary>Bytes per <c>struct epoll_event</c> and the offset of its data field, or 0 where unsupported.</summary>
    public static readonly int EventSize = RuntimeInformation.ProcessArchitecture switch
    {
        Architecture.X64 => 12,
        Architecture.Arm64 => 16,
        _ => 0,
    };

    public static readonly int EventDataOffset = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 4 : 8;

    public static bool Supported => OperatingSystem.IsLinux() && EventSize != 0;

    [LibraryImport("libc", EntryPoint = "epoll_create1", SetLastError = true)]
    private static partial int EpollCreate1(int flags);

    [LibraryImport("libc", EntryPoint = "epoll_ctl", SetLastError = true)]
    private static unsafe partial int EpollCtl(int epfd, int op, int fd, byte* ev);

    [LibraryImport("libc", EntryPoint = "epoll_wait", SetLastError = true)]
    public static unsafe partial int EpollWait(int epfd, byte* events, int maxEvents, int timeout);

    [LibraryImport("libc", EntryPoint = "eventfd", SetLastError = true)]
    private static partial int EventFd(uint initval, int flags);

    [LibraryImport("libc", EntryPoint = "pipe2", SetLastError = true)]
    private static unsafe partial int Pipe2(int* fds, int flags);

    [LibraryImport("libc", EntryPoint = "splice", SetLastError = true)]
    private static partial nint SpliceNative(int fdIn, nint offIn, int fdOut, nint offOut, nuint len, uint flags);

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    private static unsafe partial nint Read(int fd, byte* buffer, nuint count);

    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    private static unsafe partial nint Write(int fd, byte* buffer, nuint count);

    [LibraryImport("libc", EntryPoint = "recv", SetLastError = true)]
    private static unsafe partial nint RecvNative(int fd, byte* buffer, nuint length, int flags);

    [LibraryImport("libc", EntryPoint = "send", SetLastError = true)]
    private static unsafe partial nint SendNative(int fd, byte* buffer, nuint length, int flags);

    [LibraryImport("libc", EntryPoint = "connect", SetLastError = true)]
    private static unsafe partial int ConnectNative(int fd, byte* address, int length);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "shutdown", SetLastError = true)]
    public static partial int Shutdown(int fd, int how);

    [LibraryImport("libc", EntryPoint = "getsockopt", SetLastError = true)]
    private static unsafe partial int GetSockOpt(int fd, int level, int name, int* value, int* length);

    /// <returns>The epoll descriptor, or -1.</returns>
    public static int CreateEpoll() => EpollCreate1(EPOLL_CLOEXEC);

    /// <returns>A non-blocking eventfd, or -1.</returns>
    public static int CreateEventFd() => EventFd(0, EFD_CLOEXEC | EFD_NONBLOCK);

    public static unsafe int EpollControl(int epfd, int op, int fd, uint events, ulong data)
    {
        var ev = stackalloc byte[16];
        *(uint*)ev = events;
        *(ulong*)(ev + EventDataOffset) = data; // unaligned on x64: fine there
        return EpollCtl(epfd, op, fd, ev);
    }

    /// <returns>0 and the read and write ends, or -1.</returns>
    public static unsafe int CreatePipe(out int read, out int write)
    {
        var fds = stackalloc int[2];
        var rc = Pipe2(fds, O_CLOEXEC | O_NONBLOCK);
        read = fds[0];
        write = fds[1];
        return rc;
    }

    /// <returns>Bytes moved, 0 at end of input, or -1 with errno (EAGAIN: nothing to read or no room to write).</returns>
    public static nint Splice(int from, int to, int length) =>
        SpliceNative(from, 0, to, 0, (nuint)length, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);

    /// <returns>Bytes received into <paramref name="buffer"/> (fewer than its length only when the socket's receive queue is
    /// empty), 0 at end of input, or -1 with errno (EAGAIN: nothing to read). The socket must be non-blocking.</returns>
    public static unsafe nint Receive(int fd, Span<byte> buffer)
    {
        fixed (byte* p = buffer)
        {
            return RecvNative(fd, p, (nuint)buffer.Length, 0);
        }
    }

    /// <returns>Bytes sent (possibly fewer than given), or -1 with errno (EAGAIN: no room). No SIGPIPE.</returns>
    public static unsafe nint Send(int fd, ReadOnlySpan<byte> buffer)
    {
        fixed (byte* p = buffer)
        {
            return SendNative(fd, p, (nuint)buffer.Length, MSG_NOSIGNAL);
        }
    }

    /// <returns>0 when connected at once, or -1 with errno (EINPROGRESS: a non-blocking connect has started). Unlike
    /// <see cref="System.Net.Sockets.Socket.Connect(System.Net.EndPoint)"/> on a non-blocking socket, no exception for
    /// the usual EINPROGRESS.</returns>
    public static unsafe int Connect(int fd, System.Net.IPEndPoint endPoint)
    {
        var address = endPoint.Serialize(); // the platform's own sockaddr layout
        fixed (byte* p = address.Buffer.Span)
        {
            return ConnectNative(fd, p, address.Size);
        }
    }

    /// <summary>Adds one to an eventfd's counter (wakes its epoll waiter).</summary>
    public static unsafe void Signal(int eventFd)
    {
        ulong one = 1;
        _ = Write(eventFd, (byte*)&one, sizeof(ulong));
    }

    /// <summary>Resets an eventfd's counter.</summary>
    public static unsafe void Drain(int eventFd)
    {
        ulong value;
        _ = Read(eventFd, (byte*)&value, sizeof(ulong));
    }

    /// <returns>The socket's pending error (errno of a finished non-blocking connect: 0 when it succeeded).</returns>
    public static unsafe int SocketError(int fd)
    {
        int value = 0, length = sizeof(int);
        return GetSockOpt(fd, SOL_SOCKET, SO_ERROR, &value, &length) == 0 ? value : Marshal.GetLastPInvokeError();
    }
}
