using System.Net;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Hosting;
using Wormhole.Tunnel.Tests.Server;

namespace Wormhole.Tunnel.Tests.Hosting;

/// <summary>The process's log output (<see cref="Logging"/>) and the HTTP request log of <see cref="WebHost"/>.</summary>
public sealed class LoggingTests
{
    [Fact]
    public void Json_lines_are_compact_log_event_format_with_time_message_level_and_properties()
    {
        var output = new StringWriter();
        using (var factory = Logging.Create(json: true, debug: false, output))
        {
            var logger = factory.CreateLogger("Wormhole.Tunnel.Test");
            logger.LogWarning(new EventId(1201, "Invalid"), "Apps file {Path} is invalid: {Reason}", "/etc/apps.yaml", "line\nbreak");
            logger.LogInformation("Loaded {Count} app(s)", 3);
            logger.LogDebug("not shown without --debug");
        }

        var lines = output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        lines.Should().HaveCount(2, "one JSON object per line, Debug filtered out");
        using var warning = JsonDocument.Parse(lines[0]);
        var w = warning.RootElement;
        DateTimeOffset.Parse(w.GetProperty("@t").GetString()!, System.Globalization.CultureInfo.InvariantCulture)
            .Should().BeCloseTo(DateTimeOffset.UtcNow, TimeSpan.FromMinutes(1));
        w.GetProperty("@m").GetString().Should().Be("Apps file \"/etc/apps.yaml\" is invalid: \"line\nbreak\"");
        w.GetProperty("@i").GetString().Should().NotBeNullOrEmpty("the template's id");
        w.GetProperty("@l").GetString().Should().Be("Warning");
        w.GetProperty("Path").GetString().Should().Be("/etc/apps.yaml");
        w.GetProperty("Reason").GetString().Should().Be("line\nbreak");
        w.GetProperty("SourceContext").GetString().Should().Be("Wormhole.Tunnel.Test");
        w.GetProperty("EventId").GetProperty("Id").GetInt32().Should().Be(1201);
        lines[0].Should().NotContain("\n").And.Contain("line\\nbreak", "JSON escapes the newline inside the string");

        using var info = JsonDocument.Parse(lines[1]);
        info.RootElement.GetProperty("@m").GetString().Should().Be("Loaded 3 app(s)");
        info.RootElement.TryGetProperty("@l", out _).Should().BeFalse("CLEF leaves out @l for Information");
        info.RootElement.GetProperty("Count").GetInt32().Should().Be(3);
    }

    [Fact]
    public void Console_lines_keep_their_look()
    {
        var output = new StringWriter();
        using (var factory = Logging.Create(json: false, debug: false, output))
        {
            factory.CreateLogger("Wormhole.Tunnel.Test").LogWarning("Apps file {Path} is invalid", "/etc/apps.yaml");
        }

        output.ToString().Should().MatchRegex(@"^\d\d:\d\d:\d\d\.\d{3} WRN Wormhole\.Tunnel\.Test: Apps file /etc/apps\.yaml is invalid\r?\n$");
    }

    [Fact]
    public async Task Requests_are_logged_at_debug_with_debug_on()
    {
        var lines = await RequestLogAsync(json: false, debug: true, "/api/apps?token=query-secret");

        var line = lines.Should().ContainSingle(l => l.Contains("Wormhole.Tunnel.Http", StringComparison.Ordinal)).Which;
        line.Should().MatchRegex(@"^\d\d:\d\d:\d\d\.\d{3} DBG Wormhole\.Tunnel\.Http: HTTP GET /api/apps on http responded 200 in \d+\.\d ms$");
        string.Join('\n', lines).Should().NotContain("query-secret").And.NotContain("header-secret").And.NotContain("token=");
    }

    [Fact]
    public async Task Requests_are_not_logged_without_debug()
    {
        var lines = await RequestLogAsync(json: false, debug: false, "/api/apps");

        lines.Should().NotContain(l => l.Contains("HTTP GET", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_request_path_with_a_newline_and_escape_comes_out_escaped()
    {
        var console = await RequestLogAsync(json: false, debug: true, "/x%0A12:00:00.000%20INF%20forged%1B[31m");
        var json = await RequestLogAsync(json: true, debug: true, "/x%0A12:00:00.000%20INF%20forged%1B[31m");

        console.Should().ContainSingle(l => l.Contains("HTTP GET", StringComparison.Ordinal))
            .Which.Should().MatchRegex(@"DBG Wormhole\.Tunnel\.Http: HTTP GET /x\\n12:00:00\.000 INF forged\\u001B\[31m on http responded 404 in ");
        console.Should().NotContain(l => l.StartsWith("12:00:00.000", StringComparison.Ordinal), "no forged second line");
        string.Join('\n', console).Should().NotContain("\u001b");

        using var request = JsonDocument.Parse(json.Single(l => l.Contains("RequestPath", StringComparison.Ordinal)));
        request.RootElement.GetProperty("RequestPath").GetString().Should().Be("/x\\n12:00:00.000 INF forged\\u001B[31m");
        request.RootElement.GetProperty("@l").GetString().Should().Be("Debug");
        request.RootElement.GetProperty("StatusCode").GetInt32().Should().Be(404);
    }

    /// <summary>One GET (with a secret in a header) to a host built by <see cref="WebHost.Create"/>; the log's lines.</summary>
    private static async Task<string[]> RequestLogAsync(bool json, bool debug, string pathAndQuery)
    {
        var output = new StringWriter();
        var started = new List<WebApplication>();
        using (var factory = Logging.Create(json, debug, output))
        {
            var app = WebHost.Create(new IPEndPoint(IPAddress.Loopback, 0), factory, 1024, a => a.MapGet("/api/apps", () => Results.Ok("[]")));
            try
            {
                var uri = await LoopbackHost.StartAsync(app, started);
                using var client = new HttpClient();
                using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(uri, pathAndQuery));
                request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Basic", "header-secret");
                using var response = await client.SendAsync(request);
            }
            finally
            {
                await app.StopAsync();
                await app.DisposeAsync();
            }
        }

        return output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.TrimEnd('\r')).ToArray();
    }
}
