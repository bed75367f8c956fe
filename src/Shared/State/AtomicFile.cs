using System.Runtime.InteropServices;

namespace Wormhole.Tunnel.State;

/// <summary>A state file that exists but cannot be read back: reported, never silently replaced.</summary>
public sealed class StateCorruptException(string path, string reason)
    : Exception($"State file {path} is corrupt ({reason}); move it away to start fresh, or restore it from a backup.")
{
    public string Path { get; } = path;
}

/// <summary>
/// Writes whole files atomically: temp file (mode 0600) → fsync → rename over the target → fsync the directory.
/// A kill -9 at any moment leaves either the old or the new content, never a torn file.
/// </summary>
public static partial class AtomicFile
{
    public static async Task WriteAsync(string path, ReadOnlyMemory<byte> content, CancellationToken cancellationToken = default)
    {
        var directory = Path.GetDirectoryName(Path.GetFullPath(path))!;
        Directory.CreateDirectory(directory);
        var temp = Path.Combine(directory, $".{Path.GetFileName(path)}.{Guid.NewGuid():N}.tmp");
        var options = new FileStreamOptions
        {
            Mode = FileMode.CreateNew,
            Access = FileAccess.Write,
            Share = FileShare.None,
        };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        }

        try
        {
            await using (var stream = new FileStream(temp, options))
            {
                await stream.WriteAsync(content, cancellationToken);
                stream.Flush(flushToDisk: true);
            }

            File.Move(temp, path, overwrite: true);
        }
        catch
        {
            File.Delete(temp);
            throw;
        }

        FsyncDirectory(directory);
    }

    private static void FsyncDirectory(string directory)
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        const int O_RDONLY = 0;
        const int O_DIRECTORY = 0x10000;
        var fd = Open(directory, O_RDONLY | O_DIRECTORY);
        if (fd < 0)
        {
            return;
        }

        _ = Fsync(fd);
        _ = Close(fd);
    }

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int Fsync(int fd);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);
}
