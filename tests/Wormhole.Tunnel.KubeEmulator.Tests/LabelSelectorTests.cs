namespace Wormhole.Tunnel.KubeEmulator.Tests;

/// <summary>Label selector syntax and matching as k8s.io/apimachinery/pkg/labels parses them.</summary>
public sealed class LabelSelectorTests
{
    private static readonly Dictionary<string, string> Web = new() { ["app"] = "web", ["tier"] = "front", ["replicas"] = "3", ["example.com/team"] = "a" };

    [Theory]
    [InlineData("", true)]
    [InlineData("app=web", true)]
    [InlineData("app==web", true)]
    [InlineData("app=db", false)]
    [InlineData("app!=db", true)]
    [InlineData("missing!=x", true)]
    [InlineData("app in (db,web)", true)]
    [InlineData("app in (db)", false)]
    [InlineData("app notin (db, cache)", true)]
    [InlineData("missing notin (x)", true)]
    [InlineData("app", true)]
    [InlineData("missing", false)]
    [InlineData("!missing", true)]
    [InlineData("!app", false)]
    [InlineData("app=web,tier=front", true)]
    [InlineData("app=web,tier=back", false)]
    [InlineData(" app = web , tier in ( front ) ", true)]
    [InlineData("example.com/team=a", true)]
    [InlineData("replicas>2", true)]
    [InlineData("replicas<3", false)]
    [InlineData("missing=", false)]
    public void Selectors_match_like_the_apiserver(string selector, bool matches)
    {
        LabelSelector.Parse(selector).Matches(Web).Should().Be(matches);
    }

    [Fact]
    public void An_empty_value_matches_a_label_with_an_empty_value()
    {
        LabelSelector.Parse("flag=").Matches(new Dictionary<string, string> { ["flag"] = "" }).Should().BeTrue();
    }

    [Theory]
    [InlineData("app in web")]
    [InlineData("app in (web")]
    [InlineData("app in ()")]
    [InlineData("=web")]
    [InlineData("app=web,")]
    [InlineData("app=web app=db")]
    [InlineData("bad key=x")]
    [InlineData("app=has space")]
    [InlineData("-app=x")]
    [InlineData("a/b/c=x")]
    [InlineData("replicas>three")]
    public void Malformed_selectors_are_rejected(string selector)
    {
        var parse = () => LabelSelector.Parse(selector);

        parse.Should().Throw<FormatException>();
    }

    [Fact]
    public void A_value_longer_than_63_characters_is_rejected_with_the_apiservers_reason()
    {
        var parse = () => LabelSelector.Parse("app=" + new string('v', 64));

        parse.Should().Throw<FormatException>().WithMessage("*must be no more than 63 characters*");
    }

    [Fact]
    public void Parsed_selectors_print_back_in_canonical_form()
    {
        LabelSelector.Parse(" a = b , c in ( d , e ) , !f , g ").ToString().Should().Be("a=b,c in (d,e),!f,g");
    }
}
