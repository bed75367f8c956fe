using System.Diagnostics;
using System.Text;

namespace Wormhole.Tunnel.Chart.Tests.Infrastructure;

public sealed record ProcessResult(int ExitCode, string StandardOutput, string StandardError)
{
    public bool Succeeded => ExitCode == 0;

    public override string ToString() => $"exit code {ExitCode}\nstdout:\n{StandardOutput}\nstderr:\n{StandardError}";
}

/// <summary>
/// The command-line tools the chart tests drive. A missing tool FAILS the test (it does not skip it): CI runs
/// scripts/install-tools first, and a developer gets told to.
/// </summary>
public static class Tools
{
    public const string InstallHint = "run `sudo bash scripts/install-tools` (CI runs it before the tests)";

    private static readonly TimeSpan DefaultTimeout = TimeSpan.FromMinutes(2);

    public static string Helm => Require("helm");

    public static string Node => Require("node");

    public static string Kubectl => Require("kubectl");

    /// <summary>The full path of <paramref name="name"/> on PATH, or null.</summary>
    public static string? Find(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "")
        .Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
        .Select(dir => Path.Combine(dir, name))
        .FirstOrDefault(File.Exists);

    public static string Require(string name) =>
        Find(name) ?? throw new InvalidOperationException($"`{name}` is not on PATH: {InstallHint}.");

    /// <summary>Runs a process to completion; output is captured, stdin is <paramref name="input"/> (or empty).</summary>
    public static async Task<ProcessResult> RunAsync(
        string file,
        IEnumerable<string> args,
        IReadOnlyDictionary<string, string?>? environment = null,
        string? input = null,
        string? workingDirectory = null,
        TimeSpan? timeout = null,
        bool clearEnvironment = false)
    {
        var info = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Repository.Root,
            StandardOutputEncoding = Encoding.UTF8,
            StandardErrorEncoding = Encoding.UTF8,
        };
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        if (clearEnvironment)
        {
            foreach (var key in info.Environment.Keys.Where(k => k is not ("PATH" or "HOME" or "TMPDIR" or "DOTNET_ROOT")).ToList())
            {
                info.Environment.Remove(key);
            }
        }

        foreach (var (key, value) in environment ?? new Dictionary<string, string?>())
        {
            info.Environment[key] = value;
        }

        using var process = Process.Start(info) ?? throw new InvalidOperationException($"Cannot start {file}.");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (input is not null)
        {
            await process.StandardInput.WriteAsync(input);
        }

        process.StandardInput.Close();
        using var cts = new CancellationTokenSource(timeout ?? DefaultTimeout);
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{Path.GetFileName(file)} {string.Join(' ', info.ArgumentList)} did not finish within {(timeout ?? DefaultTimeout).TotalSeconds:0} s.");
        }

        return new ProcessResult(process.ExitCode, await stdout, await stderr);
    }

    /// <summary>Runs a process and throws with its output when it fails.</summary>
    public static async Task<string> RunCheckedAsync(string file, IEnumerable<string> args, string? input = null, TimeSpan? timeout = null, IReadOnlyDictionary<string, string?>? environment = null)
    {
        var list = args.ToList();
        var result = await RunAsync(file, list, environment, input, timeout: timeout);
        if (!result.Succeeded)
        {
            throw new InvalidOperationException($"{Path.GetFileName(file)} {string.Join(' ', list)} failed: {result}");
        }

        return result.StandardOutput;
    }
}
