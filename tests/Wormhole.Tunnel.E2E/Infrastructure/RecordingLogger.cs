using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Wormhole.Tunnel.E2E.Infrastructure;

/// <summary>Keeps every log line (message, state values and exception) so tests can assert on them.</summary>
public sealed class RecordingLogger<T> : ILogger<T>
{
    private readonly ConcurrentQueue<string> _lines = new();

    public IReadOnlyList<string> Lines => [.. _lines];

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        var values = state is IEnumerable<KeyValuePair<string, object?>> pairs ? string.Join(" ", pairs.Select(p => $"{p.Key}={p.Value}")) : string.Empty;
        _lines.Enqueue($"{logLevel} {eventId.Id} {formatter(state, exception)} | {values} {exception}");
    }
}

/// <summary>Wraps a runner and records every command line and stdin it was given.</summary>
public sealed class RecordingRunner(Wormhole.Tunnel.Hosting.IProcessRunner inner) : Wormhole.Tunnel.Hosting.IProcessRunner
{
    private readonly ConcurrentQueue<(string FileName, IReadOnlyList<string> Arguments, string? StandardInput)> _calls = new();

    public IReadOnlyList<(string FileName, IReadOnlyList<string> Arguments, string? StandardInput)> Calls => [.. _calls];

    public Task<Wormhole.Tunnel.Hosting.ProcessResult> RunAsync(string fileName, IReadOnlyList<string> arguments, string? standardInput = null, CancellationToken cancellationToken = default)
    {
        _calls.Enqueue((fileName, arguments.ToList(), standardInput));
        return inner.RunAsync(fileName, arguments, standardInput, cancellationToken);
    }
}
