using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace Wormhole.Tunnel.WireGuard;

/// <summary>
/// A secret handed to <c>wg</c> as a file it can open, without touching a disk: an anonymous in-memory file
/// (<c>memfd_create</c>, close-on-exec so no other child inherits it), named to <c>wg</c> as
/// <c>/proc/&lt;our pid&gt;/fd/&lt;n&gt;</c>. Only a path is on the command line. Disposed (and gone) once <c>wg</c> has
/// run. <c>wg set … peer K preshared-key FILE</c> reads a file per peer, and one command can set many peers, which
/// stdin alone cannot serve.
/// </summary>
internal sealed partial class SecretFile : IDisposable
{
    private const uint MfdCloexec = 1;
    private readonly SafeFileHandle _handle;

    private SecretFile(SafeFileHandle handle, int fd)
    {
        _handle = handle;
        Path = $"/proc/{Environment.ProcessId}/fd/{fd}";
    }

    /// <summary>What <c>wg</c> opens.</summary>
    public string Path { get; }

    public static SecretFile Create(string secret)
    {
        var fd = MemfdCreate("wormhole-secret", MfdCloexec);
        if (fd < 0)
        {
            throw new WireGuardCommandException($"memfd_create failed (errno {Marshal.GetLastPInvokeError()}): cannot hand a preshared key to wg without writing it to disk");
        }

        var handle = new SafeFileHandle(fd, ownsHandle: true);
        var bytes = Encoding.ASCII.GetBytes(secret + "\n");
        try
        {
            RandomAccess.Write(handle, bytes, 0);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
        finally
        {
            Array.Clear(bytes);
        }

        return new SecretFile(handle, fd);
    }

    public void Dispose() => _handle.Dispose();

    [LibraryImport("libc", EntryPoint = "memfd_create", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int MemfdCreate(string name, uint flags);
}
