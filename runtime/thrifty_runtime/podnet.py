"""Pod addresses on a machine without a pod network: each pod IP's twin inside 127.0.0.0/8.

On the local cluster, KWOK gives pods IPs from their node's `podCIDR`, and the EndpointSlice
controller publishes them; but the API server refuses loopback addresses in an EndpointSlice, so
the pod CIDRs cannot be inside 127.0.0.0/8 themselves. They sit in a network that nothing on the
machine routes (10.0.0.0/8 by default), and each pod IP has a loopback twin with the same host
bits: 10.122.0.5 <-> 127.122.0.5. The fleet mirror serves a pod's engine on the twin of its IP
and the gateway, told the same network (`--loopback-pod-network`), connects to the twin of each
EndpointSlice address. Everything up to the last hop is what a cluster does; no packet ever goes
to the pod network itself. Without the setting (a real cluster) addresses are used as they are.
"""

from __future__ import annotations

import ipaddress

LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


def parse_network(text: str) -> ipaddress.IPv4Network:
    """A pod network whose addresses all have a twin: /8 or longer, IPv4."""
    network = ipaddress.IPv4Network(text, strict=True)
    if network.prefixlen < LOOPBACK.prefixlen:
        raise ValueError(f"{text}: a loopback pod network must be /8 or longer")
    return network


def loopback_twin(address: str, network: ipaddress.IPv4Network) -> str | None:
    """The loopback twin of `address`, or None when it is not inside `network`."""
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return None
    if ip not in network:
        return None
    offset = int(ip) - int(network.network_address)
    return str(LOOPBACK.network_address + offset)
