using Wormhole.Tunnel.Server;

namespace Wormhole.Tunnel.Tests.Server;

/// <summary>Which syncs make the hub give memory back (the E2E HugeSyncTests measures that it does).</summary>
public sealed class MemoryTrimTests
{
    [Theory]
    [InlineData(2_000, 0, 3, false)]                      // an ordinary sync: a few apps added
    [InlineData(40_000, 400, 200, false)]                 // 200 apps withdrawn
    [InlineData(MemoryTrim.LargeBodyBytes - 1, 0, 1000, false)]
    [InlineData(MemoryTrim.LargeBodyBytes, 0, 1000, true)] // a body of 1 MiB (a huge list, kept to the quota or not)
    [InlineData(4_800_000, 1000, 1000, true)]             // the same huge list again
    [InlineData(60, 1000, 0, true)]                       // a huge list withdrawn with an empty sync
    [InlineData(60, MemoryTrim.LargeWithdrawal, 0, true)]
    [InlineData(60, MemoryTrim.LargeWithdrawal - 1, 0, false)]
    public void A_sync_is_large_when_its_body_is_a_MiB_or_it_withdraws_hundreds_of_apps(long bodyBytes, int before, int after, bool large) =>
        MemoryTrim.IsLarge(bodyBytes, before, after).Should().Be(large);
}
