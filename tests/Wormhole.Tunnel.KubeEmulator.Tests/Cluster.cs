using System.Diagnostics;
using System.Text.Json.Nodes;

namespace Wormhole.Tunnel.KubeEmulator.Tests;

/// <summary>An emulator with its kubeconfig in a scratch directory, and the real kubectl pointed at it.</summary>
public sealed class Cluster : IAsyncDisposable
{
    private Cluster(KubeEmulator emulator, string directory)
    {
        Emulator = emulator;
        Directory = directory;
        Kubeconfig = emulator.WriteKubeconfig(Path.Combine(directory, "kubeconfig"));
    }

    public KubeEmulator Emulator { get; }

    public string Directory { get; }

    public string Kubeconfig { get; }

    public static async Task<Cluster> StartAsync(KubeEmulatorOptions? options = null)
    {
        var directory = Path.Combine(Path.GetTempPath(), "kube-emulator-tests", Guid.NewGuid().ToString("N"));
        System.IO.Directory.CreateDirectory(directory);
        return new Cluster(await KubeEmulator.StartAsync(options), directory);
    }

    public Task<KubectlResult> KubectlAsync(params string[] args) => Kubectl.RunAsync(Kubeconfig, Directory, null, args);

    /// <summary>Runs kubectl with <paramref name="stdin"/> as its input (for <c>apply -f -</c>).</summary>
    public Task<KubectlResult> KubectlWithInputAsync(string stdin, params string[] args) => Kubectl.RunAsync(Kubeconfig, Directory, stdin, args);

    /// <summary>Runs kubectl, requires success and parses its <c>-o json</c> output.</summary>
    public async Task<JsonObject> KubectlJsonAsync(params string[] args) =>
        (JsonObject)JsonNode.Parse((await KubectlAsync([.. args, "-o", "json"])).ShouldSucceed().Output)!;

    public async ValueTask DisposeAsync()
    {
        await Emulator.DisposeAsync();
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
            // Leftovers in the temp directory are harmless.
        }
    }
}

public sealed record KubectlResult(int ExitCode, string Output, string Error)
{
    public KubectlResult ShouldSucceed()
    {
        ExitCode.Should().Be(0, "kubectl printed: {0}{1}", Error, Output);
        return this;
    }

    public KubectlResult ShouldFail()
    {
        ExitCode.Should().NotBe(0, "kubectl printed: {0}", Output);
        return this;
    }
}

public static class Kubectl
{
    /// <summary>The kubectl binary: <c>$KUBECTL</c>, else <c>/usr/bin/kubectl</c> (v1.32 on the machine image).</summary>
    public static string Binary { get; } = Environment.GetEnvironmentVariable("KUBECTL") is { Length: > 0 } path ? path : "/usr/bin/kubectl";

    public static bool Available => File.Exists(Binary);

    public static async Task<KubectlResult> RunAsync(string kubeconfig, string directory, string? stdin, params string[] args)
    {
        var start = new ProcessStartInfo(Binary)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            WorkingDirectory = directory,
        };
        foreach (var arg in new[] { "--kubeconfig", kubeconfig, "--cache-dir", Path.Combine(directory, "cache") }.Concat(args))
        {
            start.ArgumentList.Add(arg);
        }

        start.Environment["HOME"] = directory;
        start.Environment.Remove("KUBECONFIG");
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        await process.StandardInput.WriteAsync(stdin ?? "");
        process.StandardInput.Close();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"kubectl {string.Join(' ', args)} did not finish within 60 s");
        }

        return new KubectlResult(process.ExitCode, await output, await error);
    }
}

/// <summary>A fact that needs the real kubectl; skipped with the reason when it is not installed.</summary>
public sealed class KubectlFactAttribute : FactAttribute
{
    public KubectlFactAttribute()
    {
        if (!Kubectl.Available)
        {
            Skip = $"Needs kubectl at {Kubectl.Binary} (set KUBECTL to override).";
        }
    }
}
