using k8s.Models;
using Wormhole.Tunnel.Kubernetes;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Sources;

namespace Wormhole.Tunnel.Tests.KubernetesTranslation;

public class ServiceAppsTests
{
    private static V1Service Svc(string ns, string name, Dictionary<string, string>? annotations, params (string? Name, int Port, string? Protocol)[] ports) => new()
    {
        Metadata = new V1ObjectMeta { NamespaceProperty = ns, Name = name, Annotations = annotations },
        Spec = new V1ServiceSpec { Ports = ports.Select(p => new V1ServicePort { Name = p.Name, Port = p.Port, Protocol = p.Protocol ?? "TCP" }).ToList() },
    };

    private static Dictionary<string, string> Ann(params (string Key, string Value)[] pairs) =>
        pairs.ToDictionary(p => "wormhole.glothriel.github.com/" + p.Key, p => p.Value);

    [Theory]
    [InlineData("yes")]
    [InlineData("true")]
    [InlineData("1")]
    [InlineData("True")]
    [InlineData(" YES ")]
    public void Exposed_annotation_accepts_the_reference_values_in_any_case(string value)
    {
        var apps = ServiceApps.Derive(Svc("nginx", "nginx", Ann(("exposed", value)), ("http", 80, null))).Apps;
        apps.Should().Equal(new LocalApp("nginx-nginx", "nginx.nginx", 80, 80));
    }

    [Theory]
    [InlineData("no")]
    [InlineData("false")]
    [InlineData("")]
    public void Other_values_or_no_annotation_expose_nothing(string value)
    {
        ServiceApps.Derive(Svc("nginx", "nginx", Ann(("exposed", value)), ("http", 80, null))).Should().Be(ServiceApps.None);
        ServiceApps.Derive(Svc("nginx", "nginx", null, ("http", 80, null))).Should().Be(ServiceApps.None);
    }

    [Fact]
    public void Custom_name_and_several_ports_give_suffixed_apps()
    {
        var apps = ServiceApps.Derive(Svc("nginx", "nginx-two-ports", Ann(("exposed", "yes"), ("name", "custom")), ("http", 80, null), ("https", 443, null))).Apps;
        apps.Select(a => a.Name).Should().Equal("custom-http", "custom-https");
        apps[1].Should().Be(new LocalApp("custom-https", "nginx-two-ports.nginx", 443, 443));
    }

    [Fact]
    public void Selected_ports_by_name_or_number_trimmed_and_once_each_no_suffix_for_one()
    {
        var svc = Svc("nginx", "nginx-two-ports", Ann(("exposed", "yes"), ("name", "custom"), ("ports", " http , 80,http")), ("http", 80, null), ("https", 443, null));
        ServiceApps.Derive(svc).Apps.Select(a => a.Name).Should().Equal("custom");

        var both = Svc("nginx", "nginx-two-ports", Ann(("exposed", "yes"), ("name", "custom"), ("ports", "443, http")), ("http", 80, null), ("https", 443, null));
        ServiceApps.Derive(both).Apps.Select(a => a.Name).Should().Equal("custom-https", "custom-http");
    }

    [Fact]
    public void Junk_ports_give_a_warning_and_the_rest_is_still_exposed()
    {
        var result = ServiceApps.Derive(Svc("a", "b", Ann(("exposed", "yes"), ("ports", "http,-4,99999,bogus")), ("http", 80, null)));
        result.Apps.Select(a => a.Name).Should().Equal("a-b");
        result.Warnings.Should().HaveCount(3).And.AllSatisfy(w => w.Should().Contain("matches no port"));
    }

    [Fact]
    public void Only_tcp_ports_are_exposed_and_only_they_count_for_the_suffix()
    {
        var result = ServiceApps.Derive(Svc("kube-system", "dns", Ann(("exposed", "yes")), ("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")));
        result.Apps.Select(a => a.Name).Should().Equal("kube-system-dns");
        result.Warnings.Should().ContainSingle().Which.Should().Contain("UDP");
    }

    [Fact]
    public void A_custom_name_with_a_path_or_space_is_refused_with_a_warning()
    {
        var result = ServiceApps.Derive(Svc("a", "b", Ann(("exposed", "yes"), ("name", "../etc/x")), ("http", 80, null)));
        result.Apps.Should().BeEmpty();
        result.Warnings.Should().ContainSingle().Which.Should().Contain("not allowed");
    }

    [Fact]
    public void Generated_services_are_never_exported_again()
    {
        var svc = Svc("wormhole", "client-nginx-nginx", Ann(("exposed", "yes")), (null, 80, null));
        svc.Metadata.Labels = new Dictionary<string, string> { [KubeNames.ExposedBy] = "wormhole" };
        ServiceApps.Derive(svc).Apps.Should().BeEmpty();
    }

    [Fact]
    public void Target_labels_annotation_is_carried_along()
    {
        ServiceApps.Derive(Svc("a", "b", Ann(("exposed", "yes"), ("labels", "x=y")), ("http", 80, null))).Apps.Single().TargetLabels.Should().Be("x=y");
    }

    [Fact]
    public void Service_json_from_the_apiserver_is_read_with_named_and_numbered_target_ports()
    {
        var svc = KubeJson.Deserialize<V1Service>("""
            {"apiVersion":"v1","kind":"Service","metadata":{"name":"nginx","namespace":"nginx","annotations":{"wormhole.glothriel.github.com/exposed":"yes"}},
             "spec":{"clusterIP":"10.96.0.10","ports":[{"name":"http","port":80,"targetPort":"web","protocol":"TCP"}]}}
            """)!;
        ServiceApps.Derive(svc).Apps.Should().Equal(new LocalApp("nginx-nginx", "nginx.nginx", 80, 80));
    }
}
