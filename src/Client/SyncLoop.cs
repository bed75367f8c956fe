using System.Net;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Metrics;
using Wormhole.Tunnel.Pairing;
using Wormhole.Tunnel.Resilience;
using Wormhole.Tunnel.Runtime;
using Wormhole.Tunnel.Sources;
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
    RetryPipelines retries,
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

        // A failed sync is retried on the sync schedule until it works or a local change starts a new round; between
        // attempts the tunnel is renewed (the hub may be a new process whose WireGuard interface knows nothing of our
        // session) or, when the hub no longer knows us or every third failure, pairing is repaired.
        var retry = retries.Build(RetrySchedule.Sync, int.MaxValue, ex => ex is HubCallException, async (notice, _) =>
        {
            var ex = (HubCallException)notice.Problem!;
            hubVersion = null;
            metrics.SyncFailed(pairing().Name, ex.Status is null ? "transport" : ((int)ex.Status).ToString(System.Globalization.CultureInfo.InvariantCulture));
            LogSyncFailed(logger, notice.Attempt, ex.Message);
            if (ex.PeerUnknown || notice.Attempt % 3 == 0)
            {
                await repair(stop);
            }
            else if (ex.Status is null or HttpStatusCode.ServiceUnavailable)
            {
                await renewTunnel(stop);
            }
        });

        while (!stop.IsCancellationRequested)
        {
            var sentVersion = reconciler.AdvertisedVersion;
            var body = SyncCodec.Encode(name, metadata, reconciler.Current.Advertised);
            using var round = CancellationTokenSource.CreateLinkedTokenSource(stop);
            try
            {
                var localChange = reconciler.WaitForAdvertisedChangeAsync(sentVersion, Timeout.InfiniteTimeSpan, round.Token);
                var send = retry.ExecuteAsync(
                    async token =>
                    {
                        var current = pairing();
                        var started = time.GetTimestamp();
                        var answer = await hub.SyncAsync(SyncBase(current), body, hubVersion, token);
                        return (current, answer, time.GetElapsedTime(started));
                    },
                    round.Token).AsTask();
                if (await Task.WhenAny(send, localChange) == localChange && !send.IsCompleted)
                {
                    await round.CancelAsync();
                    await send.ContinueWith(static _ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
                    continue;
                }

                var (synced, result, took) = await send;
                metrics.SyncAnswered(synced.Name, took);
                remoteApps.Update(
                    result.Message.Peer,
                    IPAddress.Parse(synced.InternalServerIp),
                    result.Message.Apps!.Select(a => a.ToDescriptor(result.Message.Peer)).ToList());
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
