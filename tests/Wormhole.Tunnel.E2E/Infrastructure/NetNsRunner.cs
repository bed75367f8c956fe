using Wormhole.Tunnel.Hosting;

namespace Wormhole.Tunnel.E2E.Infrastructure;

/// <summary>Runs every command inside one network namespace: <c>ip netns exec NS cmd args…</c>.</summary>
public sealed class NetNsRunner(string @namespace, IProcessRunner? inner = null) : IProcessRunner
{
    private readonly IProcessRunner _inner = inner ?? new ProcessRunner();

    public string Namespace { get; } = @namespace;

    public Task<ProcessResult> RunAsync(string fileName, IReadOnlyList<string> arguments, string? standardInput = null, CancellationToken cancellationToken = default) =>
        _inner.RunAsync(TestTools.Ip, ["netns", "exec", Namespace, fileName, .. arguments], standardInput, cancellationToken);
}
