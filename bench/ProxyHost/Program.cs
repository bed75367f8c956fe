// bench-proxyhost [--engine auto|splice|sockets] LISTEN_PORT:TARGET_HOST:TARGET_PORT [...]
// Starts the product's in-process L4 proxy (ProxyTable, default ProxyOptions but for the engine, the product's logging)
// with one Local listener on 127.0.0.1:LISTEN_PORT per argument, prints "ready" and waits for SIGTERM/SIGINT.
using System.Globalization;
using System.Net;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.Metrics;
using Wormhole.Tunnel.Proxy;

var options = new ProxyOptions();
if (args.Length >= 2 && args[0] == "--engine")
{
    if (!Enum.TryParse<ProxyEngine>(args[1], ignoreCase: true, out var engine))
    {
        await Console.Error.WriteLineAsync($"unknown engine '{args[1]}': expected auto, splice or sockets");
        return 2;
    }

    options.Engine = engine;
    args = args[2..];
}

if (args.Length == 0)
{
    await Console.Error.WriteLineAsync("usage: bench-proxyhost [--engine auto|splice|sockets] LISTEN_PORT:TARGET_HOST:TARGET_PORT [...]");
    return 2;
}

var specs = new List<ListenerSpec>();
foreach (var arg in args)
{
    var parts = arg.Split(':');
    if (parts.Length != 3
        || !int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var port)
        || !int.TryParse(parts[2], NumberStyles.None, CultureInfo.InvariantCulture, out var targetPort))
    {
        await Console.Error.WriteLineAsync($"bad listener '{arg}': expected LISTEN_PORT:TARGET_HOST:TARGET_PORT");
        return 2;
    }

    specs.Add(new ListenerSpec(ListenerKind.Local, $"bench{specs.Count}", IPAddress.Loopback, port, parts[1], targetPort));
}

using var loggerFactory = Logging.Create(json: false, debug: false);
var metrics = new WormholeMetrics();
await using var table = new ProxyTable(options, metrics, loggerFactory.CreateLogger<ProxyTable>(), TimeProvider.System);
var failures = await table.ApplyAsync(specs, CancellationToken.None);
foreach (var failure in failures)
{
    await Console.Error.WriteLineAsync($"cannot listen: {failure.Reason}");
}

if (failures.Count > 0)
{
    return 1;
}

using var stop = new CancellationTokenSource();
using var sigterm = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, ctx =>
{
    ctx.Cancel = true;
    stop.Cancel();
});
Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true;
    stop.Cancel();
};
Console.WriteLine("ready");
try
{
    await Task.Delay(Timeout.Infinite, stop.Token);
}
catch (OperationCanceledException)
{
}

return 0;
