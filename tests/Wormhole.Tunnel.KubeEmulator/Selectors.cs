using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;

namespace Wormhole.Tunnel.KubeEmulator;

/// <summary>
/// A label selector as the apiserver parses it: comma-separated requirements, all of which must hold —
/// <c>k=v</c>, <c>k==v</c>, <c>k!=v</c>, <c>k in (a,b)</c>, <c>k notin (a,b)</c>, <c>k</c>, <c>!k</c>, <c>k&gt;1</c>, <c>k&lt;1</c>.
/// </summary>
public sealed class LabelSelector
{
    private readonly List<(string Key, string Op, string[] Values)> _requirements;

    private LabelSelector(List<(string, string, string[])> requirements) => _requirements = requirements;

    public static LabelSelector Everything { get; } = new([]);

    public bool IsEverything => _requirements.Count == 0;

    /// <summary>Parses a selector; throws <see cref="FormatException"/> with the apiserver's wording on bad input.</summary>
    public static LabelSelector Parse(string? text)
    {
        var tokens = Tokenize(text ?? "");
        var requirements = new List<(string, string, string[])>();
        var i = 0;
        string Next() => i < tokens.Count ? tokens[i++] : "";
        string Peek() => i < tokens.Count ? tokens[i] : "";
        while (i < tokens.Count)
        {
            var negated = Peek() == "!";
            if (negated)
            {
                i++;
            }

            var key = Next();
            if (key.Length == 0 || IsOperator(key))
            {
                throw new FormatException($"found '{key}', expected: identifier");
            }

            foreach (var msg in Names.QualifiedName(key))
            {
                throw new FormatException($"unable to parse requirement: key: Invalid value: \"{key}\": {msg}");
            }

            string op;
            var values = new List<string>();
            if (negated || Peek() is "," or "")
            {
                op = negated ? "!" : "exists";
            }
            else
            {
                op = Next();
                switch (op)
                {
                    case "=" or "==" or "!=":
                        values.Add(Peek() is "," or "" ? "" : Next());
                        break;
                    case ">" or "<":
                        var number = Next();
                        if (!long.TryParse(number, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out _))
                        {
                            throw new FormatException($"unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer, got \"{number}\"");
                        }

                        values.Add(number);
                        break;
                    case "in" or "notin":
                        if (Next() != "(")
                        {
                            throw new FormatException($"found '{tokens.ElementAtOrDefault(i - 1)}', expected: '('");
                        }

                        while (Peek() != ")")
                        {
                            var value = Peek() == "," ? "" : Next();
                            if (value == "")
                            {
                                throw new FormatException("unable to parse requirement: for 'in', 'notin' operators, values set can't be empty");
                            }

                            values.Add(value);
                            if (Peek() == ",")
                            {
                                i++;
                            }
                            else if (Peek() != ")")
                            {
                                throw new FormatException($"found '{Peek()}', expected: ',' or ')'");
                            }
                        }

                        i++;
                        if (values.Count == 0)
                        {
                            throw new FormatException("unable to parse requirement: for 'in', 'notin' operators, values set can't be empty");
                        }

                        break;
                    default:
                        throw new FormatException($"found '{op}', expected: '=', '!=', '==', 'in', notin'");
                }
            }

            foreach (var value in values.Where(_ => op is not (">" or "<")))
            {
                foreach (var msg in Names.LabelValue(value))
                {
                    throw new FormatException($"unable to parse requirement: values[0][{key}]: Invalid value: \"{value}\": {msg}");
                }
            }

            requirements.Add((key, op, values.ToArray()));
            if (i < tokens.Count && Next() != ",")
            {
                throw new FormatException($"found '{tokens[i - 1]}', expected: ',' or 'end of string'");
            }

            if (i == tokens.Count && tokens[^1] == ",")
            {
                throw new FormatException("found '', expected: identifier after ','");
            }
        }

        return new LabelSelector(requirements);
    }

    /// <summary>Builds the selector text of a <c>LabelSelector</c> object (<c>matchLabels</c>, <c>matchExpressions</c>).</summary>
    public static string Format(JsonNode? selector)
    {
        var parts = selector.At("matchLabels").StringMap().OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => $"{p.Key}={p.Value}").ToList();
        foreach (var e in selector.At("matchExpressions").Objects())
        {
            var values = string.Join(",", (e["values"] as JsonArray ?? []).Select(v => v?.ToString() ?? ""));
            parts.Add(e.Str("operator") switch
            {
                "In" => $"{e.Str("key")} in ({values})",
                "NotIn" => $"{e.Str("key")} notin ({values})",
                "DoesNotExist" => $"!{e.Str("key")}",
                _ => e.Str("key") ?? "",
            });
        }

        return parts.Count == 0 ? "<none>" : string.Join(",", parts);
    }

    public bool Matches(IReadOnlyDictionary<string, string> labels) => _requirements.All(r => r.Op switch
    {
        "exists" => labels.ContainsKey(r.Key),
        "!" => !labels.ContainsKey(r.Key),
        "=" or "==" or "in" => labels.TryGetValue(r.Key, out var v) && r.Values.Contains(v),
        "!=" or "notin" => !labels.TryGetValue(r.Key, out var v) || !r.Values.Contains(v),
        _ => labels.TryGetValue(r.Key, out var v) && long.TryParse(v, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var n)
            && (r.Op == ">" ? n > long.Parse(r.Values[0], CultureInfo.InvariantCulture) : n < long.Parse(r.Values[0], CultureInfo.InvariantCulture)),
    });

    public bool Matches(JsonObject obj) => Matches(obj.At("metadata.labels").StringMap());

    public override string ToString() => string.Join(",", _requirements.Select(r => r.Op switch
    {
        "exists" => r.Key,
        "!" => "!" + r.Key,
        "in" or "notin" => $"{r.Key} {r.Op} ({string.Join(",", r.Values)})",
        _ => r.Key + r.Op + r.Values[0],
    }));

    private static bool IsOperator(string token) => token is "=" or "==" or "!=" or "!" or "(" or ")" or "," or "<" or ">";

    private static List<string> Tokenize(string text)
    {
        var tokens = new List<string>();
        for (var i = 0; i < text.Length;)
        {
            var c = text[i];
            if (char.IsWhiteSpace(c))
            {
                i++;
            }
            else if (c is '!' or '=' && i + 1 < text.Length && text[i + 1] == '=')
            {
                tokens.Add(text.Substring(i, 2));
                i += 2;
            }
            else if (c is '!' or '=' or '(' or ')' or ',' or '<' or '>')
            {
                tokens.Add(c.ToString());
                i++;
            }
            else
            {
                var start = i;
                while (i < text.Length && !char.IsWhiteSpace(text[i]) && text[i] is not ('!' or '=' or '(' or ')' or ',' or '<' or '>'))
                {
                    i++;
                }

                tokens.Add(text[start..i]);
            }
        }

        return tokens;
    }
}

/// <summary>A field selector (<c>metadata.name=x,spec.type!=NodePort</c>) over the fields the apiserver allows per resource.</summary>
internal sealed class FieldSelector
{
    private readonly List<(string Field, bool Equal, string Value)> _terms;

    private FieldSelector(List<(string, bool, string)> terms) => _terms = terms;

    public static FieldSelector Parse(string? text, ResourceKind kind)
    {
        var terms = new List<(string, bool, string)>();
        foreach (var term in SplitUnescaped(text ?? "", ','))
        {
            if (term.Trim().Length == 0)
            {
                continue;
            }

            var (field, equal, value) = term.IndexOf("!=", StringComparison.Ordinal) is var ne and >= 0 ? (term[..ne], false, term[(ne + 2)..])
                : term.IndexOf("==", StringComparison.Ordinal) is var ee and >= 0 ? (term[..ee], true, term[(ee + 2)..])
                : term.IndexOf('=', StringComparison.Ordinal) is var e and >= 0 ? (term[..e], true, term[(e + 1)..])
                : throw KubeApiException.BadRequest($"invalid selector: '{text}'; can't understand '{term}'");
            field = field.Trim();
            if (!Supported(kind).Contains(field))
            {
                throw KubeApiException.BadRequest($"field label not supported: {field}");
            }

            terms.Add((field, equal, Unescape(value.Trim())));
        }

        return new FieldSelector(terms);
    }

    public bool Matches(JsonObject obj) => _terms.All(t => (Value(obj, t.Field) == t.Value) == t.Equal);

    private static string Value(JsonObject obj, string field) => field switch
    {
        "source" => obj.Str("source.component") ?? "",
        _ => obj.At(field) switch
        {
            JsonValue v when v.GetValueKind() == System.Text.Json.JsonValueKind.String => v.GetValue<string>(),
            JsonValue v => v.ToJsonString(),
            _ => "",
        },
    };

    private static string[] Supported(ResourceKind kind) => kind.Plural switch
    {
        "services" => ["metadata.name", "metadata.namespace", "spec.clusterIP", "spec.type"],
        "namespaces" => ["metadata.name", "status.phase"],
        "events" => ["metadata.name", "metadata.namespace", "involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
            "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"],
        _ => ["metadata.name", "metadata.namespace"],
    };

    private static IEnumerable<string> SplitUnescaped(string text, char separator)
    {
        var current = new StringBuilder();
        for (var i = 0; i < text.Length; i++)
        {
            if (text[i] == '\\' && i + 1 < text.Length)
            {
                current.Append(text, i++, 2);
            }
            else if (text[i] == separator)
            {
                yield return current.ToString();
                current.Clear();
            }
            else
            {
                current.Append(text[i]);
            }
        }

        yield return current.ToString();
    }

    private static string Unescape(string value) => value.Replace("\\,", ",", StringComparison.Ordinal).Replace("\\=", "=", StringComparison.Ordinal).Replace("\\\\", "\\", StringComparison.Ordinal);
}
