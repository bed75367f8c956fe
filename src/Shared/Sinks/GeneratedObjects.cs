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

    /// <summary>On a global app's Service: its sites in order of preference and their health (<c>a=healthy,b=down</c>).</summary>
    public const string GlobalSitesAnnotation = KubeNames.LabelPrefix + "global-sites";

    /// <param name="globalSites">The <see cref="GlobalSitesAnnotation"/> of a global app now (with health); without it,
    /// the plan's sites.</param>
    public static GeneratedObjects Build(Plan plan, KubernetesSinkOptions options, Func<string, string?>? globalSites = null)
    {
        var services = new List<V1Service>();
        var policies = new List<V1NetworkPolicy>();
        foreach (var listener in plan.RemoteListeners)
        {
            var labels = Labels(options, listener.App);
            labels[KubeNames.ExposedPeer] = KubeNames.LabelValue(listener.Peer);
            Add(KubeNames.ObjectName(listener.Peer, listener.App), listener.App, labels, null, listener.OriginalPort, listener.Port);
        }

        foreach (var global in plan.GlobalListeners)
        {
            // One Service per app name for every peer that exposes it: its connections go to a healthy site.
            var sites = globalSites?.Invoke(global.App) ?? string.Join(",", global.Sites.Select(s => s.Peer));
            Add(GlobalName(global.App), global.App, Labels(options, global.App), new Dictionary<string, string> { [GlobalSitesAnnotation] = sites }, global.OriginalPort, global.Port);
        }

        return new GeneratedObjects(services, policies);

        void Add(string name, string app, Dictionary<string, string> labels, Dictionary<string, string>? annotations, int port, int targetPort)
        {
            services.Add(new V1Service
            {
                ApiVersion = "v1",
                Kind = "Service",
                Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = options.Namespace, Labels = labels, Annotations = annotations },
                Spec = new V1ServiceSpec
                {
                    Type = "ClusterIP",
                    Selector = new Dictionary<string, string>(options.PodLabels, StringComparer.Ordinal),
                    Ports = [new V1ServicePort { Protocol = "TCP", Port = port, TargetPort = targetPort }],
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
                                Ports = [new V1NetworkPolicyPort { Protocol = "TCP", Port = targetPort }],
                                FromProperty =
                                [
                                    new V1NetworkPolicyPeer
                                    {
                                        NamespaceSelector = new V1LabelSelector(),
                                        PodSelector = new V1LabelSelector { MatchLabels = new Dictionary<string, string> { [KubeNames.ConsumesApp] = KubeNames.LabelValue(app) } },
                                    },
                                ],
                            },
                        ],
                    },
                });
            }
        }
    }

    /// <summary>The name of a global app's Service and NetworkPolicy: <c>global-&lt;app&gt;</c>, made valid as per-peer names are.</summary>
    public static string GlobalName(string app) => KubeNames.ObjectName("global", app);

    private static Dictionary<string, string> Labels(KubernetesSinkOptions options, string app) => new(StringComparer.Ordinal)
    {
        [KubeNames.ExposedBy] = KubeNames.ExposedByValue,
        [KubeNames.ExposedApp] = KubeNames.LabelValue(app),
        [KubeNames.Instance] = options.InstanceLabel,
        [ManagedBy] = ManagedByValue,
    };

    /// <summary>Remote apps as /api/apps/v1 shows them with Kubernetes: <c>&lt;object&gt;.&lt;namespace&gt;:&lt;originalPort&gt;</c>.</summary>
    public static IEnumerable<AppDescriptor> Exposed(Plan plan, string ns) =>
        plan.RemoteListeners.Select(l => new AppDescriptor(l.App, $"{KubeNames.ObjectName(l.Peer, l.App)}.{ns}:{l.OriginalPort}", l.Peer, l.OriginalPort, l.TargetLabels));
}
