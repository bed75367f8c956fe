namespace Wormhole.Tunnel.Cli;

/// <summary>
/// Secrets (invite tokens, join tokens, passwords) never need the command line: each comes from its flag, a file named
/// by its <c>…-file</c> flag, its environment variable, or a file named by <c>…_FILE</c> in the environment (first found
/// wins). A file's trailing line break is dropped; an empty or unreadable file is an error naming the path, never the content.
/// </summary>
public static class Secrets
{
    public static string? Read(string? flagValue, string? filePath, string variable)
    {
        if (!string.IsNullOrEmpty(flagValue))
        {
            return flagValue;
        }

        if (!string.IsNullOrEmpty(filePath))
        {
            return FromFile(filePath, "--" + variable.ToLowerInvariant().Replace('_', '-') + "-file");
        }

        if (Environment.GetEnvironmentVariable(variable) is { Length: > 0 } value)
        {
            return value;
        }

        return Environment.GetEnvironmentVariable(variable + "_FILE") is { Length: > 0 } envFile ? FromFile(envFile, variable + "_FILE") : null;
    }

    private static string FromFile(string path, string source)
    {
        string text;
        try
        {
            var info = new FileInfo(path);
            if (info.Exists && info.Length > 64 * 1024)
            {
                throw new OptionsException($"{source} '{path}' is larger than 64 KiB; it must hold only the secret.");
            }

            text = File.ReadAllText(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new OptionsException($"{source} '{path}' cannot be read: {ex.Message}");
        }

        text = text.TrimEnd('\r', '\n');
        return text.Length == 0 ? throw new OptionsException($"{source} '{path}' is empty.") : text;
    }
}
