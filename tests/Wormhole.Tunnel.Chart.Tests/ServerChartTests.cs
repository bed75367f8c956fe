using System.Text.Json.Nodes;
using Wormhole.Tunnel.Chart.Tests.Infrastructure;

namespace Wormhole.Tunnel.Chart.Tests;

/// <summary>The hub's rendering: <c>helm template wormhole-server ./helm -n wormhole --set server.enabled=true ...</c>.</summary>
public sealed class ServerChartTests
{
    private const string Ns = "wormhole";
    private const string Release = "wormhole-server";
    private const string Fullname = "wormhole-server";

    [Fact]
    public async Task Renders_exactly_the_hub_objects_named_after_the_release()
    {
        var m = await HelmChart.TemplateAsync(Release, Ns, HelmChart.Server);

        m.Identities.Should().BeEquivalentTo(
        [
            "Secret/wormhole-server-env", "ServiceAccount/wormhole-server", "PersistentVolumeClaim/wormhole-server",
            "ClusterRole/wormhole-server-wormhole", "ClusterRoleBinding/wormhole-server-wormhole", "Role/wormhole-server", "RoleBinding/wormhole-server",
            "Service/wormhole-server", "Service/wormhole-server-api", "Service/wormhole-server-metrics",
            "Deployment/wormhole-server", "NetworkPolicy/wormhole-server",
        ]);
        m.Documents.Where(d => d["kind"]!.ToString() is not ("ClusterRole" or "ClusterRoleBinding"))
            .Should().OnlyContain(d => Manifests.Namespace(d) == Ns, "namespaced objects go to the release namespace");
    }

    [Fact]
    public async Task One_container_runs_the_hub_with_the_flags_from_the_values()
    {
        var m = await HelmChart.TemplateAsync(Release, Ns, HelmChart.Server);

        m.PodSpec["containers"]!.AsArray().Should().ContainSingle("the process is proxy and WireGuard manager at once: no nginx, no sidecar");
        m.Container["name"]!.GetValue<string>().Should().Be("wormhole");
        m.Container["image"]!.GetValue<string>().Should().Be("ghcr.io/wormhole-tunnel/wormhole-server:1.0.0");
        m.Args.Should().Equal(
            "--name=server", "--kubernetes", "--kubernetes-namespace=wormhole", "--kubernetes-labels=application=wormhole-server",
            "--network-policies", "--kubernetes-gc-grace=60s", "--state-dir=/storage", "--api-listen-address=0.0.0.0:8082", "--metrics", "--metrics-port=8090",
            "--log-format=console", "--wg-public-host=hub.example.com", "--wg-port=51820", "--wg-internal-host=10.188.0.1",
            "--wg-subnet-mask=24", "--ext-server-listen-address=0.0.0.0:8080", "--int-server-listen-port=8081");
        m.ConfigEnvironment.Should().Equal(new Dictionary<string, string>
        {
            ["INVITE_TOKEN"] = "correct-horse-battery-staple", ["BASIC_AUTH_USERNAME"] = "kajtek", ["BASIC_AUTH_PASSWORD"] = "12345678",
        });
    }

    [Fact]
    public async Task Debug_and_the_wg_values_map_to_their_flags_and_network_policies_can_be_left_off()
    {
        var m = await HelmChart.TemplateAsync(Release, Ns, "server.enabled=true", "server.wg.publicHost=10.1.2.3", "server.debug=true",
            "server.name=hub", "server.wg.internalHost=10.77.0.1", "server.wg.subnetMask=16", "server.wg.port=51999");

        m.Args.Should().Contain(["--debug", "--name=hub", "--wg-public-host=10.1.2.3", "--wg-internal-host=10.77.0.1", "--wg-subnet-mask=16", "--wg-port=51999"]);
        m.Args.Should().NotContain("--network-policies");
        m.OfKind("NetworkPolicy").Should().BeEmpty();
        Port(m.Get("Service", Fullname), "data")["port"]!.GetValue<long>().Should().Be(51999);
    }

    [Fact]
    public async Task Global_services_are_off_by_default_and_the_values_map_to_their_flags()
    {
        var off = await HelmChart.TemplateAsync(Release, Ns, "server.enabled=true", "server.wg.publicHost=10.1.2.3");
        off.Args.Should().NotContain(a => a.StartsWith("--global", StringComparison.Ordinal));

        var on = await HelmChart.TemplateAsync(Release, Ns, "server.enabled=true", "server.wg.publicHost=10.1.2.3",
            "globalServices.enabled=true", "globalServices.priority.web={site-a,site-b}", "globalServices.priority.db={site-b}");
        on.Args.Should().ContainInConsecutiveOrder("--global-services", "--global-priority=db=site-b", "--global-priority=web=site-a,site-b");
    }

    [Fact]
    public async Task Numeric_credentials_and_psk_given_with_set_stay_the_digits_the_user_typed()
    {
        var m = await HelmChart.TemplateAsync(Release, Ns, [.. HelmChart.Server, "server.basicAuth.password=12345678", "peering.psk=20240101"]);

        m.ConfigEnvironment["BASIC_AUTH_PASSWORD"].Should().Be("12345678", "glothriel/wormhole's dev setup sets exactly this");
        m.ConfigEnvironment["INVITE_TOKEN"].Should().Be("20240101");
    }

    [Theory]
    [InlineData("LoadBalancer")]
    [InlineData("ClusterIP")]
    [InlineData("NodePort")]
    public async Task The_public_service_carries_pairing_and_wireguard_with_the_type_from_the_values(string type)
    {
        var m = await HelmChart.TemplateAsync(Release, Ns, [.. HelmChart.Server, $"server.service.type={type}", "server.service.annotations.example\\.com/lb=internal"]);

        var service = m.Get("Service", Fullname);
        service["spec"]!["type"]!.GetValue<string>().Should().Be(type);
        service["metadata"]!["annotations"]!["example.com/lb"]!.GetValue<string>().Should().Be("internal");
        Ports(service).Should().BeEquivalentTo([("peering", 8080L, "TCP"), ("data", 51820L, "UDP")]);
        Ports(m.Get("Service", $"{Fullname}-api")).Should().BeEquivalentTo([("api", 8082L, "TCP")]);
        Ports(m.Get("Service", $"{Fullname}-metrics")).Should().BeEquivalentTo([("metrics", 8090L, "TCP")]);
        m.Get("Service", $"{Fullname}-api")["spec"]!["type"]!.GetValue<string>().Should().Be("ClusterIP");
        foreach (var s in m.OfKind("Service"))
        {
            s["spec"]!["selector"]!.ToJsonString().Should().Be("""{"application":"wormhole-server"}""");
            foreach (var port in s["spec"]!["ports"]!.AsArray())
            {
                ContainerPorts(m).Should().ContainKey(port!["targetPort"]!.GetValue<string>(), "every Service targets a named container port");
            }
        }
    }

    [Fact]
    public async Task The_container_declares_pairing_sync_wireguard_api_and_metrics_ports()
    {
        var m = await HelmChart.TemplateAsync(Release, Ns, HelmChart.Server);

        ContainerPorts(m).Should().Equal(new Dictionary<string, (long, string)>
        {
            ["peering"] = (8080, "TCP"), ["sync"] = (8081, "TCP"), ["wireguard"] = (51820, "UDP"), ["api"] = (8082, "TCP"), ["metrics"] = (8090, "TCP"),
        });
    }

    [Fact]
    public async Task Runs_as_root_with_only_NET_ADMIN_no_escalation_and_a_read_only_root()
    {
        var m = await HelmChart.TemplateAsync(Release, Ns, HelmChart.Server);

        var pod = m.PodSpec["securityContext"]!;
        pod["runAsUser"]!.GetValue<long>().Should().Be(0, "the process creates its WireGuard interface (kernel or wireguard-go)");
        pod["runAsNonRoot"]!.GetValue<bool>().Should().BeFalse();
        pod["seccompProfile"]!["type"]!.GetValue<string>().Should().Be("RuntimeDefault");
        var container = m.Container["securityContext"]!;
        container["capabilities"]!["drop"]!.AsArray().Select(c => c!.GetValue<string>()).Should().Equal("ALL");
        container["capabilities"]!["add"]!.AsArray().Select(c => c!.GetValue<string>()).Should().Equal("NET_ADMIN");
        container["allowPrivilegeEscalation"]!.GetValue<bool>().Should().BeFalse();
        container["readOnlyRootFilesystem"]!.GetValue<bool>().Should().BeTrue();
        container["privileged"]!.GetValue<bool>().Should().BeFalse();
        Mounts(m).Should().Equal(new Dictionary<string, string> { ["/storage"] = "storage", ["/tmp"] = "tmp", ["/var/run/wireguard"] = "wireguard-run" });
        Volume(m, "tmp")["emptyDir"].Should().NotBeNull();
        Volume(m, "wireguard-run")["emptyDir"].Should().NotBeNull();
    }

    [Fact]
    public async Task One_replica_recreated_probed_on_readiness_and_liveness_and_restarted_when_the_secret_changes()
    {
        var m = await HelmChart.TemplateAsync(Release, Ns, HelmChart.Server);

        var spec = m.Deployment["spec"]!;
        spec["replicas"]!.GetValue<long>().Should().Be(1);
        spec["strategy"]!["type"]!.GetValue<string>().Should().Be("Recreate");
        foreach (var (probe, path) in new[] { ("startupProbe", "/readyz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/livez") })
        {
            m.Container[probe]!["httpGet"]!["path"]!.GetValue<string>().Should().Be(path);
            m.Container[probe]!["httpGet"]!["port"]!.GetValue<string>().Should().Be("api");
        }

        ContainerPorts(m)["api"].Should().Be((8082L, "TCP"));
        var labels = spec["template"]!["metadata"]!["labels"]!;
        labels["application"]!.GetValue<string>().Should().Be(Fullname);
        labels["app.kubernetes.io/name"]!.GetValue<string>().Should().Be("wormhole");
        labels["app.kubernetes.io/instance"]!.GetValue<string>().Should().Be(Release);
        labels["app.kubernetes.io/component"]!.GetValue<string>().Should().Be("server");
        spec["selector"]!["matchLabels"]!.ToJsonString().Should().Be("""{"application":"wormhole-server"}""");
        m.PodSpec["serviceAccountName"]!.GetValue<string>().Should().Be(Fullname);
    }

    [Theory]
    [InlineData("peering.psk=another-secret-key", true)]
    [InlineData("server.basicAuth.password=changed", true)]
    [InlineData("server.basicAuth.username=someone", true)]
    [InlineData("server.resources.limits.memory=512Mi", false)]
    [InlineData("server.debug=true", false)]
    public async Task The_config_checksum_follows_the_secret_and_only_the_secret(string change, bool restarts)
    {
        var before = Checksum(await HelmChart.TemplateAsync(Release, Ns, HelmChart.Server));
        var after = Checksum(await HelmChart.TemplateAsync(Release, Ns, [.. HelmChart.Server, change]));

        before.Should().MatchRegex("^[0-9a-f]{64}$");
        (before != after).Should().Be(restarts, $"'{change}' {(restarts ? "changes" : "does not change")} the Secret");
    }

    [Fact]
    public async Task Rbac_grants_the_verbs_the_code_uses_and_no_more()
    {
        var m = await HelmChart.TemplateAsync(Release, Ns, HelmChart.Server);

        // Cluster-wide: the Services informer (KubernetesAppSource: LIST and WATCH of every namespace's Services) and the
        // EventRecorder (POST an Event, GET it and PATCH its count when it is seen again). No GET of a single Service.
        Rules(m.OfKind("ClusterRole").Single()).Should().BeEquivalentTo(
        [
            ("", "services", "list,watch"),
            ("", "events", "create,get,patch"),
        ]);
        // In the release namespace, KubernetesSink on generated Services and NetworkPolicies: LIST (garbage collection),
        // POST, GET after a 409 on create, PATCH, DELETE, and WATCH (drift). Never PUT (update).
        var role = m.OfKind("Role").Single();
        Manifests.Namespace(role).Should().Be(Ns);
        Rules(role).Should().BeEquivalentTo(
        [
            ("", "services", "create,delete,get,list,patch,watch"),
            ("networking.k8s.io", "networkpolicies", "create,delete,get,list,patch,watch"),
        ]);
        foreach (var binding in m.OfKind("ClusterRoleBinding").Concat(m.OfKind("RoleBinding")))
        {
            var subject = binding["subjects"]!.AsArray().Single()!;
            (subject["kind"]!.GetValue<string>(), subject["name"]!.GetValue<string>(), subject["namespace"]!.GetValue<string>())
                .Should().Be(("ServiceAccount", Fullname, Ns));
        }

        m.OfKind("ClusterRoleBinding").Single()["roleRef"]!["name"]!.GetValue<string>().Should().Be(Manifests.Name(m.OfKind("ClusterRole").Single()));
        m.OfKind("RoleBinding").Single()["roleRef"]!["name"]!.GetValue<string>().Should().Be(Manifests.Name(role));
    }

    [Fact]
    public async Task Own_network_policy_admits_api_metrics_pairing_and_wireguard()
    {
        var m = await HelmChart.TemplateAsync(Release, Ns, HelmChart.Server);

        var policy = m.Get("NetworkPolicy", Fullname);
        policy["spec"]!["podSelector"]!["matchLabels"]!.ToJsonString().Should().Be("""{"application":"wormhole-server"}""");
        policy["spec"]!["policyTypes"]!.AsArray().Select(t => t!.GetValue<string>()).Should().Equal("Ingress");
        var rule = policy["spec"]!["ingress"]!.AsArray().Single()!;
        rule["from"].Should().BeNull("reachable from anywhere, as the reference's");
        rule["ports"]!.AsArray().Select(p => (p!["port"]!.GetValue<long>(), p["protocol"]!.GetValue<string>()))
            .Should().BeEquivalentTo([(8082L, "TCP"), (8090L, "TCP"), (8080L, "TCP"), (51820L, "UDP")]);
    }

    [Fact]
    public async Task State_lives_on_a_claim_or_an_empty_dir_when_persistence_is_off()
    {
        var persistent = await HelmChart.TemplateAsync(Release, Ns, [.. HelmChart.Server, "server.pvc.storage=5Gi", "server.pvc.storageClassName=fast"]);
        var ephemeral = await HelmChart.TemplateAsync(Release, Ns, [.. HelmChart.Server, "server.pvc.enabled=false"]);

        var claim = persistent.Get("PersistentVolumeClaim", Fullname)["spec"]!;
        claim["resources"]!["requests"]!["storage"]!.GetValue<string>().Should().Be("5Gi");
        claim["storageClassName"]!.GetValue<string>().Should().Be("fast");
        claim["accessModes"]!.AsArray().Select(a => a!.GetValue<string>()).Should().Equal("ReadWriteOnce");
        Volume(persistent, "storage")["persistentVolumeClaim"]!["claimName"]!.GetValue<string>().Should().Be(Fullname);
        ephemeral.OfKind("PersistentVolumeClaim").Should().BeEmpty();
        Volume(ephemeral, "storage")["emptyDir"].Should().NotBeNull();
    }

    [Fact]
    public async Task Pull_secrets_come_from_docker_pullSecrets_and_docker_imagePullSecrets()
    {
        var m = await HelmChart.TemplateAsync(Release, Ns, [.. HelmChart.Server, "docker.pullSecrets[0]=registry-a", "docker.imagePullSecrets[0].name=registry-b",
            "docker.imagePullSecrets[1].name=registry-a", "docker.registry=", "docker.image=my/hub", "docker.version=1.2.3", "server.pullPolicy=IfNotPresent"]);

        m.PodSpec["imagePullSecrets"]!.AsArray().Select(s => s!["name"]!.GetValue<string>()).Should().Equal("registry-a", "registry-b");
        m.Container["image"]!.GetValue<string>().Should().Be("my/hub:1.2.3");
        m.Container["imagePullPolicy"]!.GetValue<string>().Should().Be("IfNotPresent");
    }

    [Fact]
    public async Task The_tun_device_is_mounted_only_when_asked_for_wireguard_go()
    {
        var without = await HelmChart.TemplateAsync(Release, Ns, HelmChart.Server);
        var with = await HelmChart.TemplateAsync(Release, Ns, [.. HelmChart.Server, "wireguard.mountTunDevice=true"]);

        without.PodSpec["volumes"]!.AsArray().Should().NotContain(v => v!["hostPath"] != null);
        Volume(with, "tun")["hostPath"]!["path"]!.GetValue<string>().Should().Be("/dev/net/tun");
        Mounts(with)["/dev/net/tun"].Should().Be("tun");
    }

    [Fact]
    public async Task The_notes_give_the_public_address_how_to_add_a_spoke_and_how_to_expose_a_service()
    {
        var notes = await HelmChart.NotesAsync(Release, Ns, HelmChart.Server);

        notes.Should().Contain("http://hub.example.com:8080").And.Contain("hub.example.com:51820/udp");
        notes.Should().Contain("kubectl get svc wormhole-server -n wormhole", "a LoadBalancer's address is to be checked");
        notes.Should().Contain("--set client.enabled=true").And.Contain("--set client.serverDsn=http://hub.example.com:8080").And.Contain("--set client.name=");
        notes.Should().Contain("kubectl annotate svc <service> -n <namespace> wormhole.glothriel.github.com/exposed=yes");
        notes.Should().Contain("network-policy-consumes-app=<app name>");
        notes.Should().NotContain("WARNING: peering.psk is the chart's default");
        (await HelmChart.NotesAsync(Release, Ns, "server.enabled=true", "server.wg.publicHost=h.example.com")).Should().Contain("WARNING: peering.psk is the chart's default");
    }

    internal static JsonNode Port(JsonNode service, string name) =>
        service["spec"]!["ports"]!.AsArray().Single(p => p!["name"]!.GetValue<string>() == name)!;

    internal static IEnumerable<(string Name, long Port, string Protocol)> Ports(JsonNode service) =>
        service["spec"]!["ports"]!.AsArray().Select(p => (p!["name"]!.GetValue<string>(), p["port"]!.GetValue<long>(), p["protocol"]!.GetValue<string>()));

    internal static Dictionary<string, (long Port, string Protocol)> ContainerPorts(Manifests m) =>
        m.Container["ports"]!.AsArray().ToDictionary(p => p!["name"]!.GetValue<string>(), p => (p!["containerPort"]!.GetValue<long>(), p["protocol"]!.GetValue<string>()));

    internal static Dictionary<string, string> Mounts(Manifests m) =>
        m.Container["volumeMounts"]!.AsArray().ToDictionary(v => v!["mountPath"]!.GetValue<string>(), v => v!["name"]!.GetValue<string>());

    internal static JsonNode Volume(Manifests m, string name) =>
        m.PodSpec["volumes"]!.AsArray().Single(v => v!["name"]!.GetValue<string>() == name)!;

    internal static string Checksum(Manifests m) =>
        m.Deployment["spec"]!["template"]!["metadata"]!["annotations"]!["checksum/config"]!.GetValue<string>();

    /// <summary>(apiGroup, resource, sorted verbs) per rule resource.</summary>
    internal static IEnumerable<(string Group, string Resource, string Verbs)> Rules(JsonNode role) =>
        role["rules"]!.AsArray().SelectMany(r =>
            from g in r!["apiGroups"]!.AsArray()
            from res in r["resources"]!.AsArray()
            select (g!.GetValue<string>(), res!.GetValue<string>(), string.Join(',', r["verbs"]!.AsArray().Select(v => v!.GetValue<string>()).Order(StringComparer.Ordinal))));
}
