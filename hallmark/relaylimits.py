"""What one source may hold on the relay's public TLS listener, and what counts as a source."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from hallmark.errors import HallmarkError


class RelayLimitsError(HallmarkError):
    """Relay limits that cannot work; the message says which."""

    code = "invalid_relay_limits"


@dataclass(frozen=True)
class RelayLimits:
    """What one source may hold on the public TLS listener.

    Agents keep one long-lived connection each (several behind one NAT address share a
    source), and ping through long quiet streams (agent.client sets gRPC keepalive), so the
    defaults leave room for them while one address cannot take every connection.
    """

    max_connections_per_source: int = 128
    idle_timeout: float = 900.0
    handshake_timeout: float = 10.0
    # Seconds a ClientHello whose server name is refused waits for its answer (0: at once).
    refused_name_delay: float = 0.0

    def __post_init__(self) -> None:
        if self.max_connections_per_source < 1:
            raise RelayLimitsError("max_connections_per_source must be 1 or more")
        if self.idle_timeout <= 0 or self.handshake_timeout <= 0:
            raise RelayLimitsError("idle_timeout and handshake_timeout must be positive")
        if self.refused_name_delay < 0:
            raise RelayLimitsError("refused_name_delay must be 0 or more")


def source_of(host: str) -> str:
    """The source a connection counts against: its IPv4 address, or its IPv6 /64.

    One IPv6 host usually holds a whole /64, so counting single v6 addresses would let it
    open the limit again from each of 2^64 addresses.
    """
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
