using System.Text.RegularExpressions;
using Wormhole.Tunnel.Chart.Tests.Infrastructure;

namespace Wormhole.Tunnel.Chart.Tests;

/// <summary>
/// The Dockerfiles' publish stage, replayed without Docker: its COPY lines (minus the .dockerignore) into a temporary
/// directory, then its RUN lines there — <c>dotnet restore</c> as written, and its <c>dotnet publish</c> as
/// <c>dotnet build</c> with the same arguments (the NativeAOT compile of these same projects is what scripts/publish-aot
/// does for CI, and the images scripts/images builds carry its executables; ContainerTests runs them). So the build
/// context holds everything the projects need, the executable lands where the later stages copy it from, and it starts.
/// </summary>
[Trait("Category", "Slow")]
public sealed partial class ImagePublishTests
{
    [Theory]
    [InlineData("server", "wormhole-server", "Server")]
    [InlineData("client", "wormhole-client", "Client")]
    public async Task The_dockerfile_publish_stage_builds_the_executable_the_image_runs(string role, string executable, string project)
    {
        var dockerfile = Path.Combine(Repository.Root, "docker", $"{role}.Dockerfile");
        var stages = Dockerfile.Parse(await File.ReadAllTextAsync(dockerfile));
        var publish = stages.Single(s => s.Name == "publish");
        var ignore = await File.ReadAllLinesAsync(dockerfile + ".dockerignore");
        using var root = new TempDirectory("wh-image-");

        await Dockerfile.ReplayAsync(publish, ignore, root.Path);

        // The chain of stages: publish (or prebuilt) -> executable -> rootfs -> the final image's ENTRYPOINT.
        var output = $"/out/{role}/{executable}";
        publish.Instructions.Last(i => i.Keyword == "RUN").Arguments.Should().Be($"dotnet publish src/{project}/Wormhole.Tunnel.{project}.csproj -c Release -r linux-x64 --no-restore -o /out/{role}");
        stages.Single(s => s.Name == "prebuilt").Instructions.Single(i => i.Keyword == "COPY").Arguments.Should().Be($"prebuilt/{role}/{executable} {output}", "scripts/images puts the executable there");
        stages.Single(s => s.Name == "executable").Image.Should().Be("${EXECUTABLE}");
        var rootfs = stages.Single(s => s.Name == "rootfs");
        rootfs.Instructions.Should().Contain(new Instruction("COPY", $"--from=executable {output} /usr/local/bin/{executable}"));
        rootfs.Instructions.Should().Contain(new Instruction("RUN", $"sh /rootfs.sh /rootfs /usr/local/bin/{executable}"));
        var final = stages[^1];
        final.Image.Should().Be("scratch");
        final.Instructions.Should().Contain(new Instruction("COPY", "--from=rootfs /rootfs/ /"));
        final.Instructions.Single(i => i.Keyword == "ENTRYPOINT").Arguments.Should().Be($"[\"/usr/local/bin/{executable}\"]");

        // NativeAOT comes from the project itself (nothing in the Dockerfile turns it off).
        var workdir = publish.Instructions.Single(i => i.Keyword == "WORKDIR").Arguments.TrimStart('/'); // the stage's /src
        var aot = await Tools.RunAsync("dotnet", ["msbuild", Path.Combine(root.Path, workdir, "src", project, $"Wormhole.Tunnel.{project}.csproj"), "-getProperty:PublishAot", "-p:RuntimeIdentifier=linux-x64"], Dockerfile.Environment);
        aot.StandardOutput.Trim().Should().Be("true", aot.ToString());

        var built = Path.Combine(root.Path, "out", role, executable);
        File.Exists(built).Should().BeTrue($"the stage should have produced {built}");
        var help = await Tools.RunAsync(built, ["--help"], clearEnvironment: true);
        help.ExitCode.Should().Be(0, help.ToString());
        help.StandardOutput.Should().Contain("--kubernetes-labels").And.Contain("--check");
    }

    public sealed record Instruction(string Keyword, string Arguments);

    public sealed record Stage(string Image, string? Name, IReadOnlyList<Instruction> Instructions);

    /// <summary>Just enough of a Dockerfile interpreter for a .NET build stage: WORKDIR, COPY from the context, RUN dotnet.</summary>
    public static partial class Dockerfile
    {
        public static IReadOnlyList<Stage> Parse(string text)
        {
            var stages = new List<(string Image, string? Name, List<Instruction> Instructions)>();
            var logical = LineContinuation().Replace(text, " ");
            foreach (var raw in logical.Split('\n'))
            {
                var line = raw.Trim();
                if (line.Length == 0 || line.StartsWith('#'))
                {
                    continue;
                }

                var space = line.IndexOf(' ', StringComparison.Ordinal);
                var keyword = line[..space].ToUpperInvariant();
                var arguments = Whitespace().Replace(line[(space + 1)..].Trim(), " ");
                if (keyword == "FROM")
                {
                    var parts = arguments.Split(' ');
                    stages.Add((parts[0], parts.Length == 3 && parts[1].Equals("AS", StringComparison.OrdinalIgnoreCase) ? parts[2] : null, []));
                }
                else if (stages.Count == 0)
                {
                    keyword.Should().Be("ARG", "only ARGs (build arguments for FROM lines) come before the first stage");
                }
                else
                {
                    stages[^1].Instructions.Add(new Instruction(keyword, arguments));
                }
            }

            return stages.Select(s => new Stage(s.Image, s.Name, s.Instructions)).ToList();
        }

        /// <summary>Runs a build stage with container paths mapped under <paramref name="root"/>.</summary>
        public static async Task ReplayAsync(Stage stage, IEnumerable<string> dockerignore, string root)
        {
            var ignored = dockerignore.Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith('#')).ToList();
            var workdir = "/";
            string Map(string containerPath) => Path.Combine(root, containerPath.TrimStart('/'));
            foreach (var instruction in stage.Instructions)
            {
                switch (instruction.Keyword)
                {
                    case "WORKDIR":
                        workdir = instruction.Arguments.StartsWith('/') ? instruction.Arguments : $"{workdir.TrimEnd('/')}/{instruction.Arguments}";
                        Directory.CreateDirectory(Map(workdir));
                        break;
                    case "COPY":
                        var parts = instruction.Arguments.Split(' ');
                        parts.Should().NotContain(p => p.StartsWith("--", StringComparison.Ordinal), "the build stage copies from the context only");
                        var dest = parts[^1].StartsWith('/') ? parts[^1] : $"{workdir.TrimEnd('/')}/{parts[^1]}";
                        foreach (var source in parts[..^1])
                        {
                            Copy(Path.Combine(Repository.Root, source), Map(dest), dest.EndsWith('/') || parts.Length > 2, ignored, source.TrimEnd('/'));
                        }

                        break;
                    case "RUN" when instruction.Arguments.StartsWith("apt-get update", StringComparison.Ordinal):
                        // The SDK image lacks what the native compile needs; scripts/test installs the same here.
                        instruction.Arguments.Should().Contain("clang").And.Contain("zlib1g-dev");
                        break;
                    case "RUN":
                        var words = instruction.Arguments.Split(' ');
                        words[0].Should().Be("dotnet", "the build stage only runs the .NET SDK (after apt-get)");
                        var args = words[1..].Select(w => w.StartsWith('/') ? Map(w) : w).ToList();
                        if (args[0] == "publish")
                        {
                            args[0] = "build"; // the same projects and arguments, without the native compile (see the class)
                        }

                        var result = await Tools.RunAsync("dotnet", args, Environment, workingDirectory: Map(workdir), timeout: TimeSpan.FromMinutes(8));
                        result.ExitCode.Should().Be(0, $"RUN {instruction.Arguments} should succeed: {result}");
                        break;
                    case "ARG" or "ENV" or "LABEL":
                        break;
                    default:
                        throw new NotSupportedException($"The replay does not know {instruction.Keyword} in the build stage; teach it or keep the stage simple.");
                }
            }
        }

        /// <summary>No lingering MSBuild or compiler servers holding our output pipes; same commands, same results.</summary>
        public static readonly Dictionary<string, string?> Environment = new()
        {
            ["MSBUILDDISABLENODEREUSE"] = "1",
            ["DOTNET_CLI_USE_MSBUILD_SERVER"] = "0",
            ["UseSharedCompilation"] = "false",
            ["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1",
            ["DOTNET_NOLOGO"] = "1",
        };

        private static void Copy(string source, string dest, bool intoDirectory, IReadOnlyList<string> ignored, string contextPath)
        {
            if (IsIgnored(contextPath, ignored))
            {
                return;
            }

            if (File.Exists(source))
            {
                var target = intoDirectory ? Path.Combine(dest, Path.GetFileName(source)) : dest;
                Directory.CreateDirectory(Path.GetDirectoryName(target)!);
                File.Copy(source, target, overwrite: true);
                return;
            }

            Directory.Exists(source).Should().BeTrue($"COPY source {contextPath} should exist in the build context");
            Directory.CreateDirectory(dest);
            foreach (var entry in new DirectoryInfo(source).EnumerateFileSystemInfos())
            {
                Copy(entry.FullName, Path.Combine(dest, entry.Name), intoDirectory: false, ignored, $"{contextPath}/{entry.Name}");
            }
        }

        /// <summary>The .dockerignore forms used here: <c>**/name</c> (any depth) and <c>name</c> (top level).</summary>
        private static bool IsIgnored(string contextPath, IReadOnlyList<string> ignored)
        {
            var segments = contextPath.Split('/');
            foreach (var pattern in ignored)
            {
                pattern.Should().MatchRegex(@"^(\*\*/)?[A-Za-z0-9._-]+$", "the replay understands only '**/name' and 'name' ignore patterns");
                if (pattern.StartsWith("**/", StringComparison.Ordinal) ? segments.Contains(pattern[3..]) : segments[0] == pattern)
                {
                    return true;
                }
            }

            return false;
        }

        [GeneratedRegex(@"\\\r?\n")]
        private static partial Regex LineContinuation();

        [GeneratedRegex(@"\s+")]
        private static partial Regex Whitespace();
    }
}
