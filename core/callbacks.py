"""Signed callbacks (docs/callbacks.md): which URLs an agent may name, and the event a status
change becomes. No request forgery: a callback only goes to a host the agent's admin allowed.

The rules, checked at submit (``check_callback_url``) and again at delivery (the URL against
the allow-list of the time, then ``check_resolved``):
- https, or http only to a loopback host that is allow-listed;
- no userinfo; the host equals an allow-listed host exactly (case-insensitive), on any port
  for a ``HOST`` entry, on that port only for a ``HOST:PORT`` entry;
- a private, loopback, link-local or otherwise non-public address only when that address
  itself (an IP literal) or ``localhost`` is allow-listed: a host *name* that resolves to such
  an address at delivery time is refused (DNS rebinding). An IPv6 address embedding an IPv4
  one (mapped, compatible, NAT64, 6to4, Teredo) is judged by the IPv4 one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from core.errors import ValidationFailed

MAX_CALLBACK_URL = 2048
EVENT_TYPE = "stepup-event+jwt"
_LOOPBACK_NAMES = frozenset({"localhost"})


Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# IPv6 ranges that carry an IPv4 address in their last 32 bits (RFC 6052 well-known NAT64
# prefix; the deprecated IPv4-compatible form ::a.b.c.d, which excludes :: and ::1).
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_V4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # SIIT, RFC 2765
# Never public whatever they embed: local-use NAT64 (RFC 8215: its IPv4 part sits where the
# operator's prefix length puts it) and the deprecated site-local fec0::/10.
_NEVER_PUBLIC = (ipaddress.IPv6Network("64:ff9b:1::/48"), ipaddress.IPv6Network("fec0::/10"))


@dataclass(frozen=True, slots=True)
class HostEntry:
    """One allow-list entry: a host (lower-case name, or canonical IP literal) and, when
    given, the one port it allows (None: any port)."""

    host: str
    port: int | None = None

    def __str__(self) -> str:
        if self.port is None:
            return self.host
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"{shown}:{self.port}"

    def allows(self, host: str, port: int) -> bool:
        return self.host == host and self.port in (None, port)


def _bad_entry(entry: str, why: str = "a host name or IP address, with an optional :PORT") -> str:
    return f"callback host {entry!r}: {why}"


def parse_host_entry(entry: str) -> HostEntry:
    """``HOST``, ``HOST:PORT``, ``IPV6`` or ``[IPV6]:PORT`` (``[IPV6]`` alone: any port)."""
    value = entry.strip().lower()
    port_text: str | None = None
    if value.startswith("["):
        inside, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValidationFailed(_bad_entry(entry))
        if _ip(inside) is None or ":" not in inside:
            raise ValidationFailed(_bad_entry(entry, "brackets hold an IPv6 address"))
        host, port_text = inside, (rest[1:] if rest else None)
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
    else:
        host = value
        if ":" in host and _ip(host) is None:
            raise ValidationFailed(_bad_entry(entry))
    if not host or any(c in host for c in "/@?#\\[] \t%") or host.isspace():
        raise ValidationFailed(_bad_entry(entry))
    port = None
    if port_text is not None:
        if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValidationFailed(_bad_entry(entry, "a port from 1 to 65535"))
        port = int(port_text)
    ip = _ip(host)
    parsed = HostEntry(str(ip) if ip is not None else host, port)
    if len(str(parsed)) > 253:
        raise ValidationFailed(_bad_entry(entry, "at most 253 characters"))
    return parsed


def normalise_host(host: str) -> str:
    """An allow-list entry as stored: ``host`` (any port) or ``host:port`` (``[v6]:port``), the
    host lower-case or a canonical IP literal, no brackets around a bare IPv6 address."""
    return str(parse_host_entry(host))


def _ip(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    ip = _ip(host)
    return host in _LOOPBACK_NAMES if ip is None else ip.is_loopback


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 transition address stands for: IPv4-mapped, IPv4-translated
    (::ffff:0:a.b.c.d, SIIT), IPv4-compatible, NAT64 (64:ff9b::/96), 6to4 (2002::/16), Teredo
    (2001::/32: its server and its client)."""
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if ip.teredo is not None:
        return ip.teredo
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip in _V4_TRANSLATED or ((ip in _NAT64 or ip in _V4_COMPATIBLE) and int(ip) > 1):
        return (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF),)
    return ()


def is_public(address: str) -> bool:
    """A globally reachable unicast address. An IPv6 address that embeds IPv4 ones is public
    only when every one of them is; site-local and local-use NAT64 never are."""
    ip = _ip(address)
    if ip is None or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in network for network in _NEVER_PUBLIC):
            return False
        embedded = embedded_ipv4(ip)
        if embedded:
            return all(v4.is_global and not v4.is_multicast for v4 in embedded)
    return ip.is_global


def explicitly_private(host: str) -> bool:
    """An allow-listed host that names a non-public destination by itself."""
    return host in _LOOPBACK_NAMES or (_ip(host) is not None and not is_public(host))


def url_host_port(url: str) -> tuple[str, int]:
    """The URL's host (lower-case; an IP literal canonical, unbracketed) and port (the
    scheme's default when none is given)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    ip = _ip(host)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return (str(ip) if ip is not None else host), port


def _entries(allowed: Iterable[str]) -> list[HostEntry]:
    entries = []
    for entry in allowed:
        try:
            entries.append(parse_host_entry(entry))
        except ValidationFailed:
            continue  # an entry stored before a rule tightened: it allows nothing
    return entries


def allowed_by(host: str, port: int, allowed: Iterable[str]) -> bool:
    """Whether an entry of ``allowed`` (stored allow-list entries) lets ``host:port`` in."""
    return any(entry.allows(host, port) for entry in _entries(allowed))


def check_callback_url(url: str, allowed: Iterable[str]) -> str:
    """``url`` when the agent may have its events POSTed there; else ValidationFailed naming
    ``callback_url``. ``allowed``: the agent's allow-listed hosts."""

    def refuse(why: str) -> ValidationFailed:
        return ValidationFailed(f"callback_url: {why}")

    if len(url) > MAX_CALLBACK_URL:
        raise refuse(f"longer than {MAX_CALLBACK_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise refuse(f"not a URL ({exc})") from None
    del port
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise refuse("an absolute https URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise refuse("no user name or password in the URL")
    if parts.fragment:
        raise refuse("no fragment")
    host, port = url_host_port(url)
    entries = _entries(allowed)
    if not any(entry.host == host for entry in entries):
        raise refuse(f"host {host} is not on this agent's callback allow-list")
    if not any(entry.allows(host, port) for entry in entries):
        raise refuse(f"port {port} of {host} is not on this agent's callback allow-list")
    if parts.scheme == "http" and not is_loopback(host):
        raise refuse("https only (http only to an allow-listed loopback host)")
    return url


def check_resolved(host: str, addresses: Iterable[str]) -> None:
    """At delivery: a host name must resolve to public addresses only, unless the allow-listed
    host is itself a non-public address or ``localhost`` (then it must resolve to one of that
    kind: ``localhost`` to loopback). Raises ValueError saying why not."""
    found = list(addresses)
    if not found:
        raise ValueError(f"{host} resolves to no address")
    if host in _LOOPBACK_NAMES:
        bad = [a for a in found if not is_loopback(a)]
    elif explicitly_private(host):
        bad = [a for a in found if _ip(a) != _ip(host)]
    else:
        bad = [a for a in found if not is_public(a)]
    if bad:
        raise ValueError(f"{host} resolves to a refused address ({', '.join(sorted(bad))})")
