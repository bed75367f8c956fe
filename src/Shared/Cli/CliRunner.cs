using System.CommandLine;

namespace Wormhole.Tunnel.Cli;

/// <summary>Runs a root command: parse errors print one sentence each (no help dump) and exit 2; SIGTERM/SIGINT cancel the action.</summary>
public static class CliRunner
{
    public static async Task<int> RunAsync(RootCommand root, string[] args)
    {
        var result = root.Parse(args);
        if (result.Errors.Count > 0)
        {
            foreach (var error in result.Errors)
            {
                await Console.Error.WriteLineAsync(error.Message + " See --help.");
            }

            return 2;
        }

        return await result.InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = TimeSpan.FromSeconds(10) });
    }
}
