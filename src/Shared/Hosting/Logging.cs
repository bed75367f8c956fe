using Microsoft.Extensions.Logging;
using Serilog;
using Serilog.Events;
using Serilog.Extensions.Logging;
using Serilog.Core;
using Serilog.Formatting;
using Serilog.Formatting.Compact;
using Serilog.Formatting.Display;

namespace Wormhole.Tunnel.Hosting;

/// <summary>
/// Serilog behind Microsoft.Extensions.Logging: human console lines by default, compact JSON lines (CLEF:
/// <c>@t</c>, <c>@m</c>, <c>@i</c>, <c>@l</c> unless Information, then the properties) for clusters.
/// </summary>
public static class Logging
{
    /// <summary>The console line: time, level, category, the message (strings as they are: remote ones arrive escaped).</summary>
    internal const string ConsoleTemplate = "{Timestamp:HH:mm:ss.fff} {Level:u3} {SourceContext:l}: {Message:lj}{NewLine}{Exception}";

    public static ILoggerFactory Create(bool json, bool debug) => Create(json, debug, output: null);

    /// <summary>As <see cref="Create(bool, bool)"/>, writing to <paramref name="output"/> instead of the console when given.</summary>
    internal static ILoggerFactory Create(bool json, bool debug, TextWriter? output)
    {
        var config = new LoggerConfiguration()
            .MinimumLevel.Is(debug ? LogEventLevel.Debug : LogEventLevel.Information)
            .MinimumLevel.Override("Microsoft", LogEventLevel.Warning)
            .MinimumLevel.Override("System.Net.Http", LogEventLevel.Warning)
            .Enrich.FromLogContext();
        ITextFormatter formatter = json ? new RenderedCompactJsonFormatter() : new MessageTemplateTextFormatter(ConsoleTemplate);
        config = output is null ? config.WriteTo.Console(formatter) : config.WriteTo.Sink(new WriterSink(formatter, output));
        return new SerilogFactory(config.CreateLogger());
    }

    private sealed class WriterSink(ITextFormatter formatter, TextWriter output) : ILogEventSink
    {
        private readonly Lock _gate = new();

        public void Emit(LogEvent logEvent)
        {
            lock (_gate)
            {
                formatter.Format(logEvent, output);
                output.Flush();
            }
        }
    }

    /// <summary>The factory <see cref="Create(bool, bool)"/> gives: also hands its Serilog logger to the HTTP request log.</summary>
    internal sealed class SerilogFactory(Logger logger) : ILoggerFactory
    {
        private readonly SerilogLoggerFactory _inner = new(logger, dispose: true);

        public Serilog.ILogger Logger => logger;

        public Microsoft.Extensions.Logging.ILogger CreateLogger(string categoryName) => _inner.CreateLogger(categoryName);

        public void AddProvider(ILoggerProvider provider) => _inner.AddProvider(provider);

        public void Dispose() => _inner.Dispose();
    }
}
