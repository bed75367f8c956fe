using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;

namespace Wormhole.Tunnel.Kubernetes;

/// <summary>
/// Writes core/v1 Events about a Service (what <c>kubectl describe svc</c> shows). The same event again bumps its
/// count instead of adding a new object. Failures are logged, never thrown: events are advice, not state.
/// </summary>
public sealed partial class EventRecorder(IKubernetesClient client, string component, TimeProvider time, ILogger<EventRecorder> logger)
{
    public const string Normal = "Normal";
    public const string Warning = "Warning";

    public async Task RecordAsync(Service about, string type, string reason, string message, CancellationToken cancellationToken)
    {
        var meta = about.Metadata;
        var ns = meta.Namespace ?? "default";
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
                    new KubeEvent
                    {
                        Metadata = new ObjectMeta { Name = name, Namespace = ns },
                        InvolvedObject = new ObjectReference { ApiVersion = "v1", Kind = "Service", Namespace = ns, Name = meta.Name, Uid = meta.Uid },
                        Reason = reason,
                        Message = message,
                        Type = type,
                        Source = new EventSource { Component = component },
                        ReportingComponent = component,
                        FirstTimestamp = now,
                        LastTimestamp = now,
                        Count = 1,
                    },
                    cancellationToken);
            }
            catch (KubeApiException ex) when (ex.Code == 409)
            {
                var existing = await client.GetAsync<KubeEvent>(ns, name, cancellationToken);
                await client.MergePatchAsync<KubeEvent>(
                    ns,
                    name,
                    new JsonObject { ["count"] = (existing?.Count ?? 1) + 1, ["lastTimestamp"] = now.ToString("o") },
                    cancellationToken);
            }

            LogRecorded(type, reason, ns, meta.Name!, message);
        }
        catch (Exception ex) when (ex is KubeApiException or HttpRequestException or TimeoutException or TaskCanceledException && !cancellationToken.IsCancellationRequested)
        {
            LogFailed(ns, meta.Name!, ex.Message);
        }
    }

    [LoggerMessage(EventId = 1700, Level = LogLevel.Information, Message = "{Type} event {Reason} on Service {Namespace}/{Name}: {Message}")]
    private partial void LogRecorded(string type, string reason, string @namespace, string name, string message);

    [LoggerMessage(EventId = 1701, Level = LogLevel.Warning, Message = "Could not record an event on Service {Namespace}/{Name}: {Reason}")]
    private partial void LogFailed(string @namespace, string name, string reason);
}
