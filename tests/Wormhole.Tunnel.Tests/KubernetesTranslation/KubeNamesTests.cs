using Wormhole.Tunnel.Kubernetes;

namespace Wormhole.Tunnel.Tests.KubernetesTranslation;

public class KubeNamesTests
{
    [Theory]
    [InlineData("client", "nginx-nginx", "client-nginx-nginx")]
    [InlineData("server", "huehue-one-two-three", "server-huehue-one-two-three")]
    public void Valid_names_are_kept_as_the_reference_makes_them(string peer, string app, string expected)
    {
        KubeNames.ObjectName(peer, app).Should().Be(expected);
    }

    [Fact]
    public void Long_names_are_capped_like_the_reference()
    {
        KubeNames.ObjectName("alpha-beta-gamma", "delta-epsilon-zeta-eta-iota-kappa-lambda-mi-ni-xi-omikron-pi-rho-sigma")
            .Should().Be("alpha-beta-gamma-delta-epsilon-zeta-eta-iota-kappa-76198ab9");
    }

    [Theory]
    [InlineData("1client", "nginx")]
    [InlineData("client", "Custom_Name.With.Dots")]
    [InlineData("client", "UPPER")]
    public void Invalid_names_become_valid_distinct_service_names(string peer, string app)
    {
        var name = KubeNames.ObjectName(peer, app);
        KubeNames.IsValidServiceName(name).Should().BeTrue(name);
        name.Should().NotBe(KubeNames.ObjectName(peer, app + "x"));
    }

    [Theory]
    [InlineData("nginx-nginx")]
    [InlineData("Custom_Name.v2")]
    [InlineData("")]
    public void Valid_label_values_are_kept(string value)
    {
        KubeNames.LabelValue(value).Should().Be(value);
    }

    [Theory]
    [InlineData("a-very-long-namespace-name-that-goes-on-and-on-forever-and-ever-service")]
    [InlineData("has space")]
    [InlineData("-leading")]
    public void Invalid_label_values_become_valid(string value)
    {
        var label = KubeNames.LabelValue(value);
        KubeNames.IsValidLabelValue(label).Should().BeTrue(label);
        label.Should().NotBe(value);
    }

    [Theory]
    [InlineData("application=wormhole-server", true)]
    [InlineData("a=b,c=d=e", false)]
    [InlineData("a=b, example.com/c=d", true)]
    [InlineData("novalue", false)]
    [InlineData("", false)]
    public void Kubernetes_labels_flag_is_parsed_like_the_reference(string csv, bool valid)
    {
        (KubeNames.ParseLabels(csv, out var error) is not null).Should().Be(valid, error);
    }
}
