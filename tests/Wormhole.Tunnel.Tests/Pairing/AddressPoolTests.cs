using System.Net;
using Wormhole.Tunnel.Pairing;

namespace Wormhole.Tunnel.Tests.Pairing;

public class AddressPoolTests
{
    private static IPAddress Ip(string s) => IPAddress.Parse(s);

    [Fact]
    public void First_spoke_gets_the_address_after_the_hub()
    {
        new AddressPool(Ip("10.188.0.1"), 24).Allocate([]).Should().Be(Ip("10.188.0.2"));
    }

    [Fact]
    public void Never_hands_out_network_broadcast_or_hub_address()
    {
        var pool = new AddressPool(Ip("10.188.0.5"), 29); // hosts .1-.6, hub .5
        var given = new List<IPAddress>();
        while (pool.Allocate(given) is { } next)
        {
            given.Add(next);
        }

        given.Select(a => a.ToString()).Should().Equal("10.188.0.1", "10.188.0.2", "10.188.0.3", "10.188.0.4", "10.188.0.6");
        pool.Capacity.Should().Be(5);
    }

    [Fact]
    public void Freed_addresses_are_reused_lowest_first()
    {
        var pool = new AddressPool(Ip("10.188.0.1"), 24);
        pool.Allocate([Ip("10.188.0.3"), Ip("10.188.0.4")]).Should().Be(Ip("10.188.0.2"));
        pool.Allocate([Ip("10.188.0.2"), Ip("10.188.0.4")]).Should().Be(Ip("10.188.0.3"));
    }

    [Fact]
    public void Exhausted_pool_returns_null()
    {
        var pool = new AddressPool(Ip("10.188.0.1"), 30);
        pool.Allocate([Ip("10.188.0.2")]).Should().BeNull();
    }

    [Theory]
    [InlineData("10.188.0.0", 24)]
    [InlineData("10.188.0.255", 24)]
    public void A_hub_on_the_network_or_broadcast_address_is_refused(string hub, int prefix)
    {
        var act = () => new AddressPool(Ip(hub), prefix);
        act.Should().Throw<ArgumentException>();
    }

    [Fact]
    public void Contains_excludes_hub_and_outside_addresses()
    {
        var pool = new AddressPool(Ip("10.188.0.1"), 24);
        pool.Contains(Ip("10.188.0.9")).Should().BeTrue();
        pool.Contains(Ip("10.188.0.1")).Should().BeFalse();
        pool.Contains(Ip("10.188.1.9")).Should().BeFalse();
    }
}
