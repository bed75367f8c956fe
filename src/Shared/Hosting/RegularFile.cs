using System.Buffers;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Wormhole.Tunnel.Hosting;

/// <summary>What <see cref="RegularFile.TryRead"/> found.</summary>
internal enum RegularFileOutcome
{
    Read,
    Missing,
    Refused,
}

/// <summary>
/// Reads a file that must be a regular file of bounded size. Symbolic links are followed (a Kubernetes ConfigMap mount
/// is a chain of them), but what they end at must be a regular file: a link to <c>/dev/zero</c> would be read forever,
/// a FIFO would block the reader until someone writes to it. The file is opened without blocking, its type is taken
/// from the open descriptor (so it cannot change between check and read), and at most <c>maxBytes + 1</c> bytes are read.
/// </summary>
internal static partial class RegularFile
{
    private const int S_IFMT = 0xF000;
    private const int S_IFREG = 0x8000;

    /// <summary>
    /// Reads <paramref name="path"/> into <paramref name="content"/>. Missing when neither it nor a directory on the way
    /// exists; Refused, with <paramref name="reason"/>, when it cannot be opened, is not a regular file or is larger
    /// than <paramref name="maxBytes"/>.
    /// </summary>
    public static RegularFileOutcome TryRead(string path, int maxBytes, out byte[] content, out string? reason)
    {
        content = [];
        reason = null;
        if (ModeOffset() is not { } modeOffset)
        {
            return TryReadPortable(path, maxBytes, ref content, ref reason);
        }

        const int O_RDONLY = 0;
        const int O_NOCTTY = 0x100;
        const int O_NONBLOCK = 0x800;
        const int O_CLOEXEC = 0x80000;
        const int ENOENT = 2;
        const int ENOTDIR = 20;
        var fd = Open(path, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            if (errno is ENOENT or ENOTDIR)
            {
                return RegularFileOutcome.Missing;
            }

            reason = $"it cannot be opened ({Marshal.GetPInvokeErrorMessage(errno)})";
            return RegularFileOutcome.Refused;
        }

        using var handle = new SafeFileHandle((nint)fd, ownsHandle: true);
        Span<byte> stat = stackalloc byte[256];
        if (FStat(fd, ref MemoryMarshal.GetReference(stat)) != 0)
        {
            reason = $"its type cannot be read ({Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())})";
            return RegularFileOutcome.Refused;
        }

        var mode = BitConverter.ToInt32(stat[modeOffset..(modeOffset + 4)]);
        if ((mode & S_IFMT) != S_IFREG)
        {
            reason = $"it is {Kind(mode & S_IFMT)}, not a regular file";
            return RegularFileOutcome.Refused;
        }

        return ReadCapped(handle, maxBytes, ref content, ref reason);
    }

    /// <summary>Where <c>st_mode</c> lies in <c>struct stat</c>: 24 on x86-64 (after dev, ino, nlink), 16 on arm64.</summary>
    private static int? ModeOffset() => !OperatingSystem.IsLinux()
        ? null
        : RuntimeInformation.ProcessArchitecture switch
        {
            Architecture.X64 => 24,
            Architecture.Arm64 => 16,
            _ => null,
        };

    private static string Kind(int type) => type switch
    {
        0x1000 => "a FIFO",
        0x2000 => "a character device",
        0x4000 => "a directory",
        0x6000 => "a block device",
        0xC000 => "a socket",
        _ => $"of type 0x{type:X4}",
    };

    private static RegularFileOutcome ReadCapped(SafeFileHandle handle, int maxBytes, ref byte[] content, ref string? reason)
    {
        var chunk = ArrayPool<byte>.Shared.Rent(64 * 1024);
        try
        {
            using var buffer = new MemoryStream();
            long offset = 0;
            while (buffer.Length <= maxBytes)
            {
                var want = (int)Math.Min(chunk.Length, maxBytes + 1L - buffer.Length);
                var n = RandomAccess.Read(handle, chunk.AsSpan(0, want), offset);
                if (n == 0)
                {
                    content = buffer.ToArray();
                    return RegularFileOutcome.Read;
                }

                buffer.Write(chunk, 0, n);
                offset += n;
            }

            reason = $"it is larger than {maxBytes} bytes";
            return RegularFileOutcome.Refused;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(chunk);
        }
    }

    /// <summary>
    /// Off Linux x86-64/arm64 (struct stat layout unknown here): the final link target's attributes, then a capped read.
    /// A FIFO cannot be told from a file this way.
    /// </summary>
    private static RegularFileOutcome TryReadPortable(string path, int maxBytes, ref byte[] content, ref string? reason)
    {
        var info = new FileInfo(path);
        var target = info.LinkTarget is null ? info : info.ResolveLinkTarget(returnFinalTarget: true) as FileInfo;
        if (target is null || !target.Exists)
        {
            if (Directory.Exists(path))
            {
                reason = "it is a directory, not a regular file";
                return RegularFileOutcome.Refused;
            }

            return RegularFileOutcome.Missing;
        }

        if ((target.Attributes & (FileAttributes.Device | FileAttributes.Directory)) != 0)
        {
            reason = "it is not a regular file";
            return RegularFileOutcome.Refused;
        }

        using var handle = File.OpenHandle(target.FullName, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        return ReadCapped(handle, maxBytes, ref content, ref reason);
    }

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "fstat", SetLastError = true)]
    private static partial int FStat(int fd, ref byte stat);
}
