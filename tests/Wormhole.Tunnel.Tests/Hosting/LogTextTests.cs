using Wormhole.Tunnel.Hosting;

namespace Wormhole.Tunnel.Tests.Hosting;

public sealed class LogTextTests
{
    [Theory]
    [InlineData("spoke1", "spoke1")]
    [InlineData("", "")]
    [InlineData("app 'web' has an invalid address", "app 'web' has an invalid address")]
    [InlineData("ünïcödé ✓ 🐛", "ünïcödé ✓ 🐛")]
    [InlineData("C:\\path", "C:\\path")]
    public void Ordinary_text_is_left_as_it_is(string value, string expected)
    {
        LogText.Of(value).Should().Be(expected);
    }

    [Theory]
    [InlineData("spoke1\n", "spoke1\\n")]
    [InlineData("a\r\nINFO forged line", "a\\r\\nINFO forged line")]
    [InlineData("tab\there", "tab\\there")]
    [InlineData("bell\u0007", "bell\\u0007")]
    [InlineData("esc\u001b[31mred", "esc\\u001B[31mred")]
    [InlineData("nul\0", "nul\\u0000")]
    [InlineData("del\u007f", "del\\u007F")]
    [InlineData("c1\u0085next", "c1\\u0085next")]
    [InlineData("rtl\u202Eevil", "rtl\\u202Eevil")]
    [InlineData("zero\u200Bwidth", "zero\\u200Bwidth")]
    [InlineData("line\u2028sep", "line\\u2028sep")]
    public void Control_and_format_characters_are_escaped(string value, string expected)
    {
        LogText.Of(value).Should().Be(expected);
    }

    [Fact]
    public void An_unpaired_surrogate_is_escaped()
    {
        LogText.Of("lone\uD800surrogate").Should().Be("lone\\uD800surrogate");
    }

    [Fact]
    public void A_long_value_is_cut_and_says_how_long_it_was()
    {
        var name = new string('a', 1024 * 1024);

        var text = LogText.Of(name);

        text.Should().Be(new string('a', LogText.MaxLength) + "…(1048576 chars)");
    }

    [Fact]
    public void Escapes_count_towards_the_bound_so_the_result_stays_short()
    {
        var text = LogText.Of(new string('\n', 10_000));

        text.Length.Should().BeLessThan(LogText.MaxLength + 20);
        text.Should().StartWith("\\n\\n").And.EndWith("…(10000 chars)");
        text.Should().NotContain("\n");
    }

    [Fact]
    public void A_cut_never_splits_a_surrogate_pair()
    {
        var text = LogText.Of(new string('a', LogText.MaxLength - 1) + "🐛🐛");

        text.Should().Be(new string('a', LogText.MaxLength - 1) + "…(131 chars)");
    }

    [Fact]
    public void Null_is_shown_as_null()
    {
        LogText.Of(null).Should().Be("(null)");
    }
}
