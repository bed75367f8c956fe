using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using k8s;
using k8s.Models;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Hosting;

namespace Wormhole.Tunnel.Kubernetes;

/// <summary>
/// Writes core/v1 Events about an object — a Service or a NetworkPolicy (what <c>kubectl describe</c> shows). The
/// same event again bumps its count instead of adding a new object. Failures are logged, never thrown: events are
/// advice, not state.
/// </summary>
public sealed partial class EventRecorder(KubeApi client, string component, TimeProvider time, ILogger logger)
{
    public const string Normal = "Normal";
    public const string Warning = "Warning";

    /// <param name="about">The object as the API returned it (its uid and namespace name the event's subject).</param>
    public async Task RecordAsync<T>(T about, string type, string reason, string message, CancellationToken cancellationToken)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        var meta = about.Metadata ?? new V1ObjectMeta();
        var ns = meta.NamespaceProperty ?? "default";
        var resource = KubeResource.For<T>();
        var apiVersion = about.ApiVersion ?? resource.ApiVersion;
        var kind = about.Kind ?? resource.Kind;
        if (message.Length > 1024)
        {
            message = message[..1021] + "...";
        }

        var key = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes($"{meta.Uid}|{type}|{reason}|{message}")))[..16];
        var name = $"{(meta.Name!.Length > 200 ? meta.Name[..200] : meta.Name)}.{key}";
        var now = time.GetUtcNow();
        try
        {
            try
            {
                await client.CreateAsync(
                    new Corev1Event
                    {
                        ApiVersion = "v1",
                        Kind = "Event",
                        Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = ns },
                        InvolvedObject = new V1ObjectReference { ApiVersion = apiVersion, Kind = kind, NamespaceProperty = ns, Name = meta.Name, Uid = meta.Uid },
                        Reason = reason,
                        Message = message,
                        Type = type,
                        Source = new V1EventSource { Component = component },
                        ReportingComponent = component,
                        FirstTimestamp = now.UtcDateTime,
                        LastTimestamp = now.UtcDateTime,
                        Count = 1,
                    },
                    cancellationToken);
            }
            catch (KubeApiException ex) when (ex.Code == 409)
            {
                var existing = await client.GetAsync<Corev1Event>(ns, name, cancellationToken);
                await client.MergePatchAsync<Corev1Event>(
                    ns,
                    name,
                    new JsonObject { ["count"] = (existing?.Count ?? 1) + 1, ["lastTimestamp"] = now.ToString("o") },
                    cancellationToken);
            }

            LogRecorded(type, reason, kind, ns, meta.Name!, LogText.Of(message, LogText.MaxReasonLength));
        }
        catch (Exception ex) when (ex is KubeApiException or HttpRequestException or TimeoutException or TaskCanceledException && !cancellationToken.IsCancellationRequested)
        {
            LogFailed(kind, ns, meta.Name!, ex.Message);
        }
    }

    [LoggerMessage(EventId = 1700, Level = LogLevel.Information, Message = "{Type} event {Reason} on {Kind} {Namespace}/{Name}: {Message}")]
    private partial void LogRecorded(string type, string reason, string kind, string @namespace, string name, string message);

    [LoggerMessage(EventId = 1701, Level = LogLevel.Warning, Message = "Could not record an event on {Kind} {Namespace}/{Name}: {Reason}")]
    private partial void LogFailed(string kind, string @namespace, string name, string reason);
}
