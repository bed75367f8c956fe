using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;

namespace Wormhole.Tunnel.E2E.Infrastructure;

/// <summary>
/// Runs code inside a named network namespace without spawning a process: a NEW dedicated thread calls
/// <c>setns(CLONE_NEWNET)</c> (a Linux thread is its own task, so only that thread moves), runs the code, and exits.
/// A socket belongs to the namespace it was created in for its whole life, so sockets created here can be used
/// from any thread afterwards.
/// </summary>
public static partial class NetNs
{
    public const string NamespaceDirectory = "/var/run/netns";

    private const int CloneNewNet = 0x40000000;
    private const int SigTerm = 15;

    /// <summary>Runs <paramref name="action"/> on a fresh thread that has entered namespace <paramref name="ns"/>.</summary>
    public static T RunInNamespace<T>(string ns, Func<T> action)
    {
        ArgumentException.ThrowIfNullOrEmpty(ns);
        ArgumentNullException.ThrowIfNull(action);
        var path = Path.Combine(NamespaceDirectory, ns);
        T result = default!;
        ExceptionDispatchInfo? error = null;
        var thread = new Thread(() =>
        {
            try
            {
                using (var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read))
                {
                    if (SetNs((int)handle.DangerousGetHandle(), CloneNewNet) != 0)
                    {
                        throw new IOException($"setns({path}, CLONE_NEWNET) failed: errno {Marshal.GetLastPInvokeError()}.");
                    }
                }

                result = action();
            }
            catch (Exception ex)
            {
                error = ExceptionDispatchInfo.Capture(ex);
            }
        })
        {
            IsBackground = true,
            Name = "netns " + ns,
        };
        thread.Start();
        thread.Join(); // the thread ends here, taking its namespace membership with it
        error?.Throw();
        return result;
    }

    /// <summary>Sends SIGTERM (Process.Kill only knows SIGKILL).</summary>
    public static bool Terminate(int pid) => Kill(pid, SigTerm) == 0;

    [DllImport("libc", EntryPoint = "setns", SetLastError = true)]
    private static extern int SetNs(int fd, int nstype);

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int sig);
}
