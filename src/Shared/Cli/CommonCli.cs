using System.CommandLine;
using System.CommandLine.Parsing;
using System.Net;
using Wormhole.Tunnel.Hosting;

namespace Wormhole.Tunnel.Cli;

/// <summary>A bad flag value: the message is one sentence for the user, and the process exits non-zero.</summary>
public sealed class OptionsException(string message) : Exception(message);

/// <summary>Settings both executables take (design.md, "Command line").</summary>
public sealed record CommonSettings(
    string Name,
    string? InviteToken,
    bool Kubernetes,
    string? KubernetesNamespace,
    string? KubernetesLabels,
    bool NetworkPolicies,
    string? Kubeconfig,
    string? AppsFile,
    string StateDir,
    string WgInterface,
    IPEndPoint ApiListen,
    bool Metrics,
    IPEndPoint MetricsListen,
    TimeSpan PeerTtl,
    TimeSpan GcGrace,
    bool JsonLogs,
    bool Debug,
    Wormhole.Tunnel.Proxy.ProxyEngine ProxyEngine = Wormhole.Tunnel.Proxy.ProxyEngine.Auto,
    string? KubeContext = null)
{
    /// <summary>Global services (<c>--global-services</c>, <c>--global-priority</c>): off unless asked for.</summary>
    public Wormhole.Tunnel.Planning.GlobalServicesOptions GlobalServices { get; init; } = Wormhole.Tunnel.Planning.GlobalServicesOptions.Off;

    /// <summary>What one peer may take on this side: apps, metadata bytes, name lengths.</summary>
    public Planning.PeerQuotas Quotas { get; init; } = Planning.PeerQuotas.Default;

    /// <summary>--stuck-after: liveness (GET /livez) fails while a step of a loop runs this long.</summary>
    public TimeSpan StuckAfter { get; init; } = Wormhole.Tunnel.Runtime.Health.DefaultStuckAfter;

    /// <summary>Never prints the invite token.</summary>
    public override string ToString() => $"CommonSettings {{ Name = {Name}, StateDir = {StateDir}, WgInterface = {WgInterface}, InviteToken = {(InviteToken is null ? "none" : "(hidden)")} }}";
}

/// <summary>Builds the shared flags onto a command and reads them back, validated.</summary>
public sealed class CommonCli
{
    public Option<string?> Name { get; }

    public Option<string?> InviteToken { get; } = new("--invite-token") { Description = "The pre-shared key (PSK) used to encrypt pairing; at least 6 characters. Env: INVITE_TOKEN" };

    public Option<string?> InviteTokenFile { get; } = new("--invite-token-file") { Description = "File holding the invite token (instead of --invite-token). Env: INVITE_TOKEN_FILE" };

    public Option<int> MaxAppsPerPeer { get; } = new("--max-apps-per-peer") { Description = "Apps one peer may expose here; the rest are left out (by name order) and reported", DefaultValueFactory = _ => Planning.PeerQuotas.Default.MaxAppsPerPeer };

    public Option<int> MaxMetadataBytes { get; } = new("--max-metadata-bytes") { Description = "Largest sync metadata accepted from one peer (compact JSON bytes)", DefaultValueFactory = _ => Planning.PeerQuotas.Default.MaxMetadataBytes };

    public Option<int> MaxAppNameLength { get; } = new("--max-app-name-length") { Description = "Longest app name accepted from a peer (characters); longer ones are left out and reported", DefaultValueFactory = _ => Planning.PeerQuotas.Default.MaxAppNameLength };

    public Option<bool> Kubernetes { get; } = new("--kubernetes") { Description = "Discover local apps from annotated Services and create Services for remote apps" };

    public Option<string?> KubernetesNamespace { get; } = new("--kubernetes-namespace") { Description = "Namespace for generated Services and NetworkPolicies (required with --kubernetes)" };

    public Option<string?> KubernetesLabels { get; } = new("--kubernetes-labels") { Description = "k1=v1,k2=v2 selecting this pod; selector of generated Services (required with --kubernetes)" };

    public Option<bool> NetworkPolicies { get; } = new("--network-policies") { Description = "Also create a NetworkPolicy per remote app" };

    public Option<string?> Kubeconfig { get; } = new("--kubeconfig") { Description = "Kubeconfig file [default: $KUBECONFIG (merged), else in-cluster, else ~/.kube/config]" };

    public Option<string?> KubeContext { get; } = new("--kube-context") { Description = "Kubeconfig context to use instead of its current-context" };

    public Option<string?> AppsFile { get; } = new("--apps-file") { Description = "YAML file of the apps this side offers (apps: [{name, address}]); reloaded on change" };

    public Option<string> StateDir { get; } = new("--state-dir") { Description = "Directory for keys, peers and the pairing cache", DefaultValueFactory = _ => "/storage" };

    public Option<string> WgInterface { get; } = new("--wg-interface") { Description = "WireGuard interface name (max 15 characters)", DefaultValueFactory = _ => "wg0" };

    public Option<string> ApiListenAddress { get; } = new("--api-listen-address") { Description = "Admin API listen address", DefaultValueFactory = _ => "0.0.0.0:8082" };

    public Option<bool> Metrics { get; } = new("--metrics") { Description = "Serve Prometheus metrics on /metrics" };

    public Option<string> MetricsHost { get; } = new("--metrics-host") { Description = "Metrics listen host", DefaultValueFactory = _ => "0.0.0.0" };

    public Option<int> MetricsPort { get; } = new("--metrics-port") { Description = "Metrics listen port", DefaultValueFactory = _ => 8090 };

    public Option<string> PeerTtl { get; } = new("--peer-ttl") { Description = "Withdraw a peer's apps when its syncs stop for this long (e.g. 60s, 2m)", DefaultValueFactory = _ => "60s" };

    public Option<string> GcGrace { get; } = new("--kubernetes-gc-grace") { Description = "After a start, generated objects from before it, of peers still paired, wait for the peer's first sync but at most this long before unwanted ones are deleted (kept in place: same ClusterIP)", DefaultValueFactory = _ => "15s" };

    public Option<string> LogFormat { get; } = new("--log-format") { Description = "Log format: console or json", DefaultValueFactory = _ => "console" };

    public Option<bool> Debug { get; } = new("--debug") { Description = "Debug logging" };

    public Option<string> ProxyEngine { get; } = new("--proxy-engine")
    {
        Description = "How the L4 proxies move bytes: splice (Linux: splice(2) on epoll event loops, no user-space copies), sockets (.NET async sockets), or auto (splice where available)",
        DefaultValueFactory = _ => "auto",
    };

    public Option<string> StuckAfter { get; } = new("--stuck-after")
    {
        Description = "Liveness (GET /livez on the admin API) fails while a reconcile pass or a wg/ip command has run this long (e.g. 5m)",
        DefaultValueFactory = _ => "5m",
    };

    public Option<bool> GlobalServices { get; } = new("--global-services")
    {
        Description = "Also consume every app name the peers offer through one listener (and, with --kubernetes, one Service global-<app>) that sends each new connection to a healthy site",
    };

    public Option<string[]> GlobalPriority { get; } = new("--global-priority")
    {
        Description = "With --global-services: APP=PEER1,PEER2 prefers those sites for APP in that order (the others share what is left); repeat for more apps",
        AllowMultipleArgumentsPerToken = false,
    };

    public Option<bool> Check { get; } = new("--check") { Description = "Validate the flags, print the effective configuration (no secrets) and exit" };

    public CommonCli(string? defaultName)
    {
        Name = new Option<string?>("--name") { Description = defaultName is null ? "Peer name (required)" : "Peer name" };
        if (defaultName is not null)
        {
            Name.DefaultValueFactory = _ => defaultName;
        }

    }

    public void AddTo(Command command)
    {
        foreach (var option in new Option[]
        {
            Name, InviteToken, InviteTokenFile, MaxAppsPerPeer, MaxMetadataBytes, MaxAppNameLength, Kubernetes, KubernetesNamespace, KubernetesLabels, NetworkPolicies, Kubeconfig, KubeContext, AppsFile,
            StateDir, WgInterface, ApiListenAddress, Metrics, MetricsHost, MetricsPort, PeerTtl, GcGrace, LogFormat, Debug, ProxyEngine,
            GlobalServices, GlobalPriority, StuckAfter, Check,
        })
        {
            command.Options.Add(option);
        }
    }

    /// <summary>With --check: prints the effective configuration (no secrets) and returns true, so the caller exits 0.</summary>
    public bool CheckOnly(ParseResult result, CommonSettings s)
    {
        if (!result.GetValue(Check))
        {
            return false;
        }

        var source = s.Kubernetes ? $"Kubernetes namespace {s.KubernetesNamespace}" : s.AppsFile is null ? "no local apps" : $"apps file {s.AppsFile}";
        var engine = s.ProxyEngine == Wormhole.Tunnel.Proxy.ProxyEngine.Auto
            ? (Wormhole.Tunnel.Proxy.SpliceEngine.Shared is null ? "sockets" : "splice") + " (auto)"
            : s.ProxyEngine.ToString().ToLowerInvariant();
        if (s.Kubernetes)
        {
            // Resolved as the run would (exec plugins run); a configuration that is there but cannot be used fails the
            // check. None at all is only reported: the flags can be checked outside the cluster too.
            try
            {
                using var connection = Wormhole.Tunnel.Kubernetes.KubeConnection.Load(new Wormhole.Tunnel.Kubernetes.KubeConfigSources { Kubeconfig = s.Kubeconfig, Context = s.KubeContext });
                source += $", Kubernetes API {connection}";
            }
            catch (Wormhole.Tunnel.Kubernetes.KubeConfigException ex) when (ex.NothingFound)
            {
                source += $", Kubernetes API not found here{(s.KubeContext is null ? "" : $" (context {s.KubeContext})")}";
            }
            catch (Wormhole.Tunnel.Kubernetes.KubeConfigException ex)
            {
                throw new OptionsException(ex.Message);
            }
        }

        Console.WriteLine($"configuration OK: {s.Name}, state in {s.StateDir}, interface {s.WgInterface}, {source}, proxy engine {engine}, global services {s.GlobalServices}");
        return true;
    }

    public CommonSettings Read(ParseResult result)
    {
        var name = result.GetValue(Name);
        if (string.IsNullOrWhiteSpace(name))
        {
            throw new OptionsException("Option '--name' is required.");
        }

        var token = Secrets.Read(result.GetValue(InviteToken), result.GetValue(InviteTokenFile), "INVITE_TOKEN");
        if (!string.IsNullOrEmpty(token) && System.Text.Encoding.UTF8.GetByteCount(token) < 6)
        {
            throw new OptionsException("The invite token (--invite-token or INVITE_TOKEN) must be at least 6 characters.");
        }

        var kubernetes = result.GetValue(Kubernetes);
        var ns = result.GetValue(KubernetesNamespace);
        var labels = result.GetValue(KubernetesLabels);
        if (kubernetes && (string.IsNullOrWhiteSpace(ns) || string.IsNullOrWhiteSpace(labels)))
        {
            throw new OptionsException("--kubernetes needs --kubernetes-namespace and --kubernetes-labels.");
        }

        if (kubernetes && Wormhole.Tunnel.Kubernetes.KubeNames.ParseLabels(labels!, out var labelError) is null)
        {
            throw new OptionsException($"--kubernetes-labels '{labels}' is invalid: {labelError}.");
        }

        var wgInterface = result.GetValue(WgInterface)!;
        if (wgInterface.Length is 0 or > 15 || wgInterface.Any(c => !char.IsAsciiLetterOrDigit(c) && c is not '-' and not '_' and not '.'))
        {
            throw new OptionsException($"--wg-interface '{wgInterface}' is not a valid interface name (1-15 letters, digits, '-', '_' or '.').");
        }

        var api = result.GetValue(ApiListenAddress)!;
        if (!ListenAddress.TryParse(api, out var apiEndpoint))
        {
            throw new OptionsException($"--api-listen-address '{api}' is not a listen address such as 0.0.0.0:8082.");
        }

        var metricsHost = result.GetValue(MetricsHost)!;
        var metricsPort = result.GetValue(MetricsPort);
        if (!ListenAddress.TryParse($"{metricsHost}:{metricsPort}", out var metricsEndpoint))
        {
            throw new OptionsException($"--metrics-host '{metricsHost}' / --metrics-port {metricsPort} do not form a listen address.");
        }

        var ttl = result.GetValue(PeerTtl)!;
        if (!Durations.TryParse(ttl, out var peerTtl))
        {
            throw new OptionsException($"--peer-ttl '{ttl}' is not a duration such as 60s or 2m.");
        }

        var graceText = result.GetValue(GcGrace)!;
        var gcGrace = TimeSpan.Zero;
        if (graceText.Trim() is not ("0" or "0s") && !Durations.TryParse(graceText, out gcGrace))
        {
            throw new OptionsException($"--kubernetes-gc-grace '{graceText}' is not a duration such as 15s.");
        }
        var stuckText = result.GetValue(StuckAfter)!;
        if (!Durations.TryParse(stuckText, out var stuckAfter))
        {
            throw new OptionsException($"--stuck-after '{stuckText}' is not a duration such as 5m or 30s.");
        }

        var appsFile = result.GetValue(AppsFile);
        if (kubernetes && appsFile is not null)
        {
            throw new OptionsException("Use either --kubernetes or --apps-file as the source of local apps, not both.");
        }

        if (appsFile is not null && !Directory.Exists(Path.GetDirectoryName(Path.GetFullPath(appsFile))))
        {
            throw new OptionsException($"--apps-file '{appsFile}' is in a directory that does not exist.");
        }

        var logFormat = result.GetValue(LogFormat)!;
        if (logFormat is not ("console" or "json"))
        {
            throw new OptionsException($"--log-format '{logFormat}' is not one of console, json.");
        }

        var engineText = result.GetValue(ProxyEngine)!;
        if (engineText is not ("auto" or "splice" or "sockets"))
        {
            throw new OptionsException($"--proxy-engine '{engineText}' is not one of auto, splice, sockets.");
        }

        var engine = Enum.Parse<Wormhole.Tunnel.Proxy.ProxyEngine>(engineText, ignoreCase: true);
        if (engine == Wormhole.Tunnel.Proxy.ProxyEngine.Splice && Wormhole.Tunnel.Proxy.SpliceEngine.Shared is null)
        {
            throw new OptionsException("--proxy-engine splice needs Linux (x64 or arm64) with epoll, pipe2 and splice allowed; use auto or sockets.");
        }

        var maxApps = result.GetValue(MaxAppsPerPeer);
        var maxMetadata = result.GetValue(MaxMetadataBytes);
        var maxName = result.GetValue(MaxAppNameLength);
        if (maxApps is < 1 or > 100_000 || maxMetadata is < 2 or > 1024 * 1024 || maxName is < 1 or > 253)
        {
            throw new OptionsException("--max-apps-per-peer must be 1-100000, --max-metadata-bytes 2-1048576 and --max-app-name-length 1-253.");
        }

        return new CommonSettings(
            name.Trim(), string.IsNullOrEmpty(token) ? null : token, kubernetes, ns, labels, result.GetValue(NetworkPolicies),
            result.GetValue(Kubeconfig), appsFile, result.GetValue(StateDir)!, wgInterface, apiEndpoint,
            result.GetValue(Metrics), metricsEndpoint, peerTtl, gcGrace, logFormat == "json", result.GetValue(Debug), engine,
            string.IsNullOrWhiteSpace(result.GetValue(KubeContext)) ? null : result.GetValue(KubeContext)!.Trim())
        {
            GlobalServices = ReadGlobalServices(result.GetValue(GlobalServices), result.GetValue(GlobalPriority) ?? []),
            Quotas = new Planning.PeerQuotas(maxApps, maxMetadata, maxName),
            StuckAfter = stuckAfter,
        };
    }

    /// <summary>--global-services and every --global-priority APP=PEER1,PEER2 (app names as peers send them, peers as DNS labels).</summary>
    private static Wormhole.Tunnel.Planning.GlobalServicesOptions ReadGlobalServices(bool enabled, string[] priorities)
    {
        if (!enabled)
        {
            return priorities.Length == 0
                ? Wormhole.Tunnel.Planning.GlobalServicesOptions.Off
                : throw new OptionsException("--global-priority needs --global-services.");
        }

        var byApp = new Dictionary<string, IReadOnlyList<string>>(StringComparer.Ordinal);
        foreach (var text in priorities)
        {
            var eq = text.IndexOf('=', StringComparison.Ordinal);
            var app = eq > 0 ? text[..eq] : "";
            var peers = eq > 0 ? text[(eq + 1)..].Split(',', StringSplitOptions.TrimEntries) : [];
            if (!Wormhole.Tunnel.Apps.Names.IsValidAppName(app) || peers.Length == 0 || peers.Any(p => !Wormhole.Tunnel.Apps.Names.IsValidPeerName(p))
                || peers.Distinct(StringComparer.Ordinal).Count() != peers.Length)
            {
                throw new OptionsException($"--global-priority '{LogText.Of(text, 128)}' is not APP=PEER1,PEER2 (an app name, then distinct peer names).");
            }

            if (!byApp.TryAdd(app, peers))
            {
                throw new OptionsException($"--global-priority names app '{LogText.Of(app, 128)}' twice.");
            }
        }

        return new Wormhole.Tunnel.Planning.GlobalServicesOptions(true, byApp);
    }
}
