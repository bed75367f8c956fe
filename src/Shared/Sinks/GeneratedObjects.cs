using k8s.Models;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Kubernetes;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Runtime;

namespace Wormhole.Tunnel.Sinks;

/// <summary>Where and how generated objects are made (from --kubernetes-namespace, --kubernetes-labels, --network-policies).</summary>
/// <param name="Instance">This side's --name: every generated object is labelled with it (see <see cref="KubernetesSink"/>).</param>
public sealed record KubernetesSinkOptions(string Namespace, IReadOnlyDictionary<string, string> PodLabels, bool NetworkPolicies, string Instance)
{
    /// <summary>The value of the <see cref="KubeNames.Instance"/> label on our objects.</summary>
    public string InstanceLabel => KubeNames.LabelValue(Instance);
}

/// <summary>The Services and NetworkPolicies one plan wants, built by pure functions (reference §4.5, names §4.6).</summary>
public sealed record GeneratedObjects(IReadOnlyList<V1Service> Services, IReadOnlyList<V1NetworkPolicy> NetworkPolicies)
{
    public const string ManagedBy = "app.kubernetes.io/managed-by";
    public const string ManagedByValue = "wormhole-tunnel";

    public static GeneratedObjects Build(Plan plan, KubernetesSinkOptions options)
    {
        var services = new List<V1Service>();
        var policies = new List<V1NetworkPolicy>();
        foreach (var listener in plan.RemoteListeners)
        {
            var name = KubeNames.ObjectName(listener.Peer, listener.App);
            var labels = new Dictionary<string, string>(StringComparer.Ordinal)
            {
                [KubeNames.ExposedBy] = KubeNames.ExposedByValue,
                [KubeNames.ExposedApp] = KubeNames.LabelValue(listener.App),
                [KubeNames.ExposedPeer] = KubeNames.LabelValue(listener.Peer),
                [KubeNames.Instance] = options.InstanceLabel,
                [ManagedBy] = ManagedByValue,
            };
            services.Add(new V1Service
            {
                ApiVersion = "v1",
                Kind = "Service",
                Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = options.Namespace, Labels = labels },
                Spec = new V1ServiceSpec
                {
                    Type = "ClusterIP",
                    Selector = new Dictionary<string, string>(options.PodLabels, StringComparer.Ordinal),
                    Ports = [new V1ServicePort { Protocol = "TCP", Port = listener.OriginalPort, TargetPort = listener.Port }],
                },
            });
            if (options.NetworkPolicies)
            {
                policies.Add(new V1NetworkPolicy
                {
                    ApiVersion = "networking.k8s.io/v1",
                    Kind = "NetworkPolicy",
                    Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = options.Namespace, Labels = new Dictionary<string, string>(labels, StringComparer.Ordinal) },
                    Spec = new V1NetworkPolicySpec
                    {
                        PodSelector = new V1LabelSelector { MatchLabels = new Dictionary<string, string>(options.PodLabels, StringComparer.Ordinal) },
                        PolicyTypes = ["Ingress"],
                        Ingress =
                        [
                            new V1NetworkPolicyIngressRule
                            {
                                Ports = [new V1NetworkPolicyPort { Protocol = "TCP", Port = listener.Port }],
                                FromProperty =
                                [
                                    new V1NetworkPolicyPeer
                                    {
                                        NamespaceSelector = new V1LabelSelector(),
                                        PodSelector = new V1LabelSelector { MatchLabels = new Dictionary<string, string> { [KubeNames.ConsumesApp] = KubeNames.LabelValue(listener.App) } },
                                    },
                                ],
                            },
                        ],
                    },
                });
            }
        }

        return new GeneratedObjects(services, policies);
    }

    /// <summary>Remote apps as /api/apps/v1 shows them with Kubernetes: <c>&lt;object&gt;.&lt;namespace&gt;:&lt;originalPort&gt;</c>.</summary>
    public static IEnumerable<AppDescriptor> Exposed(Plan plan, string ns) =>
        plan.RemoteListeners.Select(l => new AppDescriptor(l.App, $"{KubeNames.ObjectName(l.Peer, l.App)}.{ns}:{l.OriginalPort}", l.Peer, l.OriginalPort, l.TargetLabels));
}
