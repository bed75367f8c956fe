namespace Wormhole.Tunnel.Proxy;

/// <summary>How one proxied connection's two directions ended; <paramref name="ConnectError"/> is the errno of an upstream
/// connect that failed (-1: cancelled) before any byte moved, 0 once connected.</summary>
internal readonly record struct PumpEnd(CopyResult Up, CopyResult Down, int ConnectError = 0);

internal enum CopyResult { Eof, ReadFailed, WriteFailed }

/// <summary>Told when the upstream connect succeeds and about every chunk a pump moves (on the loop's thread: keep it
/// short).</summary>
internal interface IPumpOwner
{
    /// <summary>The upstream connect succeeded; bytes may flow from now on.</summary>
    void OnConnected();

    void OnBytes(bool upstream, int count);
}
