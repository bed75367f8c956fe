using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace Wormhole.Tunnel.Pairing;

/// <summary>
/// Spoke addresses from the hub's subnet (<c>--wg-internal-host</c>/<c>--wg-subnet-mask</c>): the lowest free host address,
/// never the network, broadcast or hub address; freed addresses come back. Pure: the caller passes the addresses in use.
/// </summary>
public sealed class AddressPool
{
    private readonly uint _network;
    private readonly uint _broadcast;
    private readonly uint _hub;

    public AddressPool(IPAddress hubAddress, int prefixLength)
    {
        if (hubAddress.AddressFamily != AddressFamily.InterNetwork)
        {
            throw new ArgumentException("The hub tunnel address must be an IPv4 address.", nameof(hubAddress));
        }

        if (prefixLength is < 8 or > 30)
        {
            throw new ArgumentOutOfRangeException(nameof(prefixLength), prefixLength, "The tunnel subnet mask must be between 8 and 30.");
        }

        _hub = ToUInt(hubAddress);
        var mask = prefixLength == 0 ? 0u : uint.MaxValue << (32 - prefixLength);
        _network = _hub & mask;
        _broadcast = _network | ~mask;
        if (_hub == _network || _hub == _broadcast)
        {
            throw new ArgumentException($"The hub tunnel address {hubAddress} is the network or broadcast address of /{prefixLength}.", nameof(hubAddress));
        }

        HubAddress = hubAddress;
        PrefixLength = prefixLength;
    }

    public IPAddress HubAddress { get; }

    public int PrefixLength { get; }

    /// <summary>The pool's subnet (where the spokes send from through the tunnel).</summary>
    public System.Net.IPNetwork Network => new(FromUInt(_network), PrefixLength);

    /// <summary>How many spokes the pool can hold.</summary>
    public long Capacity => (long)_broadcast - _network - 2;

    public bool Contains(IPAddress address) =>
        address.AddressFamily == AddressFamily.InterNetwork && ToUInt(address) is var a && a > _network && a < _broadcast && a != _hub;

    /// <summary>The lowest free address, or null when every address is in use.</summary>
    public IPAddress? Allocate(IEnumerable<IPAddress> inUse)
    {
        var used = new HashSet<uint>();
        foreach (var address in inUse)
        {
            if (address.AddressFamily == AddressFamily.InterNetwork)
            {
                used.Add(ToUInt(address));
            }
        }

        for (var candidate = _network + 1; candidate < _broadcast; candidate++)
        {
            if (candidate != _hub && !used.Contains(candidate))
            {
                return FromUInt(candidate);
            }
        }

        return null;
    }

    private static uint ToUInt(IPAddress address)
    {
        Span<byte> bytes = stackalloc byte[4];
        address.TryWriteBytes(bytes, out _);
        return BinaryPrimitives.ReadUInt32BigEndian(bytes);
    }

    private static IPAddress FromUInt(uint value)
    {
        var bytes = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(bytes, value);
        return new IPAddress(bytes);
    }
}
