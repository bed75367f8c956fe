namespace Wormhole.Tunnel.Proxy;

/// <summary>How one proxied connection's two directions ended.</summary>
internal readonly record struct PumpEnd(CopyResult Up, CopyResult Down);

internal enum CopyResult { Eof, ReadFailed, WriteFailed }

/// <summary>Told about every chunk a <see cref="SocketPump"/> moves (on the loop's thread: keep it short).</summary>
internal interface IPumpOwner
{
    void OnBytes(bool upstream, int count);
}
