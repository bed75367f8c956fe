using Microsoft.Extensions.Logging.Abstractions;
using Wormhole.Tunnel.Runtime;

namespace Wormhole.Tunnel.Tests.Runtime;

public class LoopsTests
{
    [Fact]
    public async Task A_loop_that_faults_stops_the_others_and_fails_the_run_naming_it()
    {
        var othersStopped = 0;
        async Task Forever(CancellationToken ct)
        {
            try
            {
                await Task.Delay(Timeout.Infinite, ct);
            }
            finally
            {
                Interlocked.Increment(ref othersStopped);
            }
        }

        async Task Faulty(CancellationToken ct)
        {
            await Task.Yield();
            throw new IOException("disk full");
        }

        var run = Loops.RunAsync([new("reconcile", Forever), new("sync", Faulty), new("local apps", Forever)], NullLogger.Instance, CancellationToken.None);

        var failure = await run.Invoking(r => r.WaitAsync(TimeSpan.FromSeconds(10))).Should().ThrowAsync<LoopFailedException>();
        failure.Which.Loop.Should().Be("sync");
        failure.Which.Message.Should().Contain("disk full");
        othersStopped.Should().Be(2);
    }

    [Fact]
    public async Task A_loop_that_returns_while_the_side_runs_is_a_failure_too()
    {
        var run = Loops.RunAsync(
            [new("reconcile", ct => Task.Delay(Timeout.Infinite, ct)), new("local apps", _ => Task.CompletedTask)], NullLogger.Instance, CancellationToken.None);

        var failure = await run.Invoking(r => r.WaitAsync(TimeSpan.FromSeconds(10))).Should().ThrowAsync<LoopFailedException>();
        failure.Which.Loop.Should().Be("local apps");
        failure.Which.Message.Should().Contain("ended unexpectedly");
    }

    [Fact]
    public async Task Stopping_ends_every_loop_and_the_run_without_an_error()
    {
        using var stop = new CancellationTokenSource();
        var run = Loops.RunAsync(
            [new("reconcile", ct => Task.Delay(Timeout.Infinite, ct)), new("sync", ct => Task.Delay(Timeout.Infinite, ct))], NullLogger.Instance, stop.Token);
        run.IsCompleted.Should().BeFalse();

        await stop.CancelAsync();
        await run.WaitAsync(TimeSpan.FromSeconds(10));
    }
}
