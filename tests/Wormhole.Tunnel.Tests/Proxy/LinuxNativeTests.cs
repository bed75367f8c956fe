using System.Net;
using Wormhole.Tunnel.Proxy;

namespace Wormhole.Tunnel.Tests.Proxy;

/// <summary>The socket addresses the splice engine reads itself (accept4's peer, getsockname's local address).</summary>
public sealed class LinuxNativeTests
{
    [Theory]
    [InlineData("10.188.0.1", "10.188.0.1", true)]
    [InlineData("10.188.0.1", "10.188.0.2", false)]
    [InlineData("::ffff:10.188.0.1", "10.188.0.1", true)] // a dual-mode listener sees IPv4 clients as mapped addresses
    [InlineData("::ffff:10.188.0.2", "10.188.0.1", false)]
    [InlineData("fd00::1", "fd00::1", true)]
    [InlineData("fd00::1", "fd00::2", false)]
    [InlineData("10.188.0.1", "::ffff:10.188.0.1", false)]
    public void A_local_address_matches_the_refused_address_in_either_family(string local, string refused, bool matches)
    {
        var sockaddr = new IPEndPoint(IPAddress.Parse(local), 8080).Serialize().Buffer.ToArray();

        LinuxNative.SockAddrIs(sockaddr, IPAddress.Parse(refused)).Should().Be(matches);
    }

    [Theory]
    [InlineData("192.0.2.7", 40000, "192.0.2.7")]
    [InlineData("::ffff:192.0.2.7", 40001, "192.0.2.7")]
    [InlineData("2001:db8::7", 40002, "2001:db8::7")]
    public void A_peer_address_reads_back_as_the_end_point_with_mapped_addresses_as_IPv4(string address, int port, string expected)
    {
        var sockaddr = new IPEndPoint(IPAddress.Parse(address), port).Serialize().Buffer.ToArray();

        LinuxNative.ToEndPoint(sockaddr).Should().Be(new IPEndPoint(IPAddress.Parse(expected), port));
    }
}
