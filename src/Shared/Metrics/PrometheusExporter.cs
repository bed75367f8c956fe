using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;

namespace Wormhole.Tunnel.Metrics;

/// <summary>
/// Listens to the instruments of the given meters and renders them in the Prometheus text exposition format 0.0.4.
/// Counter / ObservableCounter → <c>counter</c> (name gets <c>_total</c> if missing); UpDownCounter, Gauge,
/// ObservableGauge, ObservableUpDownCounter → <c>gauge</c>. Histograms are not exported.
/// Recording is lock-free: one cached series per (instrument, tag set), updated with Interlocked.
/// </summary>
public sealed class PrometheusExporter : IDisposable
{
    private readonly HashSet<string> _meterNames;
    private readonly MeterListener _listener = new();
    private readonly ConcurrentDictionary<Instrument, InstrumentState> _instruments = new();
    private readonly Lock _scrapeLock = new();

    public PrometheusExporter(params string[] meterNames)
    {
        _meterNames = new HashSet<string>(meterNames.Length == 0 ? [WormholeMetrics.MeterName] : meterNames, StringComparer.Ordinal);
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (!_meterNames.Contains(instrument.Meter.Name) || InstrumentState.KindOf(instrument) is not { } kind)
            {
                return;
            }
            listener.EnableMeasurementEvents(instrument, _instruments.GetOrAdd(instrument, i => new InstrumentState(i, kind)));
        };
        _listener.MeasurementsCompleted = (instrument, _) => _instruments.TryRemove(instrument, out InstrumentState? _);
        _listener.SetMeasurementEventCallback<long>(static (_, v, tags, s) => ((InstrumentState)s!).Record(v, 0, tags));
        _listener.SetMeasurementEventCallback<int>(static (_, v, tags, s) => ((InstrumentState)s!).Record(v, 0, tags));
        _listener.SetMeasurementEventCallback<short>(static (_, v, tags, s) => ((InstrumentState)s!).Record(v, 0, tags));
        _listener.SetMeasurementEventCallback<byte>(static (_, v, tags, s) => ((InstrumentState)s!).Record(v, 0, tags));
        _listener.SetMeasurementEventCallback<double>(static (_, v, tags, s) => ((InstrumentState)s!).Record(0, v, tags));
        _listener.SetMeasurementEventCallback<float>(static (_, v, tags, s) => ((InstrumentState)s!).Record(0, v, tags));
        _listener.Start();
    }

    public const string ContentType = "text/plain; version=0.0.4; charset=utf-8";

    /// <summary>Collects observable instruments and returns the whole exposition.</summary>
    public string Scrape()
    {
        using var writer = new StringWriter(CultureInfo.InvariantCulture);
        WriteTo(writer);
        return writer.ToString();
    }

    public void WriteTo(TextWriter writer)
    {
        var families = new SortedDictionary<string, Family>(StringComparer.Ordinal);
        lock (_scrapeLock)
        {
            // Observable series are re-read on every scrape; a tag set the callback no longer reports disappears.
            foreach (var state in _instruments.Values)
            {
                if (state.IsObservable)
                {
                    state.Clear();
                }
            }
            try
            {
                _listener.RecordObservableInstruments();
            }
            catch (Exception)
            {
                // One throwing callback must not take the endpoint down; the other instruments are still collected.
            }
            foreach (var state in _instruments.Values)
            {
                state.CollectInto(families);
            }
        }
        AddProcessMetrics(families);
        foreach (var family in families.Values)
        {
            family.WriteTo(writer);
        }
    }

    public void Dispose() => _listener.Dispose();

    private static readonly Lazy<double> s_startTime = new(() =>
    {
        using var process = Process.GetCurrentProcess();
        return (process.StartTime.ToUniversalTime() - DateTime.UnixEpoch).TotalSeconds;
    });

    private static void AddProcessMetrics(SortedDictionary<string, Family> families)
    {
        void Add(string name, string help, string type, long l, double d) =>
            families.TryAdd(name, new Family(name, help, type).Add("", l, d));

        Add("process_resident_memory_bytes", "Resident memory size in bytes.", "gauge", Environment.WorkingSet, 0);
        Add("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", "counter",
            0, Environment.CpuUsage.TotalTime.TotalSeconds);
        Add("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", "gauge", 0, s_startTime.Value);
        Add("dotnet_gc_heap_bytes", "Bytes currently thought to be allocated on the GC heap.", "gauge", GC.GetTotalMemory(false), 0);
        if (OperatingSystem.IsLinux())
        {
            try
            {
                Add("process_open_fds", "Number of open file descriptors.", "gauge",
                    Directory.GetFileSystemEntries("/proc/self/fd").Length, 0);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Not readable here: skip the metric, like the Go client.
            }
        }
    }

    // ---- text format helpers ----

    /// <summary>Metric names: [a-zA-Z_:][a-zA-Z0-9_:]*; anything else (e.g. '.') becomes '_'.</summary>
    internal static string SanitizeMetricName(string name) => Sanitize(name, allowColon: true);

    /// <summary>Label names: [a-zA-Z_][a-zA-Z0-9_]*.</summary>
    internal static string SanitizeLabelName(string name) => Sanitize(name, allowColon: false);

    private static string Sanitize(string name, bool allowColon)
    {
        if (name.Length == 0)
        {
            return "_";
        }
        var sb = new StringBuilder(name.Length + 1);
        if (char.IsAsciiDigit(name[0]))
        {
            sb.Append('_');
        }
        foreach (var c in name)
        {
            sb.Append(char.IsAsciiLetterOrDigit(c) || c == '_' || (allowColon && c == ':') ? c : '_');
        }
        return sb.ToString();
    }

    /// <summary>HELP text: escapes '\' and newline.</summary>
    internal static string EscapeHelp(string text) => text.Replace("\\", @"\\").Replace("\n", @"\n");

    /// <summary>Label values: escapes '\', '"' and newline.</summary>
    internal static string EscapeLabelValue(string text) => EscapeHelp(text).Replace("\"", "\\\"");

    internal static string FormatValue(long l, double d)
    {
        if (d == 0)
        {
            return l.ToString(CultureInfo.InvariantCulture);
        }
        var v = l + d;
        return double.IsNaN(v) ? "NaN"
            : double.IsPositiveInfinity(v) ? "+Inf"
            : double.IsNegativeInfinity(v) ? "-Inf"
            : v.ToString("R", CultureInfo.InvariantCulture);
    }

    private sealed class Family(string name, string help, string type)
    {
        private readonly SortedDictionary<string, (long L, double D)> _samples = new(StringComparer.Ordinal);

        public Family Add(string labels, long l, double d)
        {
            // Same name and labels from two instruments (e.g. two meters with one name): sum them, never emit duplicates.
            _samples[labels] = _samples.TryGetValue(labels, out var old) ? (old.L + l, old.D + d) : (l, d);
            return this;
        }

        public void WriteTo(TextWriter w)
        {
            w.Write($"# HELP {name} {EscapeHelp(help)}\n# TYPE {name} {type}\n");
            foreach (var (labels, (l, d)) in _samples)
            {
                w.Write($"{name}{labels} {FormatValue(l, d)}\n");
            }
        }
    }

    private enum Kind { Counter, UpDownCounter, Gauge, ObservableCounter, ObservableUpDownCounter, ObservableGauge }

    private sealed class InstrumentState
    {
        private readonly Instrument _instrument;
        private readonly Kind _kind;
        private readonly string _name;
        private readonly ConcurrentDictionary<TagSet, Series> _series = new(TagSetComparer.Instance);
        private readonly ConcurrentDictionary<TagSet, Series>.AlternateLookup<ReadOnlySpan<KeyValuePair<string, object?>>> _lookup;

        public InstrumentState(Instrument instrument, Kind kind)
        {
            (_instrument, _kind, _name) = (instrument, kind, SanitizeMetricName(instrument.Name));
            if (kind is Kind.Counter or Kind.ObservableCounter && !_name.EndsWith("_total", StringComparison.Ordinal))
            {
                _name += "_total";
            }
            _lookup = _series.GetAlternateLookup<ReadOnlySpan<KeyValuePair<string, object?>>>();
        }

        public bool IsObservable => _kind >= Kind.ObservableCounter;

        public static Kind? KindOf(Instrument instrument)
        {
            var type = instrument.GetType();
            if (!type.IsGenericType)
            {
                return null;
            }
            var def = type.GetGenericTypeDefinition();
            return def == typeof(Counter<>) ? Kind.Counter
                : def == typeof(UpDownCounter<>) ? Kind.UpDownCounter
                : def == typeof(Gauge<>) ? Kind.Gauge
                : def == typeof(ObservableCounter<>) ? Kind.ObservableCounter
                : def == typeof(ObservableUpDownCounter<>) ? Kind.ObservableUpDownCounter
                : def == typeof(ObservableGauge<>) ? Kind.ObservableGauge
                : null;
        }

        public void Record(long l, double d, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            if (_kind == Kind.Counter && (l < 0 || !(d >= 0)))
            {
                return; // a Prometheus counter never goes down
            }
            if (!_lookup.TryGetValue(tags, out var series))
            {
                series = _series.GetOrAdd(TagSet.Create(tags), static key => new Series(key));
            }
            if (_kind is Kind.Counter or Kind.UpDownCounter)
            {
                series.Add(l, d);
            }
            else
            {
                series.Set(l, d);
            }
        }

        public void Clear() => _series.Clear();

        public void CollectInto(SortedDictionary<string, Family> families)
        {
            if (!families.TryGetValue(_name, out var family))
            {
                families[_name] = family = new Family(_name, _instrument.Description ?? "",
                    _kind is Kind.Counter or Kind.ObservableCounter ? "counter" : "gauge");
            }
            foreach (var series in _series.Values)
            {
                var (l, d) = series.Read();
                family.Add(series.Tags.Rendered, l, d);
            }
            if (_series.IsEmpty && _kind is Kind.Counter or Kind.UpDownCounter)
            {
                family.Add("", 0, 0); // listed before the first measurement, so dashboards see it
            }
        }
    }

    private sealed class Series(TagSet tags)
    {
        private long _long;
        private double _double;

        public TagSet Tags { get; } = tags;

        public void Add(long l, double d)
        {
            if (l != 0)
            {
                Interlocked.Add(ref _long, l);
            }
            if (d != 0)
            {
                double seen, current = Volatile.Read(ref _double);
                // Compare bits, not values: NaN != NaN would spin forever.
                while (BitConverter.DoubleToInt64Bits(seen = Interlocked.CompareExchange(ref _double, current + d, current))
                       != BitConverter.DoubleToInt64Bits(current))
                {
                    current = seen;
                }
            }
        }

        public void Set(long l, double d)
        {
            Volatile.Write(ref _long, l);
            Volatile.Write(ref _double, d);
        }

        public (long, double) Read() => (Volatile.Read(ref _long), Volatile.Read(ref _double));
    }

    /// <summary>An immutable tag set: pairs unique and sorted by key, plus its rendered <c>{k="v",...}</c> text.</summary>
    private sealed class TagSet
    {
        private TagSet(KeyValuePair<string, string>[] pairs)
        {
            Pairs = pairs;
            foreach (var p in pairs)
            {
                Hash += HashCode.Combine(p.Key, p.Value);
            }
            Rendered = pairs.Length == 0 ? "" : "{" + string.Join(",", pairs
                .Select(p => (Name: SanitizeLabelName(p.Key), p.Value))
                .OrderBy(p => p.Name, StringComparer.Ordinal)
                .DistinctBy(p => p.Name)
                .Select(p => $"{p.Name}=\"{EscapeLabelValue(p.Value)}\"")) + "}";
        }

        public KeyValuePair<string, string>[] Pairs { get; }
        public int Hash { get; }
        public string Rendered { get; }

        public static TagSet Create(ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            var map = new SortedDictionary<string, string>(StringComparer.Ordinal);
            foreach (var t in tags)
            {
                map[t.Key] = ValueText(t.Value);
            }
            return new TagSet([.. map]);
        }

        public static string ValueText(object? value) => value switch
        {
            null => "",
            string s => s,
            bool b => b ? "true" : "false",
            IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
            _ => value.ToString() ?? "",
        };
    }

    private sealed class TagSetComparer
        : IEqualityComparer<TagSet>, IAlternateEqualityComparer<ReadOnlySpan<KeyValuePair<string, object?>>, TagSet>
    {
        public static readonly TagSetComparer Instance = new();

        public bool Equals(TagSet? x, TagSet? y)
        {
            if (ReferenceEquals(x, y))
            {
                return true;
            }
            if (x is null || y is null || x.Hash != y.Hash || x.Pairs.Length != y.Pairs.Length)
            {
                return false;
            }
            for (var i = 0; i < x.Pairs.Length; i++)
            {
                if (x.Pairs[i].Key != y.Pairs[i].Key || x.Pairs[i].Value != y.Pairs[i].Value)
                {
                    return false;
                }
            }
            return true;
        }

        public int GetHashCode(TagSet obj) => obj.Hash;

        // Hot path: matches the recorded span against a cached set without allocating (for string tag values).
        public bool Equals(ReadOnlySpan<KeyValuePair<string, object?>> alternate, TagSet other)
        {
            if (alternate.Length != other.Pairs.Length)
            {
                return false;
            }
            foreach (var tag in alternate)
            {
                var found = false;
                foreach (var pair in other.Pairs)
                {
                    if (pair.Key == tag.Key)
                    {
                        found = pair.Value == (tag.Value as string ?? TagSet.ValueText(tag.Value));
                        break;
                    }
                }
                if (!found)
                {
                    return false;
                }
            }
            return true;
        }

        public int GetHashCode(ReadOnlySpan<KeyValuePair<string, object?>> alternate)
        {
            var hash = 0; // order-independent, like TagSet.Hash
            foreach (var tag in alternate)
            {
                hash += HashCode.Combine(tag.Key, tag.Value as string ?? TagSet.ValueText(tag.Value));
            }
            return hash;
        }

        public TagSet Create(ReadOnlySpan<KeyValuePair<string, object?>> alternate) => TagSet.Create(alternate);
    }
}
