using System.Text;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.Kubernetes;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Runtime;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Wormhole.Tunnel.Sources;

/// <summary>
/// The standalone source: a YAML file (<c>apps: [{name, address, protocol?, healthPath?}]</c>) reloaded whenever it changes (inotify on its
/// folder, plus a cheap poll for file systems that do not report). It must be a regular file (symbolic links to one,
/// such as a ConfigMap mount, are fine) of at most <see cref="MaxBytes"/>. A file that is invalid or cannot be read
/// keeps the previous apps and says why: again on every change, and whenever the reason changes (not on every poll).
/// </summary>
public sealed partial class AppsFileSource(string path, ReconcileSignal signal, ILogger<AppsFileSource> logger, TimeProvider time) : ILocalAppSource
{
    /// <summary>The largest apps file read (1 MiB, thousands of apps); a larger one is refused.</summary>
    public const int MaxBytes = 1024 * 1024;

    private static readonly TimeSpan PollInterval = TimeSpan.FromSeconds(2);

    // A write that truncates then fills the file (`echo … > apps.yaml`) raises events before it is complete; reading
    // at once could see an empty file and withdraw every app for a moment. Let such writes settle first.
    private static readonly TimeSpan Settle = TimeSpan.FromMilliseconds(50);
    private readonly Lock _loading = new();
    private volatile IReadOnlyList<LocalApp> _current = [];
    private string? _lastContent;
    private bool _lastValid = true;
    private string? _lastProblem;
    private volatile bool _changed;

    public IReadOnlyList<LocalApp> Current => _current;

    /// <summary>The file is read before the first plan, so that plan offers what the file lists.</summary>
    public Task ReadyAsync(CancellationToken cancellationToken)
    {
        lock (_loading)
        {
            if (_lastContent is null)
            {
                LoadLocked();
            }
        }

        return Task.CompletedTask;
    }

    /// <summary>Reads the file once; false when it is missing or invalid (the reason is logged).</summary>
    public bool Load()
    {
        lock (_loading)
        {
            return LoadLocked();
        }
    }

    private bool LoadLocked()
    {
        // A change event since the last load: a problem is told again even when it is the same as before.
        var changed = _changed;
        _changed = false;
        string content;
        try
        {
            switch (RegularFile.TryRead(path, MaxBytes, out var bytes, out var refusal))
            {
                case RegularFileOutcome.Missing:
                    content = "";
                    break;
                case RegularFileOutcome.Refused:
                    return Problem(changed, unreadable: true, refusal!);
                default:
                    // As File.ReadAllText decodes: UTF-8 unless a byte order mark says otherwise.
                    using (var reader = new StreamReader(new MemoryStream(bytes), Encoding.UTF8, detectEncodingFromByteOrderMarks: true))
                    {
                        content = reader.ReadToEnd();
                    }

                    break;
            }
        }
        catch (Exception ex)
        {
            return Problem(changed, unreadable: true, ex.Message);
        }

        if (content == _lastContent && !changed)
        {
            return _lastValid;
        }

        bool valid;
        IReadOnlyList<LocalApp> apps;
        string? error;
        try
        {
            valid = TryParse(content, out apps, out error);
        }
        catch (Exception ex)
        {
            (valid, apps, error) = (false, [], $"it cannot be parsed ({ex.Message})");
        }

        if (!valid)
        {
            var edited = content != _lastContent;
            _lastContent = content;
            return Problem(changed || edited, unreadable: false, error!);
        }

        var loaded = content != _lastContent || !_lastValid;
        _lastContent = content;
        _lastValid = true;
        _lastProblem = null;
        if (loaded)
        {
            _current = apps;
            LogLoaded(path, apps.Count);
            signal.Request();
        }

        return true;
    }

    /// <summary>Keeps the previous apps; logs why when the reason is new or the file changed since.</summary>
    private bool Problem(bool changed, bool unreadable, string reason)
    {
        if (unreadable)
        {
            // The next readable content is compared afresh.
            _lastContent = null;
        }

        if (changed || reason != _lastProblem)
        {
            _lastProblem = reason;
            if (unreadable)
            {
                LogUnreadable(path, LogText.Of(reason, LogText.MaxReasonLength));
            }
            else
            {
                LogInvalid(path, LogText.Of(reason, LogText.MaxReasonLength));
            }
        }

        _lastValid = false;
        return false;
    }

    public async Task RunAsync(CancellationToken cancellationToken)
    {
        Load();
        var full = Path.GetFullPath(path);
        using var watcher = new FileSystemWatcher(Path.GetDirectoryName(full)!)
        {
            Filter = Path.GetFileName(full),
            NotifyFilter = NotifyFilters.LastWrite | NotifyFilters.FileName | NotifyFilters.Size | NotifyFilters.CreationTime,
        };
        var changed = new ReconcileSignal();
        FileSystemEventHandler onChange = (_, _) =>
        {
            _changed = true;
            changed.Request();
        };
        watcher.Changed += onChange;
        watcher.Created += onChange;
        watcher.Deleted += onChange;
        watcher.Renamed += (_, _) =>
        {
            _changed = true;
            changed.Request();
        };
        watcher.EnableRaisingEvents = true;

        using var poll = time.CreateTimer(_ => changed.Request(), null, PollInterval, PollInterval);
        while (!cancellationToken.IsCancellationRequested)
        {
            await changed.WaitAsync(cancellationToken);
            await Task.Delay(Settle, time, cancellationToken);
            try
            {
                Load();
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                // Load reports its own problems; this is a last guard so the watcher never stops for good.
                LogUnreadable(path, LogText.Of(ex.Message, LogText.MaxReasonLength));
            }
        }
    }

    /// <summary>Parses the apps file; every problem is reported as one sentence.</summary>
    public static bool TryParse(string content, out IReadOnlyList<LocalApp> apps, out string? error)
    {
        apps = [];
        error = null;
        if (string.IsNullOrWhiteSpace(content))
        {
            return true;
        }

        var stream = new YamlStream();
        try
        {
            stream.Load(new StringReader(content));
        }
        catch (YamlException ex)
        {
            error = $"not valid YAML at line {ex.Start.Line}: {ex.Message}";
            return false;
        }

        if (stream.Documents.Count == 0 || stream.Documents[0].RootNode is YamlScalarNode { Value: null or "" })
        {
            return true;
        }

        if (stream.Documents[0].RootNode is not YamlMappingNode root)
        {
            error = "the top level must be a mapping with an 'apps' list";
            return false;
        }

        if (!root.Children.TryGetValue(new YamlScalarNode("apps"), out var appsNode) || appsNode is YamlScalarNode { Value: null or "" })
        {
            return true;
        }

        if (appsNode is not YamlSequenceNode list)
        {
            error = "'apps' must be a list";
            return false;
        }

        var result = new List<LocalApp>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        var index = 0;
        foreach (var item in list)
        {
            index++;
            if (item is not YamlMappingNode map)
            {
                error = $"app #{index} must be a mapping with 'name' and 'address'";
                return false;
            }

            var name = Scalar(map, "name");
            var address = Scalar(map, "address");
            if (!Names.IsValidAppName(name))
            {
                error = $"app #{index} has no valid 'name' (1-253 printable characters, no '/')";
                return false;
            }

            if (!AppAddress.TryParse(address, out var host, out var port))
            {
                error = $"app '{name}' has an invalid 'address' '{address}' (expected host:port with a port from 1 to 65535)";
                return false;
            }

            if (!names.Add(name!))
            {
                error = $"app '{name}' is listed twice";
                return false;
            }

            if (!TryHttpMode(map, name!, out var http, out error))
            {
                return false;
            }

            result.Add(new LocalApp(name!, host, port, port) { Http = http });
        }

        apps = result;
        return true;
    }

    /// <summary><c>protocol: http</c> (optional <c>healthPath: /path</c>) marks an app HTTP; any other protocol is an error.</summary>
    private static bool TryHttpMode(YamlMappingNode map, string name, out HttpMode? http, out string? error)
    {
        http = null;
        error = null;
        var protocol = Scalar(map, "protocol");
        var healthPath = Scalar(map, "healthPath");
        if (!string.IsNullOrEmpty(protocol) && !AppProtocol.IsHttp(protocol))
        {
            error = $"app '{name}' has an unknown 'protocol' '{LogText.Of(protocol, 64)}' (only 'http' is known; leave it out for TCP)";
            return false;
        }

        if (!string.IsNullOrEmpty(healthPath) && !AppProtocol.IsValidHealthPath(healthPath))
        {
            error = $"app '{name}' has an invalid 'healthPath' (an absolute path such as /healthz, at most {AppProtocol.MaxHealthPathLength} visible ASCII characters)";
            return false;
        }

        if (string.IsNullOrEmpty(protocol))
        {
            if (!string.IsNullOrEmpty(healthPath))
            {
                error = $"app '{name}' has a 'healthPath' but no 'protocol: http' (health paths are probed in HTTP mode only)";
                return false;
            }

            return true;
        }

        http = string.IsNullOrEmpty(healthPath) ? HttpMode.NoHealthPath : new HttpMode(healthPath);
        return true;
    }

    private static string? Scalar(YamlMappingNode map, string key) =>
        map.Children.TryGetValue(new YamlScalarNode(key), out var node) && node is YamlScalarNode s ? s.Value?.Trim() : null;

    [LoggerMessage(EventId = 1200, Level = LogLevel.Information, Message = "Loaded {Count} app(s) from {Path}")]
    private partial void LogLoaded(string path, int count);

    [LoggerMessage(EventId = 1201, Level = LogLevel.Warning, Message = "Apps file {Path} is invalid, keeping the previous apps: {Reason}")]
    private partial void LogInvalid(string path, string reason);

    [LoggerMessage(EventId = 1202, Level = LogLevel.Warning, Message = "Apps file {Path} cannot be read, keeping the previous apps: {Reason}")]
    private partial void LogUnreadable(string path, string reason);
}
