using System.Globalization;
using System.Text;

namespace Wormhole.Tunnel.Hosting;

/// <summary>
/// Makes a string that came from the network (a peer name, an app name, a reason that quotes them) safe to put in a
/// log line or an HTTP answer: control and format characters are escaped, so a newline cannot forge a second line and
/// an invisible character cannot hide text; long values are cut, so a 1 MiB name does not make a 1 MiB line.
/// </summary>
internal static class LogText
{
    /// <summary>The most characters a value keeps (after escaping) before it is cut.</summary>
    public const int MaxLength = 128;

    /// <summary>The bound for a whole reason or message that quotes remote values.</summary>
    public const int MaxReasonLength = 512;

    /// <summary>
    /// <paramref name="value"/> with <c>\n</c>, <c>\r</c> and <c>\t</c> written as those two characters, every other
    /// control, format or separator character and every unpaired surrogate as <c>\uXXXX</c>, cut to
    /// <paramref name="max"/> characters plus <c>…(N chars)</c> where N is the original length. Null gives <c>(null)</c>.
    /// </summary>
    public static string Of(string? value, int max = MaxLength)
    {
        if (value is null)
        {
            return "(null)";
        }

        if (value.Length <= max && !NeedsEscaping(value))
        {
            return value;
        }

        var sb = new StringBuilder(Math.Min(value.Length, max) + 16);
        for (var i = 0; i < value.Length; i++)
        {
            var c = value[i];
            var pair = char.IsHighSurrogate(c) && i + 1 < value.Length && char.IsLowSurrogate(value[i + 1]);
            var piece = pair ? value.Substring(i, 2) : Escape(c);
            if (sb.Length + piece.Length > max)
            {
                sb.Append("…(").Append(value.Length.ToString(CultureInfo.InvariantCulture)).Append(" chars)");
                return sb.ToString();
            }

            sb.Append(piece);
            if (pair)
            {
                i++;
            }
        }

        return sb.ToString();
    }

    private static bool NeedsEscaping(string value)
    {
        for (var i = 0; i < value.Length; i++)
        {
            var c = value[i];
            if (char.IsHighSurrogate(c) && i + 1 < value.Length && char.IsLowSurrogate(value[i + 1]))
            {
                i++;
                continue;
            }

            if (IsUnsafe(c))
            {
                return true;
            }
        }

        return false;
    }

    private static bool IsUnsafe(char c) => char.GetUnicodeCategory(c) is
        UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.LineSeparator
        or UnicodeCategory.ParagraphSeparator or UnicodeCategory.Surrogate;

    private static string Escape(char c) => c switch
    {
        '\n' => "\\n",
        '\r' => "\\r",
        '\t' => "\\t",
        _ when IsUnsafe(c) => "\\u" + ((int)c).ToString("X4", CultureInfo.InvariantCulture),
        _ => c.ToString(),
    };
}
