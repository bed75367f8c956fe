using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text;
using Wormhole.Tunnel.E2E.Infrastructure;
using Wormhole.Tunnel.Pairing;

namespace Wormhole.Tunnel.E2E.Tunnel;

/// <summary>
/// A seeded, repeatable fuzz run against a running hub and two spokes over WireGuard: pairing (PSK and token), sync (from
/// a sacrificial spoke's tunnel address), the admin API and the apps file get generated input, among them the hostile
/// cases found before (non-canonical keys, a name with a trailing newline, metadata that is not UTF-8, CONNECT, deletes
/// of unknown peers and without credentials, a 1 MiB app name, an apps file that is a link to /dev/zero). Afterwards the
/// hub runs, no client mistake got a 5xx, the victim spoke is still paired with its app reachable, and the hub's RSS is
/// bounded. WORMHOLE_FUZZ_SEED repeats a run.
/// </summary>
public sealed class FuzzTests
{
    private const int Inputs = 10_000;

    [RootFact]
    public async Task Ten_thousand_generated_inputs_crash_nothing_and_leave_the_paired_spoke_and_its_traffic_intact()
    {
        var seed = int.TryParse(Environment.GetEnvironmentVariable("WORMHOLE_FUZZ_SEED"), CultureInfo.InvariantCulture, out var s) ? s : 20261203;
        var random = new Random(seed);
        await using var lab = await TunnelLab.CreateAsync("spoke1", "fz");
        var spoke = lab.Network["spoke1"];
        var sacrificial = lab.Network["fz"];
        var backend = lab.StartBackend(spoke, "still here");
        var hub = await lab.StartHubAsync(["--basic-auth-username", "admin", "--basic-auth-password", "fuzz-password", "--pairing-rate-limit", "100000", "--pairing-burst", "100000"]);
        lab.WriteApps(spoke, ("web", $"127.0.0.1:{backend}"));
        await lab.StartSpokeAsync(spoke);
        var fz = await lab.StartSpokeAsync(sacrificial);
        int? port = null;
        await TunnelLab.EventuallyAsync(
            async () => (port ??= await TunnelLab.ExposedPortAsync(lab.Hub, "web")) is { } p && await TunnelLab.FetchAsync(lab.Hub, p) == "still here",
            "the victim spoke's app answers through the hub");
        var rssBefore = RssKb(hub.Id);
        var fzAddress = (string)(await TunnelLab.ApiAsync(lab.Hub, "/api/peers/v1")).AsArray().Single(p => (string)p!["name"]! == "fz")!["ip"]!;

        var tokenText = await CreateTokenAsync(lab.Hub);
        var token = JoinToken.TryParse(tokenText, out _)!;
        var psk = new PairingCodec(TunnelLab.Token);
        using var hubClient = lab.Hub.CreateHttpClient(TimeSpan.FromSeconds(20));
        using var fzClient = sacrificial.CreateHttpClient(TimeSpan.FromSeconds(20));
        var serverErrors = new List<string>();
        var watch = Stopwatch.StartNew();
        var sent = 0;
        var hostile = Hostile(psk, token).ToList();
        for (var i = 0; i < Inputs; i++)
        {
            var (target, method, path, body) = i < hostile.Count ? hostile[i] : Generate(random, psk, token);
            var client = target == "sync" ? fzClient : hubClient;
            var baseUrl = target switch
            {
                "pairing" => "http://127.0.0.1:8080",
                "sync" => $"http://{lab.HubTunnelAddress}:8081",
                _ => "http://127.0.0.1:8082",
            };
            using var request = new HttpRequestMessage(new HttpMethod(method), baseUrl + path);
            request.Headers.Host = "fuzz";
            if (body is not null)
            {
                request.Content = new ByteArrayContent(body);
            }

            if (target == "admin" && random.Next(2) == 0)
            {
                request.Headers.TryAddWithoutValidation("Authorization", "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes("admin:fuzz-password")));
            }

            using var response = await client.SendAsync(request);
            sent++;
            var code = (int)response.StatusCode;
            if (code >= 500 && !(target == "sync" && code == 503))
            {
                serverErrors.Add($"#{i} {method} {target}{path}: {code} {await response.Content.ReadAsStringAsync()}");
            }

            if (i % 500 == 0)
            {
                // The apps file of the sacrificial spoke gets junk too (its loader keeps running, says why).
                WriteJunkApps(lab.AppsFile(sacrificial), random, i);
            }
        }

        watch.Stop();
        Timings.Record($"fuzz: {sent} inputs (seed {seed})", [watch.Elapsed]);
        serverErrors.Should().BeEmpty();
        hub.HasExited.Should().BeFalse();
        fz.HasExited.Should().BeFalse("a junk apps file never stops a spoke");
        (await TunnelLab.ApiAsync(lab.Hub, "/api/peers/v1")).AsArray().Select(p => (string)p!["name"]!).Should().Contain("spoke1");
        await TunnelLab.EventuallyAsync(
            async () => await TunnelLab.ExposedPortAsync(lab.Hub, "web") is { } p && await TunnelLab.FetchAsync(lab.Hub, p) == "still here",
            "the victim spoke's app still answers through the hub");
        var rssAfter = RssKb(hub.Id);
        rssAfter.Should().BeLessThan(rssBefore + 150 * 1024, $"the hub's RSS stays bounded ({rssBefore} kB before, {rssAfter} kB after)");
        watch.Elapsed.Should().BeLessThan(TimeSpan.FromSeconds(90));
        fzAddress.Should().NotBeNull();
    }

    private static IEnumerable<(string Target, string Method, string Path, byte[]? Body)> Hostile(PairingCodec psk, JoinToken token)
    {
        var key = Convert.ToBase64String(new byte[32].Select((_, i) => (byte)(i + 1)).ToArray());
        var nonCanonical = key[..42] + (char)(key[42] + 1) + "=";
        yield return ("pairing", "POST", "/pairing", psk.EncodeRequest(new PairingRequest("evil", new PairingWireGuard(nonCanonical), [])));
        yield return ("pairing", "POST", "/pairing", psk.EncodeRequest(new PairingRequest("spoke1\n", new PairingWireGuard(key), [])));
        yield return ("pairing", "POST", "/pairing", psk.EncodeRequest(new PairingRequest("zero", new PairingWireGuard("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="), [])));
        yield return ("pairing", "CONNECT", "/pairing", null);
        yield return ("sync", "CONNECT", "/sync", null);
        yield return ("sync", "POST", "/sync", [.. "{\"Peer\":\"fz\",\"Metadata\":{\"a\":\""u8, 0xff, 0xfe, .. "\"},\"Apps\":[]}"u8]);
        yield return ("sync", "POST", "/sync", Encoding.UTF8.GetBytes("{\"Peer\":\"fz\",\"Apps\":[{\"name\":\"" + new string('x', 1024 * 1024) + "\",\"address\":\"1.2.3.4:80\"}]}"));
        yield return ("sync", "POST", "/sync", Encoding.UTF8.GetBytes("{\"Peer\":\"fz\",\"Apps\":[{\"name\":\"a\\nforged\",\"address\":\"1.2.3.4:80\"}]}"));
        yield return ("admin", "DELETE", "/api/peers/v1/does-not-exist", null);
        yield return ("admin", "DELETE", "/api/peers/v1/spoke1%0a", null);
        yield return ("pairing", "POST", JoinPairing.Path, JoinPairing.SealRequest(token, new PairingRequest("Bad Name", new PairingWireGuard(key), []), DateTimeOffset.UtcNow, out _));
        yield return ("pairing", "POST", "/pairing", new byte[5 * 1024]);
        yield return ("pairing", "POST", "/pairing", new byte[100 * 1024]);
    }

    private static (string, string, string, byte[]?) Generate(Random random, PairingCodec psk, JoinToken token)
    {
        string Junk(int max) => new(Enumerable.Range(0, random.Next(max)).Select(_ => (char)random.Next(1, 0x2FF)).ToArray());
        byte[] Bytes(int max) => Enumerable.Range(0, random.Next(max)).Select(_ => (byte)random.Next(256)).ToArray();
        string Key() => random.Next(3) == 0 ? Junk(50) : Convert.ToBase64String(Enumerable.Range(0, 32).Select(_ => (byte)random.Next(256)).ToArray());
        switch (random.Next(8))
        {
            case 0:
                return ("pairing", "POST", "/pairing", Bytes(3000));
            case 1:
                return ("pairing", "POST", "/pairing", psk.EncodeRequest(new PairingRequest(random.Next(2) == 0 ? Junk(80) : $"fz{random.Next(3)}", new PairingWireGuard(Key()), [])));
            case 2:
                var sealedRequest = JoinPairing.SealRequest(token, new PairingRequest(Junk(70), new PairingWireGuard(Key()), []), DateTimeOffset.UtcNow.AddMinutes(random.Next(-20, 20)), out _);
                if (random.Next(2) == 0)
                {
                    sealedRequest[random.Next(sealedRequest.Length)] ^= (byte)(1 << random.Next(8));
                }

                return ("pairing", "POST", JoinPairing.Path, sealedRequest);
            case 3:
                return ("pairing", random.Next(2) == 0 ? "GET" : "PUT", random.Next(2) == 0 ? "/pairing" : "/" + Uri.EscapeDataString(Junk(30)), Bytes(100));
            case 4:
            case 5:
                var apps = string.Join(',', Enumerable.Range(0, random.Next(30)).Select(_ =>
                    $"{{\"name\":{Quote(Junk(40))},\"address\":{Quote(random.Next(2) == 0 ? $"10.0.0.{random.Next(300)}:{random.Next(-5, 70000)}" : Junk(20))},\"originalPort\":{random.Next(-10, 70000)}}}"));
                var json = $"{{\"Peer\":{Quote(random.Next(3) == 0 ? Junk(20) : "fz")},\"Metadata\":{(random.Next(2) == 0 ? "null" : "{\"k\":" + Quote(Junk(100)) + "}")},\"Apps\":[{apps}]}}";
                var body = Encoding.UTF8.GetBytes(json);
                if (random.Next(4) == 0)
                {
                    body = body.Take(random.Next(body.Length + 1)).ToArray();
                }

                return ("sync", "POST", "/sync", body);
            case 6:
                return ("admin", new[] { "GET", "DELETE", "POST", "PUT" }[random.Next(4)], new[] { "/api/peers/v1/", "/api/tokens/v1/", "/api/revocations/v1/", "/api/apps/", "/" }[random.Next(5)] + Uri.EscapeDataString(Junk(20)) + (random.Next(3) == 0 ? "?revoke=" + Uri.EscapeDataString(Junk(5)) : ""), null);
            default:
                return ("admin", "POST", "/api/tokens/v1", Encoding.UTF8.GetBytes(random.Next(2) == 0 ? Junk(60) : $"{{\"ttl\":{Quote(Junk(6))},\"uses\":{random.Next(-5, 20000)}}}"));
        }
    }

    private static string Quote(string s) => System.Text.Json.JsonSerializer.Serialize(s);

    private static void WriteJunkApps(string path, Random random, int round)
    {
        var temp = path + ".tmp";
        File.Delete(temp);
        if (round % 2000 == 1000)
        {
            File.CreateSymbolicLink(temp, "/dev/zero");
        }
        else
        {
            File.WriteAllText(temp, round % 1000 == 0 ? "apps:\n  - name: ok\n    address: 127.0.0.1:9\n" : new string((char)random.Next(32, 127), random.Next(2000)));
        }

        File.Move(temp, path, overwrite: true);
    }

    private static long RssKb(int pid) =>
        long.Parse(File.ReadAllLines($"/proc/{pid}/status").First(l => l.StartsWith("VmRSS:", StringComparison.Ordinal)).Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);

    private static async Task<string> CreateTokenAsync(Site hub)
    {
        using var client = hub.CreateHttpClient();
        using var request = new HttpRequestMessage(HttpMethod.Post, "http://127.0.0.1:8082/api/tokens/v1") { Content = new StringContent("{\"uses\":1000}", Encoding.UTF8, "application/json") };
        request.Headers.TryAddWithoutValidation("Authorization", "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes("admin:fuzz-password")));
        using var response = await client.SendAsync(request);
        response.StatusCode.Should().Be(HttpStatusCode.Created);
        var json = System.Text.Json.JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return json.RootElement.GetProperty("token").GetString()!;
    }
}
