"""Which addresses and names the server trusts: loopback binds, and the Host header check that
stops DNS rebinding.

A web page can make a visitor's browser send requests to 127.0.0.1 under a name the page's owner
controls (DNS rebinding); the browser then lets the page read the answers as its own. So a server
without tokens answers a request that came in on a loopback address only when its Host header
names loopback itself (`localhost`, a 127.0.0.0/8 address, `[::1]`, any port) or a host listed in
`PROMPTCAST_ALLOWED_HOSTS`; when that list is set, it applies to every request.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from promptcast.errors import ConfigurationError

__all__ = ["HostPolicy", "host_name", "is_loopback", "is_loopback_name"]

ALLOWED_HOSTS_VAR = "PROMPTCAST_ALLOWED_HOSTS"

# a DNS name (letters, digits, '-', '_', dots; no trailing dot) or a bracketed IPv6 literal, then
# an optional port
_HOST = re.compile(
    r"(?P<name>\[[0-9a-f:.]{2,45}\]|[a-z0-9_](?:[a-z0-9_.-]{0,251}[a-z0-9_])?)(?::[0-9]{1,5})?",
    re.ASCII,
)


def _loopback_ip(text: str) -> bool | None:
    """Whether `text` is a loopback IP address (IPv4-mapped IPv6 included); `None` when it is not
    an IP address at all."""
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server reachable from this machine only."""
    return host == "localhost" or bool(_loopback_ip(host))


def host_name(value: str) -> str | None:
    """The host of a `Host` header value, lower case and without its port (IPv6 keeps its
    brackets); `None` when the value is not a well-formed host."""
    match = _HOST.fullmatch(value.strip().lower())
    if match is None:
        return None
    name = match["name"]
    if name.startswith("["):
        try:
            ipaddress.IPv6Address(name[1:-1])
        except ValueError:
            return None
    return name


def is_loopback_name(name: str) -> bool:
    """`localhost` or a loopback IP literal: names no one else's DNS can point elsewhere."""
    return name == "localhost" or bool(_loopback_ip(name))  # not `127.0.0.1.nip.io`


@dataclass(frozen=True)
class HostPolicy:
    """The names a server answers to besides loopback's (`allowed`, from
    `PROMPTCAST_ALLOWED_HOSTS`), and when it checks them."""

    allowed: frozenset[str] = frozenset()

    @classmethod
    def of(cls, hosts: Iterable[str]) -> HostPolicy:
        """A policy for `hosts` (`name` or `name:port`; the port is ignored); a malformed entry is
        a `ConfigurationError` naming the variable."""
        names = set()
        for entry in hosts:
            name = host_name(entry)
            if name is None:
                raise ConfigurationError(
                    f"{ALLOWED_HOSTS_VAR} must list host names such as api.example.com, "
                    f"comma-separated (no scheme or path), got {entry[:100]!r}",
                    env_var=ALLOWED_HOSTS_VAR,
                )
            names.add(name)
        return cls(frozenset(names))

    def applies(self, server: object, secured: bool) -> bool:
        """Whether to check the Host of a request that arrived on local address `server`
        (the ASGI scope's `server`): always when hosts are listed; without tokens, for any
        request not known to have come in on a public address."""
        if self.allowed:
            return True
        if secured:
            return False
        if isinstance(server, (tuple, list)) and server and isinstance(server[0], str):
            loopback = _loopback_ip(server[0])
            return loopback is None or loopback  # a unix socket or a name: local, so checked
        return True

    def allows(self, value: str | None) -> bool:
        """Whether a request with this `Host` header (`None`: none sent) may be answered."""
        name = host_name(value) if value is not None else None
        return name is not None and (is_loopback_name(name) or name in self.allowed)
