namespace Wormhole.Tunnel.Apps;

/// <summary>
/// An app as the sync protocol carries it (reference §3.2): one TCP port of one service.
/// For a local app, <see cref="Address"/> is where this side connects when a consumer comes in;
/// in a sync message it is the sender's tunnel address and local listener port.
/// </summary>
public sealed record AppDescriptor(string Name, string Address, string Peer, int OriginalPort, string TargetLabels = "");
