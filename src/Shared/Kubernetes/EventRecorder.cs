using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Hosting;

namespace Wormhole.Tunnel.Kubernetes;

/// <summary>
/// Writes core/v1 Events about an object — a Service or a NetworkPolicy (what <c>kubectl describe</c> shows). The
/// same event again bumps its count instead of adding a new object. Failures are logged, never thrown: events are
/// advice, not state.
/// </summary>
public sealed partial class EventRecorder(IKubernetesClient client, string component, TimeProvider time, ILogger logger)
{
    public const string Normal = "Normal";
    public const string Warning = "Warning";

    /// <param name="about">The object as the API returned it (its uid and namespace name the event's subject).</param>
    public async Task RecordAsync<T>(T about, string type, string reason, string message, CancellationToken cancellationToken)
        where T : IKubeObject
    {
        var meta = about.Metadata;
        var ns = meta.Namespace ?? "default";
        var resource = KubeResource.For<T>();
        var apiVersion = about.ApiVersion ?? (resource.Group.Length == 0 ? resource.Version : $"{resource.Group}/{resource.Version}");
        var kind = about.Kind ?? typeof(T).Name;
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
                        InvolvedObject = new ObjectReference { ApiVersion = apiVersion, Kind = kind, Namespace = ns, Name = meta.Name, Uid = meta.Uid },
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
