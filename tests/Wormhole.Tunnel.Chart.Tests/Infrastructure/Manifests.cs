using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Wormhole.Tunnel.Chart.Tests.Infrastructure;

/// <summary>The documents of a rendered chart, as JSON trees (YAML 1.2 core schema scalars: ints, bools, null).</summary>
public sealed partial class Manifests
{
    private Manifests(string yaml, IReadOnlyList<JsonObject> documents)
    {
        Yaml = yaml;
        Documents = documents;
    }

    /// <summary>The rendered text as helm printed it.</summary>
    public string Yaml { get; }

    public IReadOnlyList<JsonObject> Documents { get; }

    public IEnumerable<string> Kinds => Documents.Select(d => Kind(d)).Distinct();

    public static Manifests Parse(string yaml)
    {
        var stream = new YamlStream();
        stream.Load(new StringReader(yaml));
        var documents = stream.Documents
            .Where(d => d.RootNode is YamlMappingNode)
            .Select(d => (JsonObject)ToJson(d.RootNode)!)
            .ToList();
        return new Manifests(yaml, documents);
    }

    public static string Kind(JsonNode document) => (string)document["kind"]!;

    public static string Name(JsonNode document) => (string)document["metadata"]!["name"]!;

    public static string? Namespace(JsonNode document) => (string?)document["metadata"]!["namespace"];

    public IEnumerable<JsonObject> OfKind(string kind) => Documents.Where(d => Kind(d) == kind);

    /// <summary>The single document of that kind and name; fails the test when absent.</summary>
    public JsonObject Get(string kind, string name) =>
        Documents.SingleOrDefault(d => Kind(d) == kind && Name(d) == name)
        ?? throw new InvalidOperationException($"No {kind}/{name} among: {string.Join(", ", Documents.Select(d => $"{Kind(d)}/{Name(d)}"))}");

    public JsonObject Deployment => OfKind("Deployment").Single();

    public JsonObject PodSpec => Deployment["spec"]!["template"]!["spec"]!.AsObject();

    public JsonObject Container => PodSpec["containers"]!.AsArray().Single()!.AsObject();

    public IReadOnlyList<string> Args => Container["args"]!.AsArray().Select(a => (string)a!).ToList();

    /// <summary>
    /// The variables the container takes from the rendered Secret and ConfigMap (env valueFrom secretKeyRef and
    /// configMapKeyRef), as name → value; a key missing from the Secret with <c>optional: true</c> leaves its variable
    /// unset, and so does a Secret the chart does not render (an existingSecret).
    /// </summary>
    public IReadOnlyDictionary<string, string> ConfigEnvironment
    {
        get
        {
            var result = new Dictionary<string, string>();
            foreach (var variable in Container["env"]!.AsArray())
            {
                var from = variable!["valueFrom"];
                var (kind, reference, member) = from?["secretKeyRef"] is { } s ? ("Secret", s, "stringData") : from?["configMapKeyRef"] is { } c ? ("ConfigMap", c, "data") : (null, null, null);
                if (kind is null)
                {
                    continue;
                }

                if (!Documents.Any(d => Kind(d) == kind && Name(d) == (string)reference!["name"]!))
                {
                    continue; // a Secret of the user's (existingSecret): its value is not in the chart
                }

                var value = Get(kind, (string)reference!["name"]!)[member!]![(string)reference["key"]!];
                if (value is null)
                {
                    ((bool?)reference["optional"]).Should().BeTrue($"{variable["name"]} refers to a key the {kind} lacks");
                    continue;
                }

                result[(string)variable["name"]!] = (string)value!;
            }

            return result;
        }
    }

    /// <summary>"kind/name" of every document (namespace-less), for collision checks and messages.</summary>
    public IEnumerable<string> Identities => Documents.Select(d => $"{Kind(d)}/{Name(d)}");

    private static JsonNode? ToJson(YamlNode node) => node switch
    {
        YamlMappingNode map => new JsonObject(map.Children.Select(c => KeyValuePair.Create(((YamlScalarNode)c.Key).Value!, ToJson(c.Value)))),
        YamlSequenceNode seq => new JsonArray(seq.Children.Select(ToJson).ToArray()),
        YamlScalarNode scalar => Scalar(scalar),
        _ => throw new NotSupportedException($"YAML node {node.NodeType}"),
    };

    private static JsonNode? Scalar(YamlScalarNode scalar)
    {
        var value = scalar.Value ?? "";
        if (scalar.Style is not ScalarStyle.Plain)
        {
            return JsonValue.Create(value);
        }

        if (value is "" or "~" or "null" or "Null" or "NULL")
        {
            return null;
        }

        if (value is "true" or "True" or "TRUE" or "false" or "False" or "FALSE")
        {
            return JsonValue.Create(bool.Parse(value));
        }

        if (IntegerPattern().IsMatch(value))
        {
            return JsonValue.Create(long.Parse(value, CultureInfo.InvariantCulture));
        }

        return FloatPattern().IsMatch(value) ? JsonValue.Create(double.Parse(value, CultureInfo.InvariantCulture)) : JsonValue.Create(value);
    }

    [GeneratedRegex("^[-+]?[0-9]+$")]
    private static partial Regex IntegerPattern();

    [GeneratedRegex(@"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")]
    private static partial Regex FloatPattern();
}
