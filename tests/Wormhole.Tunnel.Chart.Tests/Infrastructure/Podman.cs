using System.Net;
using System.Text.Json.Nodes;

namespace Wormhole.Tunnel.Chart.Tests.Infrastructure;

/// <summary>
/// Rootful podman with the configuration scripts/lib.sh writes (runc, cgroupfs, ulimits within ours), and the images
/// scripts/images builds: <c>localhost/wormhole-server:TAG</c>, <c>localhost/wormhole-client:TAG</c> (TAG:
/// <c>$WORMHOLE_IMAGE_TAG</c>, default <c>dev</c>) and their Debian base, which the tests' HTTP backends run on.
/// </summary>
public static class Podman
{
    public const string BaseImage = "localhost/wormhole-base:bookworm";

    private static readonly Lazy<string> Config = new(() =>
    {
        var result = Tools.RunAsync("bash", ["-c", ". scripts/lib.sh && podman_env && printf %s \"$CONTAINERS_CONF\""]).GetAwaiter().GetResult();
        return result.Succeeded ? result.StandardOutput.Trim() : throw new InvalidOperationException($"scripts/lib.sh podman_env failed: {result}");
    });

    private static readonly Lazy<string?> MissingReasonLazy = new(FindMissingReason);

    public static string Tag => Environment.GetEnvironmentVariable("WORMHOLE_IMAGE_TAG") is { Length: > 0 } tag ? tag : "dev";

    public static string Image(string role) => $"localhost/wormhole-{role}:{Tag}";

    /// <summary>Null when the image and pod tests can run here, else why not.</summary>
    public static string? MissingReason => MissingReasonLazy.Value;

    public static Task<ProcessResult> TryAsync(params string[] args) => TryAsync(args, TimeSpan.FromMinutes(3));

    public static Task<ProcessResult> TryAsync(IEnumerable<string> args, TimeSpan timeout) =>
        Tools.RunAsync("podman", args, new Dictionary<string, string?> { ["CONTAINERS_CONF"] = Config.Value }, timeout: timeout);

    public static async Task<string> RunAsync(params string[] args)
    {
        var result = await TryAsync(args);
        return result.Succeeded ? result.StandardOutput : throw new InvalidOperationException($"podman {string.Join(' ', args)} failed: {result}");
    }

    /// <summary>The container's main process as the host sees it.</summary>
    public static async Task<int> PidAsync(string container) =>
        int.Parse((await RunAsync("inspect", "--format", "{{.State.Pid}}", container)).Trim(), System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>The host pid of the process named <paramref name="command"/> among the children of the container's main process.</summary>
    public static async Task<int> ChildPidAsync(string container, string command)
    {
        var parent = await PidAsync(container);
        foreach (var dir in Directory.EnumerateDirectories("/proc").Where(d => int.TryParse(Path.GetFileName(d), out _)))
        {
            try
            {
                var stat = await File.ReadAllTextAsync(Path.Combine(dir, "stat"));
                var close = stat.LastIndexOf(')');
                var name = stat[(stat.IndexOf('(', StringComparison.Ordinal) + 1)..close];
                var ppid = int.Parse(stat[(close + 2)..].Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
                if (ppid == parent && name == command)
                {
                    return int.Parse(Path.GetFileName(dir), System.Globalization.CultureInfo.InvariantCulture);
                }
            }
            catch (IOException)
            {
                // The process ended while we looked.
            }
        }

        throw new InvalidOperationException($"No process '{command}' under container {container} (pid {parent}).");
    }

    /// <summary>The effective capability set of the container's main process (/proc/PID/status CapEff).</summary>
    public static async Task<ulong> EffectiveCapabilitiesAsync(string container)
    {
        var status = await File.ReadAllLinesAsync($"/proc/{await PidAsync(container)}/status");
        return Convert.ToUInt64(status.Single(l => l.StartsWith("CapEff:", StringComparison.Ordinal))[7..].Trim(), 16);
    }

    public static Task<string> LogsAsync(string container) => TryAsync("logs", container).ContinueWith(t => t.Result.StandardOutput + t.Result.StandardError, TaskScheduler.Default);

    private static string? FindMissingReason()
    {
        if (!OperatingSystem.IsLinux() || !Environment.IsPrivilegedProcess)
        {
            return "Needs root on Linux: rootful podman runs the images (CI runs these as root).";
        }

        if (Tools.Find("podman") is null)
        {
            return "Needs podman: `sudo bash scripts/images` installs it and builds the images (scripts/test does).";
        }

        foreach (var image in new[] { Image("server"), Image("client"), BaseImage })
        {
            if (!TryAsync("image", "exists", image).GetAwaiter().GetResult().Succeeded)
            {
                return $"Image {image} is missing: run `sudo bash scripts/images` (scripts/test does).";
            }
        }

        return null;
    }
}

/// <summary>
/// A fact over the images: runs as root with podman and the images present. Without them it is skipped with the reason,
/// except under CI (<c>$CI</c> set), where it runs and fails saying so.
/// </summary>
public sealed class PodmanFactAttribute : FactAttribute
{
    public PodmanFactAttribute()
    {
        if (!OperatingSystem.IsLinux() || !Environment.IsPrivilegedProcess)
        {
            Skip = "Needs root on Linux: rootful podman runs the images (CI runs these as root).";
        }
        else if (Podman.MissingReason is { } reason && string.IsNullOrEmpty(Environment.GetEnvironmentVariable("CI")))
        {
            Skip = reason;
        }
    }
}

/// <summary>A podman network of our own (a /24 podman picks) and the containers started on it; removed on dispose.</summary>
public sealed class PodmanNetwork : IAsyncDisposable
{
    private readonly List<string> _containers = [];
    private readonly List<string> _volumes = [];
    private readonly List<string> _pods = [];
    private readonly List<string> _secrets = [];

    private PodmanNetwork(string name, IPAddress gateway, string prefix)
    {
        Name = name;
        Gateway = gateway;
        Prefix = prefix;
    }

    /// <summary>The network's name, also the prefix of everything created on it.</summary>
    public string Name { get; }

    /// <summary>The host's address on the network (the bridge's): containers reach the host there.</summary>
    public IPAddress Gateway { get; }

    private string Prefix { get; }

    public static async Task<PodmanNetwork> CreateAsync(string what)
    {
        if (Podman.MissingReason is { } reason)
        {
            throw new InvalidOperationException(reason);
        }

        var name = $"whpod-{what}-{Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(3))}";
        await Podman.RunAsync("network", "create", name);
        var inspect = JsonNode.Parse(await Podman.RunAsync("network", "inspect", name))!.AsArray()[0]!;
        var subnet = inspect["subnets"]![0]!;
        var gateway = IPAddress.Parse((string)subnet["gateway"]!);
        var bytes = gateway.GetAddressBytes();
        return new PodmanNetwork(name, gateway, $"{bytes[0]}.{bytes[1]}.{bytes[2]}.");
    }

    /// <summary>The address .<paramref name="host"/> of the network's /24.</summary>
    public IPAddress Address(int host) => IPAddress.Parse(Prefix + host);

    /// <summary>A name of ours for a container, pod or volume.</summary>
    public string Named(string what) => $"{Name}-{what}";

    /// <summary><c>podman run -d</c> on this network at <paramref name="address"/>; the container is removed on dispose.</summary>
    public async Task<string> RunAsync(string name, IPAddress address, IEnumerable<string> options, string image, params string[] args)
    {
        var container = Named(name);
        _containers.Add(container);
        await Podman.RunAsync(["run", "-d", "--name", container, "--network", Name, "--ip", address.ToString(), .. options, image, .. args]);
        return container;
    }

    /// <summary>
    /// An HTTP server in a container of the Debian base (perl, which minbase has): every request to port 80 gets
    /// 200 and <paramref name="body"/>; port 433 accepts and closes.
    /// </summary>
    public Task<string> RunBackendAsync(string name, IPAddress address, string body) =>
        RunAsync(name, address, ["-e", $"BODY={body}"], Podman.BaseImage, "perl", "-e", BackendScript);

    /// <summary>A volume of ours, removed on dispose.</summary>
    public string Volume(string what)
    {
        var volume = Named(what);
        _volumes.Add(volume);
        return volume;
    }

    /// <summary>A pod (podman kube play makes it) to remove on dispose.</summary>
    public void OwnsPod(string pod)
    {
        if (!_pods.Contains(pod))
        {
            _pods.Add(pod);
        }
    }

    /// <summary>A volume (a played PersistentVolumeClaim) to remove on dispose.</summary>
    public void OwnsVolume(string volume)
    {
        if (!_volumes.Contains(volume))
        {
            _volumes.Add(volume);
        }
    }

    /// <summary>A podman secret to remove on dispose.</summary>
    public void OwnsSecret(string secret)
    {
        if (!_secrets.Contains(secret))
        {
            _secrets.Add(secret);
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var pod in Enumerable.Reverse(_pods))
        {
            await Podman.TryAsync("pod", "rm", "-f", "-t", "0", pod);
        }

        foreach (var container in Enumerable.Reverse(_containers))
        {
            await Podman.TryAsync("rm", "-f", "-t", "0", container);
        }

        foreach (var volume in _volumes)
        {
            await Podman.TryAsync("volume", "rm", "-f", volume);
        }

        foreach (var secret in _secrets)
        {
            await Podman.TryAsync("secret", "rm", secret);
        }

        await Podman.TryAsync("network", "rm", "-f", Name);
    }

    private const string BackendScript = """
        use IO::Socket::INET; use IO::Select;
        $SIG{CHLD} = 'IGNORE'; $| = 1;
        my @l = map { IO::Socket::INET->new(LocalPort => $_, Listen => 64, ReuseAddr => 1) or die "listen $_: $!" } (80, 433);
        my $sel = IO::Select->new(@l); print "listening\n";
        while (1) { for my $s ($sel->can_read) { my $c = $s->accept or next;
          if ($s->sockport == 433) { close $c; next }
          if (fork() == 0) { local $/ = "\r\n\r\n"; <$c>;
            print $c "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " . length($ENV{BODY}) . "\r\nConnection: close\r\n\r\n$ENV{BODY}";
            close $c; exit 0 }
          close $c } }
        """;
}
