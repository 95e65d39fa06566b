"""Trusted issuers of workload tokens, as registered with ``stepup trust`` (docs/identity.md)."""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from core.errors import ValidationFailed

MAX_NAME = 100  # the column's size
MAX_JWKS = 256 * 1024  # a bundle or a JWKS document, in bytes
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# SPIFFE ID trust domains: lowercase letters, digits, dots, dashes and underscores.
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]+$")
_SPIFFE_PATH_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")


class TrustKind(StrEnum):
    OIDC = "oidc"
    SPIFFE = "spiffe"


@dataclass(frozen=True, slots=True)
class TrustedIssuer:
    """An OIDC provider (``issuer`` is the exact ``iss``), or a SPIFFE trust domain whose
    JWT-SVIDs are signed by the keys of its bundle (``jwks``) or of ``jwks_uri``."""

    name: str
    kind: TrustKind
    issuer: str
    audience: str
    jwks_uri: str | None = None
    jwks: str | None = None  # a SPIFFE bundle (a JWKS document), as stored

    @property
    def label(self) -> str:
        """How an agent bound through it is shown: ``oidc:NAME`` or ``spiffe``."""
        return f"oidc:{self.name}" if self.kind is TrustKind.OIDC else "spiffe"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def checked_url(value: str, what: str) -> str:
    """An https URL (http only on a loopback address, for tests), without credentials,
    query or fragment."""
    value = value.strip()
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
    except ValueError:
        raise ValidationFailed(f"{what}: not a URL") from None
    if parts.scheme == "http" and is_loopback(host):
        pass
    elif parts.scheme != "https":
        raise ValidationFailed(f"{what}: must be an https URL (http only on a loopback address)")
    if not host:
        raise ValidationFailed(f"{what}: no host")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValidationFailed(f"{what}: no user:password, ?query or #fragment")
    if len(value) > 512:
        raise ValidationFailed(f"{what}: longer than 512 characters")
    return value


def checked_name(value: str) -> str:
    value = value.strip()
    if not _NAME.match(value) or len(value) > MAX_NAME:
        raise ValidationFailed(
            f"name {value!a}: letters, digits, '.', '_' and '-' (at most {MAX_NAME})"
        )
    return value


def checked_trust_domain(value: str) -> str:
    value = value.strip()
    if value.startswith("spiffe://"):
        value = value[len("spiffe://") :].rstrip("/")
    if not _TRUST_DOMAIN.match(value) or len(value) > MAX_NAME:
        raise ValidationFailed(
            f"trust domain {value!a}: lowercase letters, digits, '.', '_' and '-'"
        )
    return value


def checked_audience(value: str) -> str:
    value = value.strip()
    if not value or len(value) > 512:
        raise ValidationFailed("audience: from 1 to 512 characters")
    return value


def spiffe_trust_domain(spiffe_id: str) -> str | None:
    """The trust domain of a well-formed SPIFFE ID (``spiffe://domain/path``), else None."""
    if not spiffe_id.startswith("spiffe://") or len(spiffe_id) > 2048:
        return None
    rest = spiffe_id[len("spiffe://") :]
    domain, slash, path = rest.partition("/")
    if not _TRUST_DOMAIN.match(domain):
        return None
    if slash and not all(
        _SPIFFE_PATH_SEGMENT.match(s) and s not in {".", ".."} for s in path.split("/")
    ):
        return None
    return domain


def checked_spiffe_id(value: str) -> str:
    value = value.strip()
    if spiffe_trust_domain(value) is None or value.endswith("/"):
        raise ValidationFailed(f"SPIFFE ID {value!a}: spiffe://trust-domain/path")
    return value


def checked_bundle(text: str) -> str:
    """A SPIFFE bundle (or any JWKS) with at least one key usable for JWT-SVIDs; returned as
    compact JSON."""
    if len(text.encode("utf-8")) > MAX_JWKS:
        raise ValidationFailed(f"bundle: larger than {MAX_JWKS} bytes")
    try:
        document = json.loads(text)
    except ValueError:
        raise ValidationFailed("bundle: not JSON (a SPIFFE bundle is a JWKS document)") from None
    keys = jwt_svid_keys(document)
    if not keys:
        raise ValidationFailed("bundle: no key for JWT-SVIDs (use: jwt-svid, with a kid)")
    return json.dumps(document, separators=(",", ":"), sort_keys=True)


def jwt_svid_keys(document: Any) -> list[dict[str, Any]]:
    """The JWKs of ``document`` that may verify a token: those with a ``kid`` whose ``use`` is
    absent, ``sig`` or ``jwt-svid`` (a SPIFFE bundle's X.509 roots are left out)."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        return []
    return [
        key
        for key in document["keys"]
        if isinstance(key, dict)
        and isinstance(key.get("kid"), str)
        and key.get("use", "sig") in {"sig", "jwt-svid"}
    ]
