using Wormhole.Tunnel.Resilience;

namespace Wormhole.Tunnel.Tests.Client;

public class PairingRetryTests
{
    [Theory]
    [InlineData(1, 250, 500)]
    [InlineData(2, 500, 1000)]
    [InlineData(3, 1000, 2000)]
    [InlineData(7, 15_000, 30_000)]
    [InlineData(8, 15_000, 30_000)]
    [InlineData(1000, 15_000, 30_000)]
    public void Pairing_retries_back_off_exponentially_from_half_a_second_to_30_seconds_with_jitter(int attempt, int minMs, int maxMs)
    {
        RetrySchedule.Pairing.Delay(attempt, 0).TotalMilliseconds.Should().Be(minMs);
        RetrySchedule.Pairing.Delay(attempt, 0.999999).TotalMilliseconds.Should().BeApproximately(maxMs, 1);
    }
}
