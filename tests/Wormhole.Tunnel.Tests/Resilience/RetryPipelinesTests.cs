using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Resilience;
using Wormhole.Tunnel.Tests.Hosting;

namespace Wormhole.Tunnel.Tests.Resilience;

public class RetryPipelinesTests
{
    private static readonly RetrySchedule Quick = new("test-call", TimeSpan.FromMilliseconds(1), TimeSpan.FromMilliseconds(4));

    [Fact]
    public async Task A_handled_failure_is_retried_until_the_call_works_and_each_retry_is_counted_and_logged_at_debug()
    {
        var log = new RecordingLog();
        var notices = new List<RetryNotice>();
        var pipelines = new RetryPipelines(log.For<RetryPipelines>(), TimeProvider.System, notices.Add);
        var between = new List<int>();
        var retry = pipelines.Build(Quick, int.MaxValue, ex => ex is TimeoutException, (notice, _) =>
        {
            between.Add(notice.Attempt);
            return ValueTask.CompletedTask;
        });
        var calls = 0;

        var result = await retry.ExecuteAsync(_ => ++calls < 4 ? throw new TimeoutException("hub\nforged line") : ValueTask.FromResult("answer"), CancellationToken.None);

        result.Should().Be("answer");
        calls.Should().Be(4);
        notices.Select(n => (n.Operation, n.Attempt)).Should().Equal(("test-call", 1), ("test-call", 2), ("test-call", 3));
        between.Should().Equal(1, 2, 3);
        var lines = log.WithEvent(1500);
        lines.Should().HaveCount(3).And.OnlyContain(l => l.Level == LogLevel.Debug);
        lines[0].Message.Should().StartWith("Retrying test-call (retry 1) in ").And.NotContain("\n", "a remote reason is escaped");
    }

    [Fact]
    public async Task A_failure_the_pipeline_does_not_handle_is_thrown_at_once()
    {
        var notices = new List<RetryNotice>();
        var retry = new RetryPipelines(new RecordingLog().For<RetryPipelines>(), TimeProvider.System, notices.Add)
            .Build(Quick, int.MaxValue, ex => ex is TimeoutException);
        var calls = 0;

        var call = async () => await retry.ExecuteAsync(_ => { calls++; throw new InvalidOperationException("a bug"); }, CancellationToken.None);

        await call.Should().ThrowAsync<InvalidOperationException>();
        calls.Should().Be(1);
        notices.Should().BeEmpty();
    }

    [Fact]
    public async Task A_limited_pipeline_gives_up_with_the_last_error()
    {
        var retry = new RetryPipelines(new RecordingLog().For<RetryPipelines>(), TimeProvider.System).Build(Quick, 2, ex => ex is TimeoutException);
        var calls = 0;

        var call = async () => await retry.ExecuteAsync(_ => throw new TimeoutException($"attempt {++calls}"), CancellationToken.None);

        (await call.Should().ThrowAsync<TimeoutException>()).Which.Message.Should().Be("attempt 3");
    }

    [Fact]
    public async Task Stopping_ends_a_retry_wait_at_once()
    {
        var slow = new RetrySchedule("slow", TimeSpan.FromHours(1), TimeSpan.FromHours(1));
        var retry = new RetryPipelines(new RecordingLog().For<RetryPipelines>(), TimeProvider.System).Build(slow, int.MaxValue, ex => ex is TimeoutException);
        using var stop = new CancellationTokenSource();
        var waiting = new TaskCompletionSource();

        var run = retry.ExecuteAsync(_ => { waiting.TrySetResult(); throw new TimeoutException(); }, stop.Token).AsTask();
        await waiting.Task;
        await stop.CancelAsync();

        await run.Invoking(r => r).Should().ThrowAsync<OperationCanceledException>();
    }

    [Theory]
    [InlineData("pairing", 500, 30_000)]
    [InlineData("sync", 500, 5_000)]
    [InlineData("sinks", 500, 30_000)]
    [InlineData("kubernetes-watch", 200, 30_000)]
    [InlineData("wireguard", 100, 1_000)]
    public void Every_schedule_doubles_from_its_first_delay_to_its_cap_and_jitter_takes_at_most_half_off(string operation, int firstMs, int maxMs)
    {
        var schedule = new[] { RetrySchedule.Pairing, RetrySchedule.Sync, RetrySchedule.Sinks, RetrySchedule.KubernetesWatch, RetrySchedule.WireGuard }
            .Single(s => s.Operation == operation);

        schedule.Delay(1, 0.999999).TotalMilliseconds.Should().BeApproximately(firstMs, 1);
        schedule.Delay(2, 0.999999).TotalMilliseconds.Should().BeApproximately(Math.Min(2 * firstMs, maxMs), 1);
        schedule.Delay(1000, 0.999999).TotalMilliseconds.Should().BeApproximately(maxMs, 1);
        schedule.Delay(1000, 0).TotalMilliseconds.Should().Be(maxMs / 2.0);
    }
}
