namespace Wormhole.Tunnel.Tests.Runtime;

/// <summary>A clock that moves only when told (no timers fire by themselves; tests call the code that reads it).</summary>
internal sealed class ManualClock(DateTimeOffset start) : TimeProvider
{
    private DateTimeOffset _now = start;

    public override DateTimeOffset GetUtcNow() => _now;

    public void Advance(TimeSpan by) => _now += by;
}
