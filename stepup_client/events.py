"""Verifying a signed callback (docs/callbacks.md): the body stepup POSTs to a request's
``callback_url`` is a compact JWS (``typ`` ``stepup-event+jwt``, EdDSA) whose claims are the
event. Verify it with the server's JWKS before trusting it, and de-duplicate on ``Event.id``:
an event is redelivered until the receiver answers 2xx."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import jwt

from stepup_client.errors import StepupClientError
from stepup_client.models import Status

EVENT_TYPE = "stepup-event+jwt"
_REQUIRED = ["id", "request_id", "status", "at", "agent", "iss", "aud", "iat", "exp"]


class InvalidEvent(StepupClientError):
    """The body is not an event signed by this stepup for this receiver (one opaque error)."""


@dataclass(frozen=True, slots=True)
class Event:
    id: str  # the same on every redelivery: de-duplicate on it
    request_id: str
    status: Status
    at: datetime  # when the status changed
    agent: str  # the agent whose request it is


def fetch_jwks(url: str, *, timeout: float = 10.0) -> dict[str, Any]:
    """The JWKS at ``url`` (the server's ``/.well-known/jwks.json``); cache it and fetch
    again when an event names a key it lacks."""
    answer = httpx.get(url, timeout=timeout, follow_redirects=False)
    answer.raise_for_status()
    document: dict[str, Any] = answer.json()
    return document


def verify_event(
    body: bytes | str,
    *,
    jwks: Mapping[str, Any] | str,
    issuer: str,
    audience: str,
    leeway: float = 30.0,
) -> Event:
    """The event in ``body``, once its signature checks out against ``jwks`` (a JWKS document,
    or its URL), issued by ``issuer`` (the server's public URL) for ``audience`` (the
    ``callback_url`` it was POSTed to), and not expired: ``exp`` (a few minutes after it was
    signed; each delivery attempt signs afresh) passed by no more than ``leeway`` seconds of
    clock skew. Raises ``InvalidEvent`` otherwise."""
    token = body.decode("ascii", "replace") if isinstance(body, bytes) else body
    keys = fetch_jwks(jwks) if isinstance(jwks, str) else jwks
    try:
        header = jwt.get_unverified_header(token.strip())
        if header.get("typ") != EVENT_TYPE or header.get("alg") != "EdDSA":
            raise InvalidEvent("not a stepup event")
        key = _key(keys, header.get("kid"))
        claims = jwt.decode(
            token.strip(),
            key=key,
            algorithms=["EdDSA"],
            issuer=issuer,
            audience=audience,
            leeway=leeway,
            options={"require": _REQUIRED, "verify_exp": True, "verify_iat": True},
        )
        return Event(
            id=str(claims["id"]),
            request_id=str(claims["request_id"]),
            status=Status(claims["status"]),
            at=datetime.fromisoformat(str(claims["at"])),
            agent=str(claims["agent"]),
        )
    except InvalidEvent:
        raise
    except (jwt.PyJWTError, ValueError, KeyError, TypeError) as exc:
        raise InvalidEvent(f"not a valid stepup event: {type(exc).__name__}") from None


def _key(jwks: Mapping[str, Any], kid: object) -> Any:
    for entry in jwks.get("keys", []):
        if isinstance(entry, Mapping) and entry.get("kid") == kid and kid is not None:
            return jwt.PyJWK(dict(entry), algorithm="EdDSA").key
    raise InvalidEvent("signed with a key not in the JWKS")
