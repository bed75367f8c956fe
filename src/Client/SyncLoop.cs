using System.Net;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Metrics;
using Wormhole.Tunnel.Pairing;
using Wormhole.Tunnel.Runtime;
using Wormhole.Tunnel.Sync;

namespace Wormhole.Tunnel.Client;

/// <summary>
/// The spoke's sync with the hub: sends this side's apps whenever they change and otherwise long-polls the hub, so a
/// change on either side crosses within a round trip. A reference hub (no version header) is polled every 5 s instead.
/// Nothing is sent before this side's first plan is applied: an empty list from a plan that does not exist yet would
/// make the hub withdraw every app of ours (and delete its generated Services).
/// </summary>
internal sealed partial class SyncLoop(
    HubClient hub,
    Func<PairingResponse> pairing,
    Func<CancellationToken, Task> repair,
    Func<CancellationToken, Task> renewTunnel,
    Reconciler reconciler,
    RemoteAppStore remoteApps,
    string name,
    JsonElement? metadata,
    WormholeMetrics metrics,
    TimeProvider time,
    ILogger logger)
{
    internal static readonly TimeSpan ReferencePollInterval = TimeSpan.FromSeconds(5);
    private long _rounds;

    /// <summary>Syncs completed or given up so far (for tests).</summary>
    internal long Rounds => Interlocked.Read(ref _rounds);

    public async Task RunAsync(CancellationToken stop)
    {
        await reconciler.ConvergeAsync(stop);
        string? hubVersion = null;
        var failures = 0;
        while (!stop.IsCancellationRequested)
        {
            var current = pairing();
            var sentVersion = reconciler.AdvertisedVersion;
            var body = SyncCodec.Encode(name, metadata, reconciler.Current.Advertised);
            using var round = CancellationTokenSource.CreateLinkedTokenSource(stop);
            try
            {
                var localChange = reconciler.WaitForAdvertisedChangeAsync(sentVersion, Timeout.InfiniteTimeSpan, round.Token);
                var started = time.GetTimestamp();
                var send = hub.SyncAsync(SyncBase(current), body, hubVersion, round.Token);
                if (await Task.WhenAny(send, localChange) == localChange && !send.IsCompleted)
                {
                    await round.CancelAsync();
                    await send.ContinueWith(static _ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
                    continue;
                }

                try
                {
                    var result = await send;
                    failures = 0;
                    metrics.SyncAnswered(current.Name, time.GetElapsedTime(started));
                    remoteApps.Update(
                        result.Message.Peer,
                        IPAddress.Parse(current.InternalServerIp),
                        result.Message.Apps!.Select(a => new AppDescriptor(a.Name, a.Address, result.Message.Peer, a.OriginalPort, a.TargetLabels ?? "")).ToList());
                    if (hubVersion is null && result.HubVersion is not null)
                    {
                        LogLongPoll(logger);
                    }

                    hubVersion = result.HubVersion;
                    if (hubVersion is null)
                    {
                        await WaitQuietlyAsync(localChange, ReferencePollInterval, stop);
                    }
                }
                catch (HubCallException ex)
                {
                    failures++;
                    hubVersion = null;
                    metrics.SyncFailed(current.Name, ex.Status is null ? "transport" : ((int)ex.Status).ToString(System.Globalization.CultureInfo.InvariantCulture));
                    LogSyncFailed(logger, failures, ex.Message);
                    if (ex.PeerUnknown || failures % 3 == 0)
                    {
                        await repair(stop);
                    }
                    else if (ex.Status is null or HttpStatusCode.ServiceUnavailable)
                    {
                        // Unreachable, starting or stopping: the hub may be a new process with a new WireGuard
                        // interface that knows nothing of our session.
                        await renewTunnel(stop);
                    }

                    var delay = TimeSpan.FromMilliseconds(Math.Min(5000, 250 * Math.Pow(2, Math.Min(failures, 5))) * (0.5 + Random.Shared.NextDouble() / 2));
                    await Task.Delay(delay, time, stop);
                }
            }
            finally
            {
                // Ends this round's wait for a local change whichever way the round went; a round that only disposed
                // its token left that wait registered on the reconciler until the next local change (one per round).
                await round.CancelAsync();
                Interlocked.Increment(ref _rounds);
            }
        }
    }

    private async Task WaitQuietlyAsync(Task localChange, TimeSpan max, CancellationToken stop)
    {
        try
        {
            await localChange.WaitAsync(max, time, stop);
        }
        catch (TimeoutException)
        {
        }
    }

    private static Uri SyncBase(PairingResponse pairing)
    {
        var text = pairing.SyncServerAddress!;
        return new Uri(text.EndsWith('/') ? text : text + "/");
    }

    [LoggerMessage(EventId = 3007, Level = LogLevel.Warning, Message = "Sync failed ({Failures} in a row): {Reason}")]
    private static partial void LogSyncFailed(ILogger logger, int failures, string reason);

    [LoggerMessage(EventId = 3008, Level = LogLevel.Information, Message = "The hub supports long-poll sync: its changes arrive as they happen")]
    private static partial void LogLongPoll(ILogger logger);
}
