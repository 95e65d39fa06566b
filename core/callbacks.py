"""Signed callbacks (docs/callbacks.md): which URLs an agent may name, and the event a status
change becomes. No request forgery: a callback only goes to a host the agent's admin allowed.

The rules, checked at submit (``check_callback_url``) and again at delivery
(``check_resolved``):
- https, or http only to a loopback host that is allow-listed;
- no userinfo; the host equals an allow-listed host exactly (case-insensitive);
- a private, loopback, link-local or otherwise non-public address only when that address
  itself (an IP literal) or ``localhost`` is allow-listed: a host *name* that resolves to such
  an address at delivery time is refused (DNS rebinding).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from core.errors import ValidationFailed

MAX_CALLBACK_URL = 2048
EVENT_TYPE = "stepup-event+jwt"
_LOOPBACK_NAMES = frozenset({"localhost"})


def normalise_host(host: str) -> str:
    """An allow-list entry: a lower-case host name or IP literal, no port, no brackets."""
    value = host.strip().lower().strip("[]")
    if not value or len(value) > 253 or any(c in value for c in "/@?#\\ \t") or value.isspace():
        raise ValidationFailed(f"callback host {host!r}: a host name or IP address")
    if ":" in value and _ip(value) is None:
        raise ValidationFailed(f"callback host {host!r}: no port, just the host")
    return value


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    ip = _ip(host)
    return host in _LOOPBACK_NAMES if ip is None else ip.is_loopback


def is_public(address: str) -> bool:
    ip = _ip(address)
    return ip is not None and ip.is_global and not ip.is_multicast


def explicitly_private(host: str) -> bool:
    """An allow-listed host that names a non-public destination by itself."""
    return host in _LOOPBACK_NAMES or (_ip(host) is not None and not is_public(host))


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
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        raise refuse("an absolute https URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise refuse("no user name or password in the URL")
    if parts.fragment:
        raise refuse("no fragment")
    if host not in {h.lower() for h in allowed}:
        raise refuse(f"host {host} is not on this agent's callback allow-list")
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
        bad = [a for a in found if a != str(ipaddress.ip_address(host))]
    else:
        bad = [a for a in found if not is_public(a)]
    if bad:
        raise ValueError(f"{host} resolves to a refused address ({', '.join(sorted(bad))})")
