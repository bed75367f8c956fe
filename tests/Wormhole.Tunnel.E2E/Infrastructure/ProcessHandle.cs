using System.Diagnostics;
using System.Text;

namespace Wormhole.Tunnel.E2E.Infrastructure;

/// <summary>A long-running process inside a site's namespace, its stdout and stderr captured together.</summary>
public sealed class ProcessHandle : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();
    private readonly Lock _lock = new();
    private TaskCompletionSource _changed = NewSignal();
    private bool _disposed;
    private int _exitCode = -1;

    internal ProcessHandle(Process process, string description)
    {
        _process = process;
        Description = description;
        _process.OutputDataReceived += (_, e) => Append(e.Data);
        _process.ErrorDataReceived += (_, e) => Append(e.Data);
        _process.Exited += (_, _) => Signal();
        _process.EnableRaisingEvents = true;
    }

    /// <summary>The command line, for messages.</summary>
    public string Description { get; }

    public int Id => _process.Id;

    /// <summary>Everything printed so far (stdout and stderr interleaved, line by line).</summary>
    public string Output
    {
        get
        {
            lock (_lock)
            {
                return _output.ToString();
            }
        }
    }

    public bool HasExited => _disposed || _process.HasExited;

    /// <summary>The exit code (-1 when the handle was disposed before the process ended on its own).</summary>
    public int ExitCode => _disposed ? _exitCode : _process.ExitCode;

    internal void BeginReading()
    {
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    /// <summary>Waits until the output contains <paramref name="substring"/>; throws (with the output) on timeout or exit.</summary>
    public async Task WaitForOutputAsync(string substring, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            Task changed;
            lock (_lock)
            {
                if (_output.ToString().Contains(substring, StringComparison.Ordinal))
                {
                    return;
                }

                changed = _changed.Task;
            }

            if (HasExited)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                await _process.WaitForExitAsync(); // drains the output streams
                if (Output.Contains(substring, StringComparison.Ordinal))
                {
                    return;
                }

                throw new InvalidOperationException($"`{Description}` exited with code {_process.ExitCode} before printing \"{substring}\". Output:\n{Output}");
            }

            var remaining = deadline - DateTime.UtcNow;
            if (remaining <= TimeSpan.Zero)
            {
                throw new TimeoutException($"`{Description}` did not print \"{substring}\" within {timeout}. Output:\n{Output}");
            }

            try
            {
                await changed.WaitAsync(remaining);
            }
            catch (TimeoutException)
            {
                // loop once more to report with the output
            }
        }
    }

    /// <summary>SIGKILL, as a crash would.</summary>
    public void Kill()
    {
        if (_disposed)
        {
            return;
        }

        try
        {
            _process.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException)
        {
            // exited already
        }
    }

    /// <summary>SIGTERM, then waits (bounded); SIGKILL if it does not stop in time.</summary>
    public async Task StopAsync(TimeSpan? timeout = null)
    {
        if (HasExited)
        {
            return;
        }

        NetNs.Terminate(_process.Id);
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(10));
        try
        {
            await _process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            Kill();
            await WaitForExitAsync(TimeSpan.FromSeconds(5));
        }
    }

    /// <summary>Waits for the process to end (bounded); true when it has.</summary>
    public async Task<bool> WaitForExitAsync(TimeSpan timeout)
    {
        if (_disposed)
        {
            return true;
        }

        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token);
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    /// <summary>Kills the process if it still runs (bounded wait), then releases it. Safe to call twice.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        try
        {
            if (!_process.HasExited)
            {
                Kill();
                _process.WaitForExit(TimeSpan.FromSeconds(5));
            }

            if (_process.HasExited)
            {
                _exitCode = _process.ExitCode;
            }
        }
        catch (InvalidOperationException)
        {
            // never started or already released
        }

        _disposed = true;
        _process.Dispose();
    }

    public override string ToString() => Description;

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    private void Append(string? line)
    {
        if (line is null)
        {
            Signal();
            return;
        }

        lock (_lock)
        {
            _output.Append(line).Append('\n');
        }

        Signal();
    }

    private void Signal()
    {
        TaskCompletionSource previous;
        lock (_lock)
        {
            previous = _changed;
            _changed = NewSignal();
        }

        previous.TrySetResult();
    }
}
