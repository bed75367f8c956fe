using System.Text.Json;
using System.Text.Json.Serialization;

namespace Wormhole.Tunnel.Kubernetes;

/// <summary>The few Kubernetes object fields Wormhole.Tunnel reads or writes (camelCase JSON, unknown fields ignored).</summary>
public sealed class ObjectMeta
{
    public string? Name { get; set; }

    [JsonPropertyName("namespace")]
    public string? Namespace { get; set; }

    public string? Uid { get; set; }

    public string? ResourceVersion { get; set; }

    public Dictionary<string, string>? Labels { get; set; }

    public Dictionary<string, string>? Annotations { get; set; }

    public DateTimeOffset? CreationTimestamp { get; set; }
}

/// <summary>A Kubernetes object of a resource kind the client knows (see <see cref="KubeResource"/>).</summary>
public interface IKubeObject
{
    string? ApiVersion { get; set; }

    string? Kind { get; set; }

    ObjectMeta Metadata { get; set; }
}

public sealed class Service : IKubeObject
{
    public string? ApiVersion { get; set; } = "v1";

    public string? Kind { get; set; } = "Service";

    public ObjectMeta Metadata { get; set; } = new();

    public ServiceSpec Spec { get; set; } = new();
}

public sealed class ServiceSpec
{
    public string? Type { get; set; }

    public string? ClusterIP { get; set; }

    public Dictionary<string, string>? Selector { get; set; }

    public List<ServicePort> Ports { get; set; } = [];
}

public sealed class ServicePort
{
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Name { get; set; }

    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Protocol { get; set; }

    public int Port { get; set; }

    /// <summary>A number or a port name (IntOrString); null when absent.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public JsonElement? TargetPort { get; set; }
}

public sealed class NetworkPolicy : IKubeObject
{
    public string? ApiVersion { get; set; } = "networking.k8s.io/v1";

    public string? Kind { get; set; } = "NetworkPolicy";

    public ObjectMeta Metadata { get; set; } = new();

    public NetworkPolicySpec Spec { get; set; } = new();
}

public sealed class NetworkPolicySpec
{
    public LabelSelector PodSelector { get; set; } = new();

    public List<NetworkPolicyIngressRule>? Ingress { get; set; }

    public List<string>? PolicyTypes { get; set; }
}

public sealed class LabelSelector
{
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public Dictionary<string, string>? MatchLabels { get; set; }
}

public sealed class NetworkPolicyIngressRule
{
    public List<NetworkPolicyPort>? Ports { get; set; }

    public List<NetworkPolicyPeer>? From { get; set; }
}

public sealed class NetworkPolicyPort
{
    public string? Protocol { get; set; }

    public int Port { get; set; }
}

public sealed class NetworkPolicyPeer
{
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public LabelSelector? NamespaceSelector { get; set; }

    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public LabelSelector? PodSelector { get; set; }
}

/// <summary>core/v1 Event (what kubectl describe and kubectl get events show).</summary>
public sealed class KubeEvent : IKubeObject
{
    public string? ApiVersion { get; set; } = "v1";

    public string? Kind { get; set; } = "Event";

    public ObjectMeta Metadata { get; set; } = new();

    public ObjectReference InvolvedObject { get; set; } = new();

    public string? Reason { get; set; }

    public string? Message { get; set; }

    /// <summary>Normal or Warning.</summary>
    public string? Type { get; set; }

    public EventSource? Source { get; set; }

    public DateTimeOffset? FirstTimestamp { get; set; }

    public DateTimeOffset? LastTimestamp { get; set; }

    public int Count { get; set; }

    public string? ReportingComponent { get; set; }
}

public sealed class ObjectReference
{
    public string? ApiVersion { get; set; }

    public string? Kind { get; set; }

    [JsonPropertyName("namespace")]
    public string? Namespace { get; set; }

    public string? Name { get; set; }

    public string? Uid { get; set; }
}

public sealed class EventSource
{
    public string? Component { get; set; }
}

public sealed class ListMeta
{
    public string? ResourceVersion { get; set; }
}

public sealed class KubeList<T>
    where T : IKubeObject
{
    public ListMeta Metadata { get; set; } = new();

    public List<T> Items { get; set; } = [];
}

/// <summary>One event of a watch stream: ADDED, MODIFIED, DELETED, BOOKMARK or ERROR.</summary>
public sealed record WatchEvent<T>(string Type, T? Item, KubeStatus? Status)
    where T : IKubeObject;

/// <summary>The apiserver's error body.</summary>
public sealed class KubeStatus
{
    public string? Status { get; set; }

    public string? Message { get; set; }

    public string? Reason { get; set; }

    public int Code { get; set; }
}

/// <summary>The path pieces of each resource kind the client speaks.</summary>
public sealed record KubeResource(string Group, string Version, string Plural)
{
    public static readonly KubeResource Services = new("", "v1", "services");
    public static readonly KubeResource Events = new("", "v1", "events");
    public static readonly KubeResource NetworkPolicies = new("networking.k8s.io", "v1", "networkpolicies");

    public static KubeResource For<T>()
        where T : IKubeObject =>
        typeof(T) == typeof(Service) ? Services
        : typeof(T) == typeof(NetworkPolicy) ? NetworkPolicies
        : typeof(T) == typeof(KubeEvent) ? Events
        : throw new NotSupportedException($"{typeof(T).Name} is not a resource this client speaks.");

    /// <summary>/api/v1/namespaces/{ns}/services or /apis/networking.k8s.io/v1/networkpolicies (all namespaces when ns is null).</summary>
    public string Path(string? ns, string? name = null)
    {
        var root = Group.Length == 0 ? $"/api/{Version}" : $"/apis/{Group}/{Version}";
        var path = ns is null ? $"{root}/{Plural}" : $"{root}/namespaces/{Uri.EscapeDataString(ns)}/{Plural}";
        return name is null ? path : $"{path}/{Uri.EscapeDataString(name)}";
    }
}
