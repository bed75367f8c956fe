using System.Globalization;
using System.Net;
using System.Runtime.InteropServices;
using Wormhole.Tunnel.KubeEmulator;

// kube-emulator --listen 127.0.0.1:6443 --token T [--kubeconfig-out PATH] [--bookmark-interval SECONDS]
// Prints "ready <url>" once listening (after writing the kubeconfig) and runs until SIGTERM or SIGINT.
const string Usage = "usage: kube-emulator --listen ADDRESS:PORT --token TOKEN [--kubeconfig-out PATH] [--bookmark-interval SECONDS]";
string? listen = "127.0.0.1:6443", token = Environment.GetEnvironmentVariable("KUBE_EMULATOR_TOKEN"), kubeconfig = null;
var bookmarkInterval = TimeSpan.FromSeconds(1);
for (var i = 0; i < args.Length; i++)
{
    var value = i + 1 < args.Length ? args[i + 1] : null;
    switch (args[i])
    {
        case "--listen" when value is not null:
            listen = args[++i];
            break;
        case "--token" when value is not null:
            token = args[++i];
            break;
        case "--kubeconfig-out" when value is not null:
            kubeconfig = args[++i];
            break;
        case "--bookmark-interval" when double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var seconds):
            bookmarkInterval = TimeSpan.FromSeconds(seconds);
            i++;
            break;
        default:
            await Console.Error.WriteLineAsync($"unexpected argument '{args[i]}'\n{Usage}");
            return 2;
    }
}

if (string.IsNullOrEmpty(token) || !IPEndPoint.TryParse(listen, out var endpoint))
{
    await Console.Error.WriteLineAsync(Usage);
    return 2;
}

var stopped = new TaskCompletionSource();
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context => { context.Cancel = true; stopped.TrySetResult(); });
using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, context => { context.Cancel = true; stopped.TrySetResult(); });
await using var emulator = await KubeEmulator.StartAsync(new KubeEmulatorOptions
{
    Address = endpoint.Address, Port = endpoint.Port, Token = token, BookmarkInterval = bookmarkInterval,
});
if (kubeconfig is not null)
{
    emulator.WriteKubeconfig(kubeconfig);
}

Console.WriteLine($"ready {emulator.Url}");
await Console.Out.FlushAsync();
await stopped.Task;
return 0;
