using System.CommandLine;

namespace Wormhole.Tunnel.Cli;

/// <summary>Runs a root command: parse errors print one sentence each (no help dump) and exit 2; SIGTERM/SIGINT cancel the action.</summary>
public static class CliRunner
{
    /// <summary>
    /// Sets the root's action: read and validate the settings (a bad value prints one sentence and exits 2), stop after
    /// --check, otherwise run.
    /// </summary>
    public static void SetAction<T>(RootCommand root, CommonCli common, Func<ParseResult, T> read, Func<T, CommonSettings> commonOf, Func<T, CancellationToken, Task<int>> run)
    {
        root.SetAction(async (result, cancellationToken) =>
        {
            T settings;
            try
            {
                settings = read(result);
                if (common.CheckOnly(result, commonOf(settings)))
                {
                    return 0;
                }
            }
            catch (OptionsException ex)
            {
                await Console.Error.WriteLineAsync(ex.Message);
                return 2;
            }

            return await run(settings, cancellationToken);
        });
    }

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
