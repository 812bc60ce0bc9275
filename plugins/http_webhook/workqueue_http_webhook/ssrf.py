"""Which network addresses a webhook may reach (server-side request forgery guard).

The decision is made on IP addresses, at connect time, by :mod:`workqueue_http_webhook.transport`:
a host name is resolved once, every address it resolves to is checked, and the connection goes
to a checked address. An address is refused when it is not a public unicast address: loopback,
private, link-local, shared (CGNAT), multicast, unspecified, reserved, documentation and
benchmarking ranges, and the cloud metadata endpoints; IPv6 forms that embed an IPv4 address
(v4-mapped, NAT64, 6to4) are judged by that IPv4 address.

``WORKQUEUE_WEBHOOK_ALLOW`` (comma-separated host names, IP addresses and CIDR networks) opens
exceptions. A listed host name admits whatever it resolves to; a listed address or network
admits those addresses. Metadata endpoints are admitted only when their exact address is listed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from workqueue import PermanentError

__all__ = [
    "ALLOW_VARIABLE",
    "DestinationPolicy",
    "DestinationRefused",
    "IPAddress",
    "blocked_reason",
    "parse_ip_literal",
]

ALLOW_VARIABLE = "WORKQUEUE_WEBHOOK_ALLOW"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class DestinationRefused(PermanentError):
    """Raised when a webhook URL leads to an address the SSRF guard does not allow."""


def _networks(*entries: tuple[str, str]) -> tuple[tuple[_Network, str], ...]:
    return tuple((ipaddress.ip_network(cidr), reason) for cidr, reason in entries)


_V4_BLOCKED = _networks(
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignment"),
    ("192.0.2.0/24", "documentation"),
    ("192.31.196.0/24", "reserved (AS112)"),
    ("192.52.193.0/24", "reserved (AMT)"),
    ("192.88.99.0/24", "reserved (6to4 relay)"),
    ("192.168.0.0/16", "private"),
    ("192.175.48.0/24", "reserved (AS112)"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
)
_V6_BLOCKED = _networks(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/23", "IETF special-purpose (Teredo, ORCHID, benchmarking)"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "reserved (SRv6)"),
    ("fc00::/7", "unique local (private)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")

#: Cloud instance metadata and host services: AWS (IPv4, IPv6, ECS, time sync), GCP, Azure
#: (IMDS and WireServer), Alibaba, Oracle, DigitalOcean, OpenStack.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",
        "169.254.170.2",
        "169.254.169.123",
        "168.63.129.16",
        "100.100.100.200",
        "192.0.0.192",
        "fd00:ec2::254",
        "fd00:ec2::23",
    )
)

_METADATA = "cloud metadata"
_NUMERIC_LABEL = re.compile(r"(?:0[xX][0-9A-Fa-f]*|[0-9]+)")


def _ipv4_number(part: str) -> int | None:
    """One part of a loose IPv4 literal: decimal, ``0x`` hexadecimal or ``0`` octal."""
    if part[:2] in ("0x", "0X"):
        return int(part[2:] or "0", 16) if re.fullmatch(r"[0-9A-Fa-f]*", part[2:]) else None
    if len(part) > 1 and part.startswith("0"):
        return int(part[1:], 8) if re.fullmatch(r"[0-7]+", part[1:]) else None
    return int(part) if part.isdigit() and part.isascii() else None


def _loose_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """Parse the IPv4 forms that resolvers and browsers accept (WHATWG URL rules).

    ``2130706433``, ``0x7f.1``, ``0177.0.0.1`` and ``127.1`` all mean 127.0.0.1. Returns None when
    ``host`` does not end in a number (it is a name); raises ``ValueError`` when it does but is
    not a valid address (``1.2.3.4.5``, ``999.1.1.1``).
    """
    parts = host.split(".")
    if parts and parts[-1] == "" and len(parts) > 1:
        parts.pop()
    if not parts or not _NUMERIC_LABEL.fullmatch(parts[-1]):
        return None
    numbers = [_ipv4_number(part) if part else None for part in parts]
    if len(parts) > 4 or any(number is None for number in numbers):
        raise ValueError("not a valid IP address")
    values = [number for number in numbers if number is not None]
    *leading, last = values
    if any(value > 255 for value in leading) or last >= 256 ** (5 - len(values)):
        raise ValueError("not a valid IP address")
    total = last
    for index, value in enumerate(leading):
        total += value << (8 * (3 - index))
    return ipaddress.IPv4Address(total)


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address written in ``host`` (any IPv4 or IPv6 literal form), or None for a name."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(bare.replace("%25", "%"))
    except ValueError:
        pass
    return _loose_ipv4(bare)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    return None


def effective_address(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address stands for (v4-mapped, NAT64, 6to4), else itself."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return embedded
    return address


def blocked_reason(address: IPAddress) -> str | None:
    """Why ``address`` is not a public unicast destination, or None if it is one."""
    target = effective_address(address)
    if target in METADATA_ADDRESSES or address in METADATA_ADDRESSES:
        return _METADATA
    if isinstance(target, ipaddress.IPv4Address):
        table: Iterable[tuple[_Network, str]] = _V4_BLOCKED
    else:
        table = _V6_BLOCKED
    for network, reason in table:
        if target in network:
            return reason
    if isinstance(target, ipaddress.IPv6Address):
        if target in _IPV4_COMPATIBLE:
            return "reserved (IPv4-compatible)"
        if target not in _V6_GLOBAL_UNICAST:
            return "reserved (outside 2000::/3)"
    return None


@dataclass(frozen=True, slots=True)
class DestinationPolicy:
    """The SSRF rules of one worker: the blocked ranges, minus the allow-list's exceptions."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[_Network, ...] = ()
    exact: frozenset[IPAddress] = field(default_factory=frozenset)

    @classmethod
    def from_allow_list(cls, value: str | None) -> DestinationPolicy:
        """Parse ``WORKQUEUE_WEBHOOK_ALLOW``; raise ``ValueError`` naming a bad entry's position."""
        hosts: set[str] = set()
        networks: list[_Network] = []
        exact: set[IPAddress] = set()
        for position, raw in enumerate((value or "").split(","), start=1):
            entry = raw.strip().lower()
            if not entry:
                continue
            try:
                network = ipaddress.ip_network(entry.strip("[]"), strict=False)
            except ValueError:
                if not re.fullmatch(r"[a-z0-9_]([a-z0-9_.-]{0,251}[a-z0-9_])?\.?", entry):
                    raise ValueError(
                        f"{ALLOW_VARIABLE}: entry {position} is not a host name, IP address "
                        "or CIDR network"
                    ) from None
                hosts.add(entry.rstrip("."))
                continue
            networks.append(network)
            if network.num_addresses == 1:
                exact.add(network.network_address)
        return cls(frozenset(hosts), tuple(networks), frozenset(exact))

    def host_allowed(self, host: str) -> bool:
        """Whether the URL's host name itself is on the allow-list."""
        return host.lower().rstrip(".") in self.hosts

    def check(self, address: IPAddress, *, host_allowed: bool = False) -> None:
        """Raise :class:`DestinationRefused` unless a connection to ``address`` is allowed."""
        reason = blocked_reason(address)
        if reason is None:
            return
        target = effective_address(address)
        if reason == _METADATA:
            if address in self.exact or target in self.exact:
                return
        elif host_allowed or any(
            candidate.version == network.version and candidate in network
            for network in self.networks
            for candidate in {address, target}
        ):
            return
        raise DestinationRefused(
            f"destination not allowed: the URL leads to a {reason} address; "
            f"list it in {ALLOW_VARIABLE} to permit it"
        )
