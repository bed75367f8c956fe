using System.Text.Json.Nodes;

namespace Wormhole.Tunnel.Chart.Tests.Infrastructure;

/// <summary>
/// The chart's rendered container as podman runs it: its security context and volumes turned into <c>podman run</c>
/// options one by one, and a field the translation does not know fails the test (a chart change must be carried over
/// here, not silently dropped).
/// </summary>
public static class ChartContainer
{
    /// <summary>
    /// <c>podman run</c> options for the rendered pod's security context, volumes and plain environment. PVCs become
    /// the named volume <paramref name="storageVolume"/>; the tun hostPath becomes <c>--device</c>.
    /// </summary>
    public static List<string> RunOptions(Manifests m, string storageVolume)
    {
        var options = new List<string>();
        var pod = m.PodSpec["securityContext"]!.AsObject();
        foreach (var (key, value) in pod)
        {
            switch (key)
            {
                case "runAsUser":
                    options.AddRange(["--user", $"{value}:{pod["runAsGroup"]?.ToString() ?? "0"}"]);
                    break;
                case "runAsGroup" or "runAsNonRoot":
                    break; // with runAsUser; runAsNonRoot false asks for nothing
                case "seccompProfile":
                    ((string)value!["type"]!).Should().Be("RuntimeDefault", "podman's default seccomp profile is the runtime default");
                    break;
                default:
                    throw new NotSupportedException($"pod securityContext.{key} has no podman translation here");
            }
        }

        var container = m.Container["securityContext"]!.AsObject();
        foreach (var (key, value) in container)
        {
            switch (key)
            {
                case "privileged":
                    value!.GetValue<bool>().Should().BeFalse();
                    break;
                case "allowPrivilegeEscalation" when !value!.GetValue<bool>():
                    options.AddRange(["--security-opt", "no-new-privileges"]);
                    break;
                case "readOnlyRootFilesystem" when value!.GetValue<bool>():
                    // Kubernetes adds no writable tmpfs of its own; podman would (/tmp, /run, /var/tmp) unless told not to.
                    options.AddRange(["--read-only", "--read-only-tmpfs=false"]);
                    break;
                case "capabilities":
                    foreach (var drop in value!["drop"]!.AsArray())
                    {
                        options.AddRange(["--cap-drop", (string)drop!]);
                    }

                    foreach (var add in value["add"]!.AsArray())
                    {
                        options.AddRange(["--cap-add", (string)add!]);
                    }

                    break;
                default:
                    throw new NotSupportedException($"container securityContext.{key}={value} has no podman translation here");
            }
        }

        var volumes = m.PodSpec["volumes"]!.AsArray().ToDictionary(v => (string)v!["name"]!, v => v!.AsObject());
        foreach (var mount in m.Container["volumeMounts"]!.AsArray())
        {
            var path = (string)mount!["mountPath"]!;
            var volume = volumes[(string)mount["name"]!];
            if (volume["persistentVolumeClaim"] is not null)
            {
                options.AddRange(["-v", $"{storageVolume}:{path}"]);
            }
            else if (volume["emptyDir"] is { } emptyDir)
            {
                options.AddRange(["--mount", (string?)emptyDir["medium"] == "Memory" ? $"type=tmpfs,destination={path},tmpfs-size={Size((string)emptyDir["sizeLimit"]!)}" : $"type=tmpfs,destination={path}"]);
            }
            else if (volume["hostPath"] is { } hostPath && (string?)hostPath["type"] == "CharDevice")
            {
                options.AddRange(["--device", $"{hostPath["path"]}:{path}"]);
            }
            else
            {
                throw new NotSupportedException($"volume {volume.ToJsonString()} has no podman translation here");
            }
        }

        foreach (var variable in m.Container["env"]!.AsArray())
        {
            var name = (string)variable!["name"]!;
            if (variable["value"] is { } plain)
            {
                options.AddRange(["-e", $"{name}={plain}"]);
            }
            else if (variable["valueFrom"]!["secretKeyRef"] is { } secretRef)
            {
                var data = m.Get("Secret", (string)secretRef["name"]!)["stringData"]!.AsObject();
                if (data[(string)secretRef["key"]!] is { } secret)
                {
                    options.AddRange(["-e", $"{name}={secret}"]);
                }
            }
        }

        return options;
    }

    /// <summary>A Kubernetes quantity (1Mi) as podman's tmpfs size (1m).</summary>
    private static string Size(string quantity) => quantity.EndsWith("Mi", StringComparison.Ordinal) ? quantity[..^2] + "m" : quantity;
}
