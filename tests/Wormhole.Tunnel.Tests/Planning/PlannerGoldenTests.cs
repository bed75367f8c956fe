using System.Net;
using System.Runtime.CompilerServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using Wormhole.Tunnel.Apps;
using Wormhole.Tunnel.Planning;
using Wormhole.Tunnel.Sources;

namespace Wormhole.Tunnel.Tests.Planning;

/// <summary>
/// testdata/planner/&lt;case&gt;/input.json holds a list of steps (inputs fed in order, each plan built on the previous one);
/// expected.json holds the plan after every step. Set UPDATE_GOLDEN=1 to rewrite expected.json after a deliberate change.
/// </summary>
public class PlannerGoldenTests
{
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static TheoryData<string> Cases() => new(Directory.GetDirectories(Path.Combine(AppContext.BaseDirectory, "testdata", "planner")).Select(Path.GetFileName)!);

    [Theory]
    [MemberData(nameof(Cases))]
    public void Plan_matches_golden_file(string name)
    {
        var dir = Path.Combine(AppContext.BaseDirectory, "testdata", "planner", name);
        var steps = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "input.json")))!.AsArray();
        var plans = new JsonArray();
        Plan? previous = null;
        foreach (var step in steps)
        {
            previous = Planner.Build(ReadInput(step!), previous);
            plans.Add(Describe(previous));
        }

        var actual = plans.ToJsonString(Indented) + "\n";
        if (Environment.GetEnvironmentVariable("UPDATE_GOLDEN") == "1")
        {
            File.WriteAllText(Path.Combine(SourceDir(), "testdata", "planner", name, "expected.json"), actual);
        }

        actual.Should().Be(File.ReadAllText(Path.Combine(dir, "expected.json")));
    }

    private static PlanInput ReadInput(JsonNode step)
    {
        var locals = step["local"]?.AsArray().Select(a =>
        {
            AppAddress.TryParse((string)a!["address"]!, out var host, out var port).Should().BeTrue();
            var protocol = (string?)a["protocol"];
            return new LocalApp((string)a["name"]!, host, port, port) { Http = protocol is null ? null : new HttpMode((string?)a["healthPath"]) };
        }).ToList() ?? [];
        var remotes = step["remote"]?.AsArray().Select(p => new PeerApps(
            (string)p!["peer"]!,
            IPAddress.Parse((string)p["tunnelAddress"]!),
            p["apps"]!.AsArray().Select(a => new AppDescriptor((string)a!["name"]!, (string)a["address"]!, (string)p["peer"]!, (int)a["originalPort"]!)
            {
                Protocol = (string?)a["protocol"],
                HealthPath = (string?)a["healthPath"],
            }).ToList())).ToList() ?? [];
        var tunnel = (string?)step["tunnelAddress"];
        var unusable = step["unusablePorts"]?.AsArray().Select(p => (int)p!).ToHashSet();
        var localPorts = step["localPorts"] is JsonArray lp ? new PortRange((int)lp[0]!, (int)lp[1]!) : PortRange.Local;
        var remotePorts = step["remotePorts"] is JsonArray rp ? new PortRange((int)rp[0]!, (int)rp[1]!) : PortRange.Remote;
        var peers = step["peers"]?.AsArray().Select(p => new PeerLink(
            (string)p!["name"]!, (string)p["publicKey"]!, IPAddress.Parse((string)p["address"]!), (string?)p["endpoint"], (int?)p["keepalive"], (string?)p["presharedKey"])).ToList() ?? [];
        var quotas = step["maxAppsPerPeer"] is JsonNode max
            ? PeerQuotas.Default with { MaxAppsPerPeer = (int)max, MaxAppNameLength = (int?)step["maxAppNameLength"] ?? PeerQuotas.Default.MaxAppNameLength }
            : PeerQuotas.Default;
        var global = step["global"] is JsonObject g
            ? new GlobalServicesOptions(true, g.ToDictionary(p => p.Key, p => (IReadOnlyList<string>)p.Value!.AsArray().Select(s => (string)s!).ToList()))
            : GlobalServicesOptions.Off;
        var unavailable = step["unavailableGlobal"]?.AsArray().ToDictionary(a => new ListenerKey(null, (string)a!, Global: true), _ => "cannot listen (test)");
        return new PlanInput((string)step["self"]!, tunnel is null ? null : IPAddress.Parse(tunnel), locals, remotes, localPorts, remotePorts, unusable)
        {
            Peers = peers,
            Quotas = quotas,
            GlobalServices = global,
            Unavailable = unavailable,
        };
    }

    private static JsonObject Describe(Plan plan) => new()
    {
        ["localListeners"] = new JsonArray(plan.LocalListeners.Select(l => (JsonNode)$"{l.App} :{l.Port} -> {l.TargetHost}:{l.TargetPort}").ToArray()),
        ["advertised"] = new JsonArray(plan.Advertised.Select(a => (JsonNode)$"{a.Name} @ {a.Address} peer={a.Peer} originalPort={a.OriginalPort}{(a.Protocol is null ? "" : $" protocol={a.Protocol}")}{(a.HealthPath is null ? "" : $" healthPath={a.HealthPath}")}").ToArray()),
        ["remoteListeners"] = new JsonArray(plan.RemoteListeners.Select(r => (JsonNode)$"{r.Peer}/{r.App} :{r.Port} -> {r.PeerAddress}:{r.PeerPort} originalPort={r.OriginalPort}{Http(r.Http)}").ToArray()),
        ["exposed"] = new JsonArray(plan.Exposed.Select(a => (JsonNode)$"{a.Name} @ {a.Address} peer={a.Peer}").ToArray()),
        ["problems"] = new JsonArray(plan.Problems.Select(p => (JsonNode)$"{p.Peer}/{p.App}: {p.Reason}").ToArray()),
        ["reportedPeers"] = new JsonArray(plan.ReportedPeers.Select(p => (JsonNode)p).ToArray()),
        ["pairedPeers"] = new JsonArray(plan.PairedPeers.Select(p => (JsonNode)p).ToArray()),
        ["globalListeners"] = new JsonArray(plan.GlobalListeners.Select(g =>
            (JsonNode)$"{g.App} :{g.Port} originalPort={g.OriginalPort}{Http(g.Http)} -> {string.Join(", ", g.Sites.Select(s => $"{s.Peer}@{s.Address}:{s.Port}#{s.Priority}"))}").ToArray()),
        ["wireGuard"] = plan.WireGuard is null ? null : new JsonArray(plan.WireGuard.Peers.Select(p =>
            (JsonNode)$"{p.PublicKey} allowed-ips {string.Join(',', p.AllowedIps)} endpoint {p.Endpoint ?? "(none)"} keepalive {p.PersistentKeepaliveSeconds?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "off"}{(p.PresharedKey is null ? "" : " preshared-key (set)")}").ToArray()),
    };

    private static string Http(HttpMode? http) => http is null ? "" : http.HealthPath is null ? " http" : $" http health={http.HealthPath}";

    private static string SourceDir([CallerFilePath] string path = "") => Path.GetDirectoryName(Path.GetDirectoryName(path))!;
}
