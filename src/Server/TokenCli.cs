using System.CommandLine;
using System.Globalization;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Wormhole.Tunnel.Api;
using Wormhole.Tunnel.Cli;

namespace Wormhole.Tunnel.Server;

/// <summary>
/// <c>wormhole-server token create|list|revoke</c>: the admin API's token endpoints from a shell on the hub (or
/// anywhere that reaches its admin API). Credentials come from BASIC_AUTH_USERNAME and BASIC_AUTH_PASSWORD (or
/// BASIC_AUTH_PASSWORD_FILE), never from the command line.
/// </summary>
internal static class TokenCli
{
    public static Command Build()
    {
        var api = new Option<string>("--api") { Description = "The hub's admin API", DefaultValueFactory = _ => "http://127.0.0.1:8082", Recursive = true };
        var ttl = new Option<string>("--ttl") { Description = "How long the token is valid (e.g. 15m, 1h, 24h)", DefaultValueFactory = _ => "1h" };
        var uses = new Option<int>("--uses") { Description = "How many spokes may pair with it", DefaultValueFactory = _ => 1 };
        var name = new Option<string?>("--name") { Description = "Only this peer name may pair with it" };
        var id = new Argument<string>("id") { Description = "The token's id (from `token list`)" };

        var create = new Command("create", "Issue a join token; prints it (once) on stdout, details on stderr");
        create.Options.Add(ttl);
        create.Options.Add(uses);
        create.Options.Add(name);
        create.SetAction(async (result, ct) =>
        {
            var body = new TokenCreateBody(result.GetValue(ttl), result.GetValue(uses), result.GetValue(name));
            return await CallAsync(result.GetValue(api)!, HttpMethod.Post, "api/tokens/v1", JsonSerializer.Serialize(body, TokenCliJson.Default.TokenCreateBody), async text =>
            {
                var issued = JsonSerializer.Deserialize(text, TokenCliJson.Default.IssuedToken)!;
                Console.WriteLine(issued.Token);
                await Console.Error.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
                    $"token {issued.Id}: {issued.Uses} use(s){(issued.Name is null ? "" : $" by peer {issued.Name}")}, expires {issued.Expires:u}, pairs at {issued.PairingUrl}, hub key fingerprint {issued.Fingerprint}"));
            }, ct);
        });

        var list = new Command("list", "List the hub's join tokens (no secrets)");
        list.SetAction(async (result, ct) => await CallAsync(result.GetValue(api)!, HttpMethod.Get, "api/tokens/v1", null, text =>
        {
            var tokens = JsonSerializer.Deserialize(text, TokenCliJson.Default.ListTokenInfo)!;
            Console.WriteLine($"{"ID",-16}  {"NAME",-20}  {"USED",9}  {"EXPIRES",-20}  STATE");
            foreach (var t in tokens)
            {
                var state = t.Revoked ? "revoked" : t.Expired ? "expired" : t.Used >= t.Uses ? "used up" : "valid";
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{t.Id,-16}  {t.Name ?? "(any)",-20}  {$"{t.Used}/{t.Uses}",9}  {t.Expires.UtcDateTime:yyyy-MM-dd HH:mm:ss}Z  {state}"));
            }

            return Task.CompletedTask;
        }, ct));

        var revoke = new Command("revoke", "Revoke a join token: it pairs no one from now on");
        revoke.Arguments.Add(id);
        revoke.SetAction(async (result, ct) => await CallAsync(result.GetValue(api)!, HttpMethod.Delete, "api/tokens/v1/" + Uri.EscapeDataString(result.GetValue(id)!), null, _ =>
        {
            Console.WriteLine($"revoked {result.GetValue(id)}");
            return Task.CompletedTask;
        }, ct));

        var token = new Command("token", "Issue, list and revoke join tokens through the hub's admin API (credentials: BASIC_AUTH_USERNAME, BASIC_AUTH_PASSWORD or BASIC_AUTH_PASSWORD_FILE)");
        token.Options.Add(api);
        token.Subcommands.Add(create);
        token.Subcommands.Add(list);
        token.Subcommands.Add(revoke);
        return token;
    }

    private static async Task<int> CallAsync(string api, HttpMethod method, string path, string? json, Func<string, Task> onSuccess, CancellationToken cancellationToken)
    {
        string? user, password;
        try
        {
            user = Secrets.Read(null, null, "BASIC_AUTH_USERNAME");
            password = Secrets.Read(null, null, "BASIC_AUTH_PASSWORD");
        }
        catch (OptionsException ex)
        {
            await Console.Error.WriteLineAsync(ex.Message);
            return 2;
        }

        if (user is null || password is null)
        {
            await Console.Error.WriteLineAsync("Set BASIC_AUTH_USERNAME and BASIC_AUTH_PASSWORD (or BASIC_AUTH_PASSWORD_FILE) to the hub's admin credentials.");
            return 2;
        }

        if (!Uri.TryCreate(api.EndsWith('/') ? api : api + "/", UriKind.Absolute, out var baseUri) || baseUri.Scheme is not ("http" or "https"))
        {
            await Console.Error.WriteLineAsync($"--api '{api}' is not an http(s) URL such as http://127.0.0.1:8082.");
            return 2;
        }

        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
        using var request = new HttpRequestMessage(method, new Uri(baseUri, path));
        request.Headers.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{user}:{password}")));
        if (json is not null)
        {
            request.Content = new StringContent(json, Encoding.UTF8, "application/json");
        }

        try
        {
            using var response = await http.SendAsync(request, cancellationToken);
            var text = await response.Content.ReadAsStringAsync(cancellationToken);
            if (!response.IsSuccessStatusCode)
            {
                await Console.Error.WriteLineAsync($"the hub answered {(int)response.StatusCode}: {Hosting.LogText.Of(text.Trim(), 300)}");
                return 1;
            }

            await onSuccess(text);
            return 0;
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException)
        {
            await Console.Error.WriteLineAsync($"cannot reach the hub's admin API at {baseUri}: {ex.Message}");
            return 1;
        }
    }
}

[System.Text.Json.Serialization.JsonSerializable(typeof(TokenCreateBody))]
[System.Text.Json.Serialization.JsonSerializable(typeof(IssuedToken))]
[System.Text.Json.Serialization.JsonSerializable(typeof(List<TokenInfo>))]
internal sealed partial class TokenCliJson : System.Text.Json.Serialization.JsonSerializerContext;
