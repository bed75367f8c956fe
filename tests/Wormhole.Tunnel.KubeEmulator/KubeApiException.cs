using System.Text.Json.Nodes;

namespace Wormhole.Tunnel.KubeEmulator;

/// <summary>An apiserver failure; <see cref="ToStatus"/> is the <c>Status</c> body the apiserver would send.</summary>
public sealed class KubeApiException : Exception
{
    public KubeApiException(int code, string reason, string message, JsonObject? details = null)
        : base(message)
    {
        Code = code;
        Reason = reason;
        Details = details;
    }

    public KubeApiException()
        : this(500, "InternalError", "internal error") { }

    public KubeApiException(string message)
        : this(500, "InternalError", message) { }

    public KubeApiException(string message, Exception inner)
        : base(message, inner)
    {
        Code = 500;
        Reason = "InternalError";
    }

    public int Code { get; }

    public string Reason { get; }

    public JsonObject? Details { get; }

    public JsonObject ToStatus()
    {
        var status = new JsonObject
        {
            ["kind"] = "Status",
            ["apiVersion"] = "v1",
            ["metadata"] = new JsonObject(),
            ["status"] = "Failure",
            ["message"] = Message,
        };
        if (Reason.Length > 0)
        {
            status["reason"] = Reason;
        }

        if (Details is not null)
        {
            status["details"] = Details.DeepClone();
        }

        status["code"] = Code;
        return status;
    }

    internal static KubeApiException NotFound(ResourceKind kind, string name) =>
        new(404, "NotFound", $"{kind.QualifiedPlural} \"{name}\" not found", Describe(name, kind.Group, kind.Plural));

    internal static KubeApiException NoSuchResource() =>
        new(404, "NotFound", "the server could not find the requested resource", new JsonObject());

    internal static KubeApiException AlreadyExists(ResourceKind kind, string name) =>
        new(409, "AlreadyExists", $"{kind.QualifiedPlural} \"{name}\" already exists", Describe(name, kind.Group, kind.Plural));

    internal static KubeApiException Conflict(ResourceKind kind, string name, string why) =>
        new(409, "Conflict", $"Operation cannot be fulfilled on {kind.QualifiedPlural} \"{name}\": {why}", Describe(name, kind.Group, kind.Plural));

    internal static KubeApiException Stale(ResourceKind kind, string name) =>
        Conflict(kind, name, "the object has been modified; please apply your changes to the latest version and try again");

    internal static KubeApiException BadRequest(string message) => new(400, "BadRequest", message);

    internal static KubeApiException Forbidden(ResourceKind kind, string name, string why) =>
        new(403, "Forbidden", $"{kind.QualifiedPlural} \"{name}\" is forbidden: {why}", Describe(name, kind.Group, kind.Plural));

    internal static KubeApiException Expired(string message) => new(410, "Expired", message);

    internal static KubeApiException Unauthorized() => new(401, "Unauthorized", "Unauthorized");

    internal static KubeApiException MethodNotAllowed() =>
        new(405, "MethodNotAllowed", "the server does not allow this method on the requested resource", new JsonObject());

    internal static KubeApiException UnsupportedMediaType(string type) =>
        new(415, "UnsupportedMediaType", $"the body of the request was in an unknown format - accepted media types include: {type}");

    /// <summary>422 with one cause per field error, worded like apimachinery's <c>field.ErrorList</c>.</summary>
    internal static KubeApiException Invalid(ResourceKind kind, string name, IReadOnlyList<FieldError> errors)
    {
        var summary = errors.Count == 1 ? errors[0].ToString() : "[" + string.Join(", ", errors) + "]";
        var details = Describe(name, kind.Group, kind.Kind);
        details["causes"] = new JsonArray(errors.Select(e => (JsonNode)new JsonObject { ["reason"] = e.Reason, ["message"] = e.Body, ["field"] = e.Field }).ToArray());
        return new(422, "Invalid", $"{kind.QualifiedKind} \"{name}\" is invalid: {summary}", details);
    }

    private static JsonObject Describe(string name, string group, string kind)
    {
        var details = new JsonObject { ["name"] = name };
        if (group.Length > 0)
        {
            details["group"] = group;
        }

        details["kind"] = kind;
        return details;
    }
}
