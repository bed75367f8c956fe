namespace Wormhole.Tunnel.Chart.Tests.Infrastructure;

/// <summary>Where things are in the repository, and the executables built in the same configuration as this assembly.</summary>
public static class Repository
{
    private static readonly Lazy<DirectoryInfo> RootDirectory = new(() =>
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Wormhole.Tunnel.sln")))
        {
            dir = dir.Parent;
        }

        return dir ?? throw new InvalidOperationException("Cannot find the repository root (Wormhole.Tunnel.sln) above " + AppContext.BaseDirectory);
    });

    public static string Root => RootDirectory.Value.FullName;

    public static string Chart => Path.Combine(Root, "helm");

    public static string SchemaValidator => Path.Combine(Root, "tests", "Wormhole.Tunnel.Chart.Tests", "schema");
}

/// <summary>The hub and spoke executables next to this build (bin/&lt;Configuration&gt;/net10.0), like the e2e suite finds them.</summary>
public static class Executables
{
    private static readonly Lazy<(string Server, string Client)> Paths = new(() =>
    {
        var baseDir = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var framework = baseDir.Name;             // net10.0
        var configuration = baseDir.Parent!.Name; // Debug / Release

        string Find(string project, string name)
        {
            var path = Path.Combine(Repository.Root, project, "bin", configuration, framework, name);
            return File.Exists(path) ? path : throw new FileNotFoundException($"Build the solution first: {path} is missing.");
        }

        return (Find("src/Server", "wormhole-server"), Find("src/Client", "wormhole-client"));
    });

    public static string Server => Paths.Value.Server;

    public static string Client => Paths.Value.Client;

    /// <summary>The executable a rendered Deployment of this side runs.</summary>
    public static string For(string role) => role == "server" ? Server : Client;
}
