using System.Globalization;
using System.Net;

namespace Wormhole.Tunnel.Hosting;

/// <summary>Parses listen addresses as the reference writes them: <c>0.0.0.0:8080</c>, <c>:8082</c>, <c>[::]:8082</c>.</summary>
public static class ListenAddress
{
    public static bool TryParse(string? value, out IPEndPoint endpoint)
    {
        endpoint = new IPEndPoint(IPAddress.Any, 0);
        if (string.IsNullOrWhiteSpace(value))
        {
            return false;
        }

        var colon = value.LastIndexOf(':');
        if (colon < 0 || !int.TryParse(value.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port is < 1 or > 65535)
        {
            return false;
        }

        var host = value[..colon].Trim('[', ']');
        IPAddress? address;
        if (host.Length == 0)
        {
            address = IPAddress.Any;
        }
        else if (host == "localhost")
        {
            address = IPAddress.Loopback;
        }
        else if (!IPAddress.TryParse(host, out address))
        {
            return false;
        }

        endpoint = new IPEndPoint(address, port);
        return true;
    }
}
