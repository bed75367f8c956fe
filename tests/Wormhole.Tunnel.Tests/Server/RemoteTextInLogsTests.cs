using System.Net;
using System.Text.Json.Nodes;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.Tests.Hosting;

namespace Wormhole.Tunnel.Tests.Server;

/// <summary>
/// Names and reasons that come from the network reach the log (and HTTP answers) escaped and cut: a newline cannot
/// forge a line, a 1 MiB name does not make a 1 MiB line.
/// </summary>
public sealed class RemoteTextInLogsTests
{
    private const string Alpha = "127.0.0.2";
    private const int PairingRefused = 2101;
    private const int SyncRefused = 2102;
    private const int PlanProblem = 1305;
    private const int ShortLine = 1024;

    [Fact]
    public async Task A_pairing_name_with_a_newline_gives_one_escaped_line()
    {
        await using var hub = await HubFixture.StartAsync();

        using var response = await hub.PostPairingAsync("spoke1\nWRN forged line", HubFixture.NewKey());

        response.StatusCode.Should().Be(HttpStatusCode.BadRequest);
        var line = hub.Logs.WithEvent(PairingRefused).Should().ContainSingle().Subject;
        OneShortLine(line);
        line.Message.Should().Contain("spoke1\\nWRN forged line").And.Contain("status 400");
    }

    [Fact]
    public async Task A_huge_pairing_name_gives_a_short_line()
    {
        await using var hub = await HubFixture.StartAsync();

        using var response = await hub.PostPairingAsync(new string('a', 40 * 1024), HubFixture.NewKey());

        response.StatusCode.Should().Be(HttpStatusCode.BadRequest);
        var line = hub.Logs.WithEvent(PairingRefused).Should().ContainSingle().Subject;
        OneShortLine(line);
        line.Message.Should().Contain($"…({40 * 1024} chars)");
    }

    [Fact]
    public async Task A_refused_sync_quoting_an_app_name_with_a_newline_is_escaped_in_the_log_and_the_answer()
    {
        await using var hub = await HubFixture.StartAsync();
        await hub.PairAsync("alpha");

        using var response = await hub.PostSyncAsync(Alpha, SyncBody(("web\nWRN forged line", "no-port")));

        response.StatusCode.Should().Be(HttpStatusCode.BadRequest);
        var answer = await response.Content.ReadAsStringAsync();
        answer.Should().NotContain("\n").And.Contain("web\\nWRN forged line");
        var line = hub.Logs.WithEvent(SyncRefused).Should().ContainSingle().Subject;
        OneShortLine(line);
        line.Message.Should().Contain("web\\nWRN forged line");
    }

    [Fact]
    public async Task A_refused_sync_quoting_a_1_MiB_app_name_is_cut_in_the_log_and_the_answer()
    {
        await using var hub = await HubFixture.StartAsync();
        await hub.PairAsync("alpha");

        using var response = await hub.PostSyncAsync(Alpha, SyncBody((new string('n', 1024 * 1024), "no-port")));

        response.StatusCode.Should().Be(HttpStatusCode.BadRequest);
        (await response.Content.ReadAsStringAsync()).Length.Should().BeLessThan(ShortLine);
        OneShortLine(hub.Logs.WithEvent(SyncRefused).Should().ContainSingle().Subject);
    }

    [Fact]
    public async Task An_app_the_planner_skips_is_logged_escaped_and_cut_whatever_its_name()
    {
        await using var hub = await HubFixture.StartAsync();
        await hub.PairAsync("alpha");
        var huge = new string('n', 1024 * 1024);

        using var response = await hub.PostSyncAsync(Alpha, SyncBody((huge, $"{Alpha}:20000"), ("web\nWRN forged line", $"{Alpha}:20001")));

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        await Eventually.TrueAsync(() => hub.Logs.WithEvent(PlanProblem).Count == 2, "the hub logs both skipped apps");
        var lines = hub.Logs.WithEvent(PlanProblem);
        lines.Should().AllSatisfy(OneShortLine);
        lines.Should().Contain(l => l.Message.Contains("web\\nWRN forged line"));
        lines.Should().Contain(l => l.Message.Contains($"…({huge.Length} chars)"));
    }

    private static void OneShortLine(LogLine line)
    {
        line.Message.Should().NotContainAny(["\n", "\r"]);
        line.Message.Length.Should().BeLessThan(ShortLine);
    }

    private static string SyncBody(params (string Name, string Address)[] apps) => new JsonObject
    {
        ["Peer"] = "alpha",
        ["Apps"] = new JsonArray(apps.Select(a => (JsonNode)new JsonObject { ["name"] = a.Name, ["address"] = a.Address, ["peer"] = "alpha", ["originalPort"] = 80 }).ToArray()),
    }.ToJsonString();
}
