using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Wormhole.Tunnel.Proxy;

/// <summary>
/// The few libc calls the splice data plane needs (epoll, eventfd, pipe2, splice, accept4, socket, connect, recv, send, shutdown,
/// getsockopt, setsockopt, getsockname, close). Linux only;
/// x64 and arm64 (the layout of <c>struct epoll_event</c> differs: packed, 12 bytes, on x64; 16 bytes on arm64).
/// Every call returns -1 and leaves errno in <see cref="Marshal.GetLastPInvokeError"/> on failure.
/// </summary>
internal static partial class LinuxNative
{
    public const int EAGAIN = 11;
    public const int EINPROGRESS = 115;
    public const int EINTR = 4;
    public const int ENOMEM = 12;
    public const int ENFILE = 23;
    public const int EMFILE = 24;
    public const int ENOBUFS = 105;

    public const uint EPOLLIN = 0x001;
    public const uint EPOLLOUT = 0x004;
    public const uint EPOLLERR = 0x008;
    public const uint EPOLLHUP = 0x010;
    public const uint EPOLLRDHUP = 0x2000;
    public const uint EPOLLEXCLUSIVE = 1u << 28;
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
    private const int SO_LINGER = 13;
    private const int SO_ATTACH_REUSEPORT_CBPF = 51;
    private const int SOCK_STREAM = 1;
    private const int SOCK_NONBLOCK = 0x800;
    private const int SOCK_CLOEXEC = 0x80000;
    private const int IPPROTO_TCP = 6;
    private const int TCP_NODELAY = 1;

    public const ushort AF_INET = 2;
    public const ushort AF_INET6 = 10;

    /// <summary>Bytes of the largest socket address this code reads (<c>struct sockaddr_in6</c>).</summary>
    public const int SockAddrSize = 28;

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

    [LibraryImport("libc", EntryPoint = "accept4", SetLastError = true)]
    private static unsafe partial int Accept4(int fd, byte* address, int* length, int flags);

    [LibraryImport("libc", EntryPoint = "socket", SetLastError = true)]
    private static partial int SocketNative(int domain, int type, int protocol);

    [LibraryImport("libc", EntryPoint = "setsockopt", SetLastError = true)]
    private static unsafe partial int SetSockOpt(int fd, int level, int name, void* value, int length);

    [LibraryImport("libc", EntryPoint = "getsockname", SetLastError = true)]
    private static unsafe partial int GetSockName(int fd, byte* address, int* length);

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

    /// <param name="address">From <see cref="IPEndPoint.Serialize"/>: on Linux its buffer is the kernel's sockaddr layout.</param>
    /// <returns>0 when connected at once, or -1 with errno (EINPROGRESS: a non-blocking connect has started). Unlike
    /// <see cref="Socket.Connect(EndPoint)"/> on a non-blocking socket, no exception for the usual EINPROGRESS.</returns>
    public static unsafe int Connect(int fd, SocketAddress address)
    {
        fixed (byte* p = address.Buffer.Span)
        {
            return ConnectNative(fd, p, address.Size);
        }
    }

    /// <summary>Accepts one pending connection as a non-blocking, close-on-exec socket; with <paramref name="peer"/> (at least
    /// <see cref="SockAddrSize"/> bytes) also the client's address.</summary>
    /// <returns>The new descriptor, or -1 with errno (EAGAIN: none pending).</returns>
    public static unsafe int Accept(int listener, Span<byte> peer)
    {
        if (peer.IsEmpty)
        {
            return Accept4(listener, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
        }

        var length = peer.Length;
        fixed (byte* p = peer)
        {
            return Accept4(listener, p, &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
        }
    }

    /// <returns>A non-blocking, close-on-exec TCP socket of <paramref name="family"/> (<see cref="AF_INET"/> or
    /// <see cref="AF_INET6"/>), or -1 with errno.</returns>
    public static int TcpSocket(ushort family) => SocketNative(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    /// <summary>Sends small segments at once (no Nagle delay).</summary>
    public static unsafe int NoDelay(int fd)
    {
        var one = 1;
        return SetSockOpt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(int));
    }

    /// <summary>
    /// Has the kernel pick among the first <paramref name="sockets"/> sockets of the SO_REUSEPORT group that
    /// <paramref name="fd"/> belongs to (in the order they started listening) by a hash of the client's address and port
    /// — a classic BPF program (SO_ATTACH_REUSEPORT_CBPF), so a socket that joins the group later is never picked. The
    /// hash is computed from the packet itself, since skb->hash is not set for every path (a TUN device's packets have
    /// none), which would send every connection to the same socket.
    /// </summary>
    /// <returns>0, or -1 with errno.</returns>
    public static unsafe int SteerToFirst(int fd, int sockets)
    {
        const uint net = 0xFFF00000; // SKF_NET_OFF: offsets from the network header
        const uint golden = 0x9E3779B1;
        var program = stackalloc ulong[]
        {
            Op(0x30, 0, 0, net), //  0: ldb [net]            version and header length
            Op(0x74, 0, 0, 4), //    1: rsh #4
            Op(0x15, 6, 0, 6), //    2: jeq #6 → 9          IPv6
            Op(0xb1, 0, 0, net), //  3: ldxb 4*([net]&0xf)  x = IPv4 header length
            Op(0x48, 0, 0, net), //  4: ldh [x + net]        source port
            Op(0x24, 0, 0, golden), // 5: mul
            Op(0x07, 0, 0, 0), //    6: tax
            Op(0x20, 0, 0, net + 12), // 7: ld [net + 12]   source address
            Op(0x05, 0, 0, 4), //    8: ja → 13
            Op(0x28, 0, 0, net + 40), // 9: ldh [net + 40]  source port after the fixed IPv6 header
            Op(0x24, 0, 0, golden), // 10: mul
            Op(0x07, 0, 0, 0), //   11: tax
            Op(0x20, 0, 0, net + 20), // 12: ld [net + 20] last 4 bytes of the source address
            Op(0xac, 0, 0, 0), //   13: xor x
            Op(0x24, 0, 0, golden), // 14: mul
            Op(0x74, 0, 0, 16), //  15: rsh #16
            Op(0x94, 0, 0, (uint)sockets), // 16: mod #sockets
            Op(0x16, 0, 0, 0), //   17: ret a
        };
        var fprog = stackalloc byte[16]; // struct sock_fprog: u16 len, padding, struct sock_filter* filter
        *(ushort*)fprog = 18;
        *(ulong**)(fprog + 8) = program;
        return SetSockOpt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog, 16);

        // struct sock_filter: u16 code, u8 jt, u8 jf, u32 k (little-endian on x64 and arm64)
        static ulong Op(ushort code, byte jt, byte jf, uint k) => code | ((ulong)jt << 16) | ((ulong)jf << 24) | ((ulong)k << 32);
    }

    /// <summary>Makes the next <see cref="Close"/> send RST instead of FIN (SO_LINGER on, zero seconds).</summary>
    public static unsafe int ResetOnClose(int fd)
    {
        var linger = stackalloc int[2] { 1, 0 };
        return SetSockOpt(fd, SOL_SOCKET, SO_LINGER, linger, 2 * sizeof(int));
    }

    /// <returns>Bytes of the socket's own address written to <paramref name="address"/> (at least
    /// <see cref="SockAddrSize"/> bytes), or -1 with errno.</returns>
    public static unsafe int LocalAddress(int fd, Span<byte> address)
    {
        var length = address.Length;
        fixed (byte* p = address)
        {
            return GetSockName(fd, p, &length) == 0 ? length : -1;
        }
    }

    /// <summary>Whether a <c>struct sockaddr_in</c>/<c>sockaddr_in6</c> holds <paramref name="address"/> (an IPv4 address
    /// also matches its IPv4-mapped IPv6 form).</summary>
    public static bool SockAddrIs(ReadOnlySpan<byte> sockaddr, IPAddress address)
    {
        Span<byte> wanted = stackalloc byte[16];
        var family = BitConverter.ToUInt16(sockaddr);
        if (family == AF_INET)
        {
            return address.AddressFamily == AddressFamily.InterNetwork
                && address.TryWriteBytes(wanted, out _) && sockaddr.Slice(4, 4).SequenceEqual(wanted[..4]);
        }

        if (family != AF_INET6)
        {
            return false;
        }

        var bytes = sockaddr.Slice(8, 16);
        if (address.AddressFamily == AddressFamily.InterNetwork)
        {
            // ::ffff:a.b.c.d
            return bytes[..10].IndexOfAnyExcept((byte)0) < 0 && bytes[10] == 0xff && bytes[11] == 0xff
                && address.TryWriteBytes(wanted, out _) && bytes[12..].SequenceEqual(wanted[..4]);
        }

        return address.TryWriteBytes(wanted, out _) && bytes.SequenceEqual(wanted);
    }

    /// <summary>The address of a <c>struct sockaddr_in</c>/<c>sockaddr_in6</c> (IPv4-mapped IPv6 as IPv4), or null.</summary>
    public static IPEndPoint? ToEndPoint(ReadOnlySpan<byte> sockaddr)
    {
        var family = BitConverter.ToUInt16(sockaddr);
        var port = (sockaddr[2] << 8) | sockaddr[3];
        if (family == AF_INET)
        {
            return new IPEndPoint(new IPAddress(sockaddr.Slice(4, 4)), port);
        }

        if (family == AF_INET6)
        {
            var address = new IPAddress(sockaddr.Slice(8, 16));
            return new IPEndPoint(address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address, port);
        }

        return null;
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
