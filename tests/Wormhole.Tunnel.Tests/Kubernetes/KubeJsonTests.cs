using System.Collections.Immutable;
using System.Net;
using k8s;
using k8s.Models;
using Wormhole.Tunnel.Kubernetes;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Sinks;

namespace Wormhole.Tunnel.Tests.Kubernetes;

/// <summary>
/// Our JSON for the kinds we speak is the library's JSON: what we send is byte for byte what its typed operations sent,
/// and what the apiserver answers reads the same. Only these kinds are covered (that is what keeps the AOT build small).
/// </summary>
public class KubeJsonTests
{
    private static readonly DateTime At = new(2026, 12, 3, 10, 4, 5, DateTimeKind.Utc);

    [Fact]
    public void Generated_services_network_policies_and_events_are_written_exactly_as_the_library_writes_them()
    {
        var plan = Plan.Empty with
        {
            RemoteListeners = ImmutableArray.Create(new RemoteListener("client", "nginx-nginx", 25001, IPAddress.Parse("10.188.0.2"), 20000, 80, "")),
        };
        var objects = GeneratedObjects.Build(plan, new KubernetesSinkOptions("wormhole", new Dictionary<string, string> { ["application"] = "wormhole-server" }, NetworkPolicies: true, Instance: "server"));
        var recorded = new Corev1Event
        {
            ApiVersion = "v1",
            Kind = "Event",
            Metadata = new V1ObjectMeta { Name = "web.0123456789abcdef", NamespaceProperty = "apps" },
            InvolvedObject = new V1ObjectReference { ApiVersion = "v1", Kind = "Service", NamespaceProperty = "apps", Name = "web", Uid = "u-1" },
            Reason = "NameClash",
            Message = "clash",
            Type = "Warning",
            Source = new V1EventSource { Component = "wormhole-server" },
            FirstTimestamp = At.AddTicks(1234567),
            LastTimestamp = At,
            EventTime = At.AddTicks(1200000),
            Count = 1,
        };

        object[] values = [.. objects.Services, .. objects.NetworkPolicies, objects.Services[0].Spec, recorded];
        foreach (var value in values)
        {
            KubeJson.Serialize(value).Should().Be(KubernetesJson.Serialize(value), $"a {value.GetType().Name} goes out as the library wrote it");
        }

        KubeJson.Serialize(recorded).Should().Contain("\"firstTimestamp\":\"2026-12-03T10:04:05.123456Z\"")
            .And.Contain("\"lastTimestamp\":\"2026-12-03T10:04:05Z\"").And.Contain("\"eventTime\":\"2026-12-03T10:04:05.120000Z\"");
    }

    [Fact]
    public void Objects_from_the_apiserver_read_as_the_library_reads_them_with_managed_fields_and_nanosecond_times()
    {
        const string Json = """
            {"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"apps","uid":"u-1","resourceVersion":"42",
             "creationTimestamp":"2026-12-03T10:04:05Z","labels":{"tier":"web"},
             "managedFields":[{"manager":"wormhole","operation":"Apply","apiVersion":"v1","time":"2026-12-03T10:04:05.123456789Z",
               "fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{"f:tier":{}}}}}]},
             "spec":{"type":"ClusterIP","clusterIP":"10.96.0.10","ports":[{"name":"http","port":80,"targetPort":"web","protocol":"TCP"},{"port":81,"targetPort":8081}]},
             "status":{"loadBalancer":{}}}
            """;

        var ours = KubeJson.Deserialize<V1Service>(Json)!;
        var theirs = KubernetesJson.Deserialize<V1Service>(Json);

        ours.Metadata.CreationTimestamp.Should().Be(At);
        ours.Metadata.ManagedFields.Single().Time.Should().Be(theirs.Metadata.ManagedFields.Single().Time).And.Be(At.AddTicks(1234567));
        ours.Spec.Ports.Select(p => p.TargetPort.Value).Should().Equal("web", "8081");

        // fieldsV1 (an object) is written back as it came; the library's own context cannot write it at all.
        KubeJson.Serialize(ours).Should().Contain("\"fieldsV1\":{\"f:metadata\":{\"f:labels\":{\"f:tier\":{}}}}");
        ours.Metadata.ManagedFields = theirs.Metadata.ManagedFields = null;
        KubeJson.Serialize(ours).Should().Be(KubernetesJson.Serialize(theirs));
    }

    [Fact]
    public void Kinds_we_do_not_speak_are_refused_rather_than_compiled_in()
    {
        var write = () => KubeJson.Serialize(new V1Pod());
        var read = () => KubeJson.Deserialize<V1ConfigMap>("{}");

        write.Should().Throw<NotSupportedException>().WithMessage("*V1Pod*");
        read.Should().Throw<NotSupportedException>().WithMessage("*V1ConfigMap*");
    }
}
