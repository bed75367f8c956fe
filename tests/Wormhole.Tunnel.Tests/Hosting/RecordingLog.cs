using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Wormhole.Tunnel.Tests.Hosting;

/// <summary>One recorded log line: level, event id and the rendered message.</summary>
internal sealed record LogLine(LogLevel Level, int EventId, string Category, string Message);

/// <summary>Keeps every log line of the loggers it hands out, so tests can assert on what an operator would read.</summary>
internal sealed class RecordingLog
{
    private readonly ConcurrentQueue<LogLine> _lines = new();

    public IReadOnlyList<LogLine> Lines => [.. _lines];

    public ILogger<T> For<T>() => new Logger<T>(this, typeof(T).Name);

    public ILogger For(string category) => new Logger<object>(this, category);

    /// <summary>Lines with this event id.</summary>
    public IReadOnlyList<LogLine> WithEvent(int eventId) => Lines.Where(l => l.EventId == eventId).ToList();

    private sealed class Logger<T>(RecordingLog log, string category) : ILogger<T>
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            log._lines.Enqueue(new LogLine(logLevel, eventId.Id, category, formatter(state, exception)));
    }
}
