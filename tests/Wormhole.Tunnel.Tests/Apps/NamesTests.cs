using Wormhole.Tunnel.Apps;

namespace Wormhole.Tunnel.Tests.Apps;

public class NamesTests
{
    [Theory]
    [InlineData("", "")]
    [InlineData("client-nginx-nginx", "client-nginx-nginx")]
    [InlineData("alpha-beta-gamma-delta-epsilon-zeta-eta-iota-kappa-lambda-mi-ni-xi-omikron-pi-rho-sigma", "alpha-beta-gamma-delta-epsilon-zeta-eta-iota-kappa-76198ab9")]
    public void Cap_matches_the_reference(string name, string expected)
    {
        Names.Cap(name).Should().Be(expected);
    }

    [Fact]
    public void Capped_names_are_at_most_63_characters_even_without_dashes()
    {
        var capped = Names.Cap(new string('a', 100));
        capped.Length.Should().BeLessThanOrEqualTo(63);
        capped.Should().StartWith(new string('a', 54) + "-");
    }

    [Theory]
    [InlineData("client1", true)]
    [InlineData("1client", true)]
    [InlineData("Client", false)]
    [InlineData("client_1", false)]
    [InlineData("-client", false)]
    [InlineData("", false)]
    public void Peer_names_are_dns_labels(string name, bool valid)
    {
        Names.IsValidPeerName(name).Should().Be(valid);
    }

    [Theory]
    [InlineData("nginx-nginx", true)]
    [InlineData("../../etc/passwd", false)]
    [InlineData("has space", false)]
    public void App_names_cannot_carry_paths_or_spaces(string name, bool valid)
    {
        Names.IsValidAppName(name).Should().Be(valid);
    }
}
