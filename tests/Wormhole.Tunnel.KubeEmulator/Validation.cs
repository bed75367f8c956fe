using System.Net;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace Wormhole.Tunnel.KubeEmulator;

/// <summary>One entry of a 422's <c>details.causes</c>; <see cref="ToString"/> is apimachinery's <c>field.Error.Error()</c>.</summary>
internal sealed record FieldError(string Reason, string Field, string Body)
{
    public override string ToString() => $"{Field}: {Body}";
}

internal sealed class FieldErrors : List<FieldError>
{
    public void Invalid(string field, JsonNode? value, string detail) => Add(new("FieldValueInvalid", field, $"Invalid value: {Show(value)}: {detail}"));

    public void Required(string field, string detail = "") => Add(new("FieldValueRequired", field, "Required value" + (detail.Length > 0 ? ": " + detail : "")));

    public void NotSupported(string field, JsonNode? value, params string[] supported) =>
        Add(new("FieldValueNotSupported", field, $"Unsupported value: {Show(value)}: supported values: {string.Join(", ", supported.Select(s => $"\"{s}\""))}"));

    public void Duplicate(string field, JsonNode? value) => Add(new("FieldValueDuplicate", field, $"Duplicate value: {Show(value)}"));

    public void TooLong(string field, int limit) => Add(new("FieldValueTooLong", field, $"Too long: may not be more than {limit} bytes"));

    public void Forbidden(string field, string detail) => Add(new("FieldValueForbidden", field, $"Forbidden: {detail}"));

    public void Each(string field, JsonNode? value, IEnumerable<string> messages)
    {
        foreach (var message in messages)
        {
            Invalid(field, value, message);
        }
    }

    /// <summary>Go's <c>%#v</c>-ish rendering: strings quoted, numbers bare.</summary>
    private static string Show(JsonNode? value) => value switch
    {
        null => "\"\"",
        JsonValue v when v.GetValueKind() == JsonValueKind.String => JsonSerializer.Serialize(v.GetValue<string>()),
        _ => value.ToJsonString(),
    };
}

/// <summary>The apiserver's name and label checks (k8s.io/apimachinery/pkg/util/validation), same messages.</summary>
internal static partial class Names
{
    private const string LabelFmt = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
    private const string SubdomainFmt = LabelFmt + "(\\." + LabelFmt + ")*";
    private const string Dns1035Fmt = "[a-z]([-a-z0-9]*[a-z0-9])?";
    private const string QualifiedFmt = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
    private const string ValueFmt = "(" + QualifiedFmt + ")?";
    private const string QualifiedMsg = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

    public static List<string> Dns1123Label(string value)
    {
        var errors = MaxLength(value, 63);
        if (!LabelRegex().IsMatch(value))
        {
            errors.Add(SubdomainRegex().IsMatch(value) ? "must not contain dots" : RegexError(
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
                LabelFmt, "my-name", "123-abc"));
        }

        return errors;
    }

    public static List<string> Dns1123Subdomain(string value)
    {
        var errors = MaxLength(value, 253);
        if (!SubdomainRegex().IsMatch(value))
        {
            errors.Add(RegexError(
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
                SubdomainFmt, "example.com"));
        }

        return errors;
    }

    public static List<string> Dns1035Label(string value)
    {
        var errors = MaxLength(value, 63);
        if (!Dns1035Regex().IsMatch(value))
        {
            errors.Add(RegexError(
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
                Dns1035Fmt, "my-name", "abc-123"));
        }

        return errors;
    }

    /// <summary>Label and annotation keys: an optional DNS-1123 subdomain prefix and '/', then a name of at most 63 characters.</summary>
    public static List<string> QualifiedName(string value)
    {
        var errors = new List<string>();
        var parts = value.Split('/');
        if (parts.Length > 2)
        {
            return ["a qualified name " + RegexError(QualifiedMsg, QualifiedFmt, "MyName", "my.name", "123-abc") + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"];
        }

        if (parts.Length == 2)
        {
            errors.AddRange(parts[0].Length == 0 ? ["prefix part must be non-empty"] : Dns1123Subdomain(parts[0]).Select(m => "prefix part " + m));
        }

        var name = parts[^1];
        if (name.Length == 0)
        {
            errors.Add("name part must be non-empty");
        }
        else if (name.Length > 63)
        {
            errors.Add("name part must be no more than 63 characters");
        }

        if (!QualifiedRegex().IsMatch(name))
        {
            errors.Add("name part " + RegexError(QualifiedMsg, QualifiedFmt, "MyName", "my.name", "123-abc"));
        }

        return errors;
    }

    public static List<string> LabelValue(string value)
    {
        var errors = MaxLength(value, 63);
        if (!ValueRegex().IsMatch(value))
        {
            errors.Add(RegexError("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                ValueFmt, "MyValue", "my_value", "12345"));
        }

        return errors;
    }

    /// <summary>IANA_SVC_NAME, the form of a named port.</summary>
    public static List<string> PortName(string value)
    {
        var errors = MaxLength(value, 15);
        if (!PortCharsRegex().IsMatch(value))
        {
            errors.Add("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
        }

        if (!value.Any(char.IsAsciiLetterLower))
        {
            errors.Add("must contain at least one letter (a-z)");
        }

        if (value.Contains("--", StringComparison.Ordinal))
        {
            errors.Add("must not contain consecutive hyphens");
        }

        if (value.StartsWith('-') || value.EndsWith('-'))
        {
            errors.Add("must not begin or end with a hyphen");
        }

        return errors;
    }

    private static List<string> MaxLength(string value, int max) => value.Length > max ? [$"must be no more than {max} characters"] : [];

    private static string RegexError(string message, string format, params string[] examples) =>
        $"{message} (e.g. {string.Join(" or ", examples.Select(e => $"'{e}', "))}regex used for validation is '{format}')";

    [GeneratedRegex("^" + LabelFmt + "$")]
    private static partial Regex LabelRegex();

    [GeneratedRegex("^" + SubdomainFmt + "$")]
    private static partial Regex SubdomainRegex();

    [GeneratedRegex("^" + Dns1035Fmt + "$")]
    private static partial Regex Dns1035Regex();

    [GeneratedRegex("^" + QualifiedFmt + "$")]
    private static partial Regex QualifiedRegex();

    [GeneratedRegex("^" + ValueFmt + "$")]
    private static partial Regex ValueRegex();

    [GeneratedRegex("^[-a-z0-9]+$")]
    private static partial Regex PortCharsRegex();
}

/// <summary>Per-resource validation, after defaulting, as pkg/apis/core/validation and networking/validation do it.</summary>
internal static class Validation
{
    private static readonly string[] Protocols = ["SCTP", "TCP", "UDP"];

    public static void Validate(ResourceKind kind, JsonObject obj, JsonObject? old)
    {
        var errors = new FieldErrors();
        var meta = obj.Meta();
        var name = meta.Str("name") ?? "";
        Func<string, List<string>> nameRule = kind.Plural switch
        {
            "services" => Names.Dns1035Label,
            "namespaces" => Names.Dns1123Label,
            _ => Names.Dns1123Subdomain,
        };
        if (name.Length == 0)
        {
            errors.Required("metadata.name", "name or generateName is required");
        }
        else
        {
            errors.Each("metadata.name", meta["name"], nameRule(name));
        }

        Labels(meta["labels"], "metadata.labels", errors);
        var annotations = meta["annotations"].StringMap();
        foreach (var key in annotations.Keys)
        {
            errors.Each("metadata.annotations", key, Names.QualifiedName(key.ToLowerInvariant()));
        }

        if (annotations.Sum(p => p.Key.Length + p.Value.Length) > 256 * 1024)
        {
            errors.TooLong("metadata.annotations", 256 * 1024);
        }

        switch (kind.Plural)
        {
            case "services":
                Service(obj, old, errors);
                break;
            case "networkpolicies":
                NetworkPolicy(obj, errors);
                break;
            case "events":
                if (obj["involvedObject"] is not JsonObject involved)
                {
                    errors.Required("involvedObject");
                }
                else if (involved.Str("namespace") is { Length: > 0 } ns && ns != meta.Str("namespace"))
                {
                    errors.Invalid("involvedObject.namespace", ns, "does not match event.namespace");
                }

                break;
        }

        if (errors.Count > 0)
        {
            throw KubeApiException.Invalid(kind, name, errors);
        }
    }

    private static void Labels(JsonNode? labels, string field, FieldErrors errors)
    {
        foreach (var (key, value) in labels.StringMap())
        {
            errors.Each(field, key, Names.QualifiedName(key));
            errors.Each(field, value, Names.LabelValue(value));
        }
    }

    private static void Service(JsonObject svc, JsonObject? old, FieldErrors errors)
    {
        var spec = svc.Obj("spec");
        var type = spec.Str("type");
        var ports = spec["ports"] as JsonArray ?? [];
        if (type is not ("ClusterIP" or "NodePort" or "LoadBalancer" or "ExternalName"))
        {
            errors.NotSupported("spec.type", spec["type"], "ClusterIP", "ExternalName", "LoadBalancer", "NodePort");
        }

        if (ports.Count == 0 && spec.Str("clusterIP") != "None" && type != "ExternalName")
        {
            errors.Required("spec.ports");
        }

        var names = new HashSet<string>();
        var keys = new HashSet<string>();
        for (var i = 0; i < ports.Count; i++)
        {
            var path = $"spec.ports[{i}]";
            if (ports[i] is not JsonObject port)
            {
                errors.Invalid(path, ports[i], "must be an object");
                continue;
            }

            var name = port.Str("name") ?? "";
            if (name.Length == 0 && ports.Count > 1)
            {
                errors.Required(path + ".name");
            }
            else if (name.Length > 0)
            {
                errors.Each(path + ".name", name, Names.Dns1123Label(name));
                if (!names.Add(name))
                {
                    errors.Duplicate(path + ".name", name);
                }
            }

            PortNumber(port["port"], path + ".port", errors, allowName: false);
            Protocol(port, path, errors);
            PortNumber(port["targetPort"], path + ".targetPort", errors, allowName: true);
            if (!keys.Add($"{port["port"].Int()}/{port.Str("protocol")}"))
            {
                errors.Duplicate(path, new JsonObject { ["port"] = port["port"]?.DeepClone(), ["protocol"] = port.Str("protocol") });
            }

            var nodePort = port["nodePort"];
            if (nodePort is not null && type is "ClusterIP" or "ExternalName")
            {
                errors.Forbidden(path + ".nodePort", $"may not be used when `type` is '{type}'");
            }
            else if (nodePort.Int() is { } np && np is < 30000 or > 32767)
            {
                errors.Invalid(path + ".nodePort", nodePort, "provided port is not in the valid range. The range of valid ports is 30000-32767");
            }
        }

        Labels(spec["selector"], "spec.selector", errors);
        var clusterIp = spec.Str("clusterIP");
        if (clusterIp is { Length: > 0 } and not "None" && !IPAddress.TryParse(clusterIp, out _))
        {
            errors.Invalid("spec.clusterIPs[0]", clusterIp, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)");
        }

        if (old?.Str("spec.clusterIP") is { Length: > 0 } oldIp && clusterIp != oldIp && type != "ExternalName")
        {
            errors.Invalid("spec.clusterIPs[0]", clusterIp, "may not change once set");
        }

        if (type == "ExternalName" && (spec.Str("externalName") ?? "") is var external && Names.Dns1123Subdomain(external).Count > 0)
        {
            errors.Required("spec.externalName");
        }
    }

    private static void NetworkPolicy(JsonObject policy, FieldErrors errors)
    {
        if (policy["spec"] is not JsonObject spec)
        {
            errors.Required("spec.podSelector");
            return;
        }

        LabelSelectorObject(spec["podSelector"], "spec.podSelector", errors, required: true);
        foreach (var (direction, peers) in new[] { ("ingress", "from"), ("egress", "to") })
        {
            var rules = spec[direction] as JsonArray ?? [];
            for (var i = 0; i < rules.Count; i++)
            {
                var rulePath = $"spec.{direction}[{i}]";
                var ports = rules[i].At("ports") as JsonArray ?? [];
                for (var p = 0; p < ports.Count; p++)
                {
                    var path = $"{rulePath}.ports[{p}]";
                    Protocol(ports[p] as JsonObject ?? [], path, errors);
                    if (ports[p].At("port") is JsonNode port)
                    {
                        PortNumber(port, path + ".port", errors, allowName: true);
                    }

                    if (ports[p].At("endPort").Int() is { } end && (ports[p].At("port").Int() is not { } start || end < start))
                    {
                        errors.Invalid(path + ".endPort", end, "must be greater than or equal to `port`");
                    }
                }

                var peerList = rules[i].At(peers) as JsonArray ?? [];
                for (var p = 0; p < peerList.Count; p++)
                {
                    var path = $"{rulePath}.{peers}[{p}]";
                    LabelSelectorObject(peerList[p].At("podSelector"), path + ".podSelector", errors, required: false);
                    LabelSelectorObject(peerList[p].At("namespaceSelector"), path + ".namespaceSelector", errors, required: false);
                    if (peerList[p].At("ipBlock") is JsonObject block && !IPNetwork.TryParse(block.Str("cidr") ?? "", out _))
                    {
                        errors.Invalid(path + ".ipBlock.cidr", block["cidr"], "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)");
                    }
                }
            }
        }

        var types = spec["policyTypes"] as JsonArray ?? [];
        for (var i = 0; i < types.Count; i++)
        {
            if (types[i]?.ToString() is not ("Ingress" or "Egress"))
            {
                errors.NotSupported($"spec.policyTypes[{i}]", types[i], "Egress", "Ingress");
            }
        }
    }

    private static void LabelSelectorObject(JsonNode? selector, string field, FieldErrors errors, bool required)
    {
        if (selector is not JsonObject)
        {
            if (required)
            {
                errors.Required(field);
            }

            return;
        }

        Labels(selector["matchLabels"], field + ".matchLabels", errors);
        var expressions = selector["matchExpressions"] as JsonArray ?? [];
        for (var i = 0; i < expressions.Count; i++)
        {
            var path = $"{field}.matchExpressions[{i}]";
            var op = expressions[i].Str("operator");
            var count = (expressions[i].At("values") as JsonArray)?.Count ?? 0;
            errors.Each(path + ".key", expressions[i].At("key"), Names.QualifiedName(expressions[i].Str("key") ?? ""));
            if (op is "In" or "NotIn" && count == 0)
            {
                errors.Required(path + ".values", "must be specified when `operator` is 'In' or 'NotIn'");
            }
            else if (op is "Exists" or "DoesNotExist" && count > 0)
            {
                errors.Forbidden(path + ".values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'");
            }
            else if (op is not ("In" or "NotIn" or "Exists" or "DoesNotExist"))
            {
                errors.Invalid(path + ".operator", expressions[i].At("operator"), "not a valid selector operator");
            }
        }
    }

    private static void PortNumber(JsonNode? port, string field, FieldErrors errors, bool allowName)
    {
        if (port is JsonValue v && v.GetValueKind() == JsonValueKind.String && allowName)
        {
            errors.Each(field, port, Names.PortName(v.GetValue<string>()));
        }
        else if (port.Int() is not { } n || n is < 1 or > 65535)
        {
            errors.Invalid(field, port, "must be between 1 and 65535, inclusive");
        }
    }

    private static void Protocol(JsonObject port, string path, FieldErrors errors)
    {
        if (port.Str("protocol") is not { } protocol)
        {
            errors.Required(path + ".protocol");
        }
        else if (!Protocols.Contains(protocol))
        {
            errors.NotSupported(path + ".protocol", protocol, Protocols);
        }
    }
}
