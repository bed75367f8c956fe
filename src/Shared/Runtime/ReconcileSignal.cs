using System.Threading.Channels;

namespace Wormhole.Tunnel.Runtime;

/// <summary>
/// Level-triggered wake-up: any number of <see cref="Request"/> calls between two reads coalesce into one recompute.
/// </summary>
public sealed class ReconcileSignal
{
    private readonly Channel<bool> _channel = Channel.CreateBounded<bool>(new BoundedChannelOptions(1)
    {
        FullMode = BoundedChannelFullMode.DropWrite,
        SingleReader = true,
    });

    public void Request() => _channel.Writer.TryWrite(true);

    public async Task WaitAsync(CancellationToken cancellationToken)
    {
        await _channel.Reader.ReadAsync(cancellationToken);
    }
}
