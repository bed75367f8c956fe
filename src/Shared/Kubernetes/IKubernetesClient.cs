namespace Wormhole.Tunnel.Kubernetes;

/// <summary>An error answer of the apiserver, with its Status (code, reason, message).</summary>
public sealed class KubeApiException(int code, string? reason, string message) : Exception(message)
{
    public int Code { get; } = code;

    public string? Reason { get; } = reason;
}

/// <summary>
/// The Kubernetes API as Wormhole.Tunnel uses it: Services, NetworkPolicies and Events. One small typed REST client
/// implements it (KubernetesClient cannot be restored here); tests run it against an apiserver emulator.
/// </summary>
public interface IKubernetesClient
{
    /// <param name="ns">Namespace, or null for all namespaces.</param>
    Task<KubeList<T>> ListAsync<T>(string? ns, string? labelSelector, CancellationToken cancellationToken)
        where T : IKubeObject;

    /// <summary>Streams watch events from <paramref name="resourceVersion"/> (with bookmarks) until the server ends the stream or the token is cancelled.</summary>
    IAsyncEnumerable<WatchEvent<T>> WatchAsync<T>(string? ns, string? labelSelector, string resourceVersion, CancellationToken cancellationToken)
        where T : IKubeObject;

    /// <summary>The object, or null when it does not exist (404).</summary>
    Task<T?> GetAsync<T>(string ns, string name, CancellationToken cancellationToken)
        where T : class, IKubeObject;

    Task<T> CreateAsync<T>(T value, CancellationToken cancellationToken)
        where T : IKubeObject;

    /// <summary>PUT with the object's metadata.resourceVersion (409 Conflict when stale).</summary>
    Task<T> ReplaceAsync<T>(T value, CancellationToken cancellationToken)
        where T : IKubeObject;

    /// <summary>JSON merge patch (application/merge-patch+json).</summary>
    Task<T> MergePatchAsync<T>(string ns, string name, object patch, CancellationToken cancellationToken)
        where T : IKubeObject;

    /// <summary>Deletes; false when it did not exist.</summary>
    Task<bool> DeleteAsync<T>(string ns, string name, CancellationToken cancellationToken)
        where T : IKubeObject;
}
