"""The signing keys of one trusted issuer, fetched and cached.

Keys come from the stored SPIFFE bundle, from the issuer's ``jwks_uri``, or from the
``jwks_uri`` of its OpenID discovery document (``{issuer}/.well-known/openid-configuration``).
A token naming an unknown ``kid`` triggers a refresh, but never sooner than ``floor`` seconds
after the last fetch (a stream of forged ``kid``s cannot make stepup hammer the provider), and
the keys are fetched again on first use after ``max_age``. Fetches time out, follow no
redirect and read at most ``MAX_JWKS`` bytes.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import httpx
import jwt

from core.identity.trust import MAX_JWKS, TrustedIssuer, TrustKind, checked_url, jwt_svid_keys

logger = logging.getLogger(__name__)

DEFAULT_FLOOR = 30.0  # seconds between two fetches of one issuer's keys, at least
DEFAULT_MAX_AGE = 600.0  # keys older than this are fetched again on first use
FETCH_TIMEOUT = httpx.Timeout(5.0, connect=3.0)


class FetchFailed(Exception):
    """A discovery document or JWKS could not be fetched or read."""


class Fetcher(Protocol):
    def __call__(self, url: str) -> Any:
        """The JSON document at ``url``; FetchFailed otherwise."""
        ...


def fetch_json(url: str) -> Any:
    """GET ``url`` (no redirect followed, bounded time and size) and parse it as JSON."""
    try:
        with (
            httpx.Client(timeout=FETCH_TIMEOUT, follow_redirects=False) as client,
            client.stream("GET", url, headers={"Accept": "application/json"}) as response,
        ):
            if response.status_code != 200:
                raise FetchFailed(f"{url}: HTTP {response.status_code}")
            body = b""
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_JWKS:
                    raise FetchFailed(f"{url}: larger than {MAX_JWKS} bytes")
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
        raise FetchFailed(f"{url}: {type(exc).__name__}") from None
    try:
        return json.loads(body)
    except ValueError:
        raise FetchFailed(f"{url}: not JSON") from None


def parse_keys(document: Any) -> dict[str, jwt.PyJWK]:
    """kid -> key, for each usable key of a JWKS document (others are skipped)."""
    keys: dict[str, jwt.PyJWK] = {}
    for data in jwt_svid_keys(document):
        if data.get("kty") not in {"RSA", "EC", "OKP"}:
            continue  # never a symmetric ("oct") key: it would turn a public key into a secret
        try:
            keys[data["kid"]] = jwt.PyJWK(data)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue
    return keys


class KeyCache:
    """The keys of one trusted issuer. Thread-safe; one fetch at a time."""

    def __init__(
        self,
        trusted: TrustedIssuer,
        *,
        fetch: Fetcher = fetch_json,
        clock: Callable[[], float] = time.monotonic,
        floor: float = DEFAULT_FLOOR,
        max_age: float = DEFAULT_MAX_AGE,
    ) -> None:
        self.trusted = trusted
        self._fetch = fetch
        self._clock = clock
        self.floor = floor
        self.max_age = max_age
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # the last attempt, successful or not
        self._jwks_uri = trusted.jwks_uri
        self.fetches = 0  # documents fetched (discovery and JWKS), for tests and metrics
        if trusted.jwks is not None:
            try:
                self._keys = parse_keys(json.loads(trusted.jwks))
            except ValueError:
                logger.warning("the bundle of trusted issuer %s is not JSON", trusted.name)

    @property
    def remote(self) -> bool:
        return self.trusted.jwks is None

    def current(self, kid: str) -> jwt.PyJWK | None:
        """The key named ``kid`` if the keys are not due for a fetch; no fetch."""
        if self.remote:
            fetched_at = self._fetched_at
            if fetched_at is None or self._clock() - fetched_at >= self.max_age:
                return None
        return self._keys.get(kid)

    def key(self, kid: str) -> jwt.PyJWK | None:
        """The key named ``kid``, fetching the keys again if it is unknown (or they are old)
        and the floor allows; None if there is no such key."""
        if not self.remote:
            return self._keys.get(kid)
        found = self._keys.get(kid)
        fetched_at = self._fetched_at
        now = self._clock()
        stale = fetched_at is None or now - fetched_at >= self.max_age
        if found is not None and not stale:
            return found
        if found is not None:
            # Old keys: refresh, unless another thread is at it (then use what we have).
            if self._lock.acquire(blocking=False):
                try:
                    self._refresh_locked()
                finally:
                    self._lock.release()
            return self._keys.get(kid)
        with self._lock:
            if kid not in self._keys:
                self._refresh_locked()
            return self._keys.get(kid)

    def _refresh_locked(self) -> None:
        now = self._clock()
        if self._fetched_at is not None and now - self._fetched_at < self.floor:
            return
        self._fetched_at = now
        try:
            self._keys = parse_keys(self._fetch_document(self._jwks_uri_locked()))
        except FetchFailed as exc:
            logger.warning("keys of trusted issuer %s not fetched: %s", self.trusted.name, exc)
        except Exception as exc:  # a fetch must never turn a 401 into a 500
            logger.warning(
                "keys of trusted issuer %s not fetched: %s", self.trusted.name, type(exc).__name__
            )

    def _fetch_document(self, url: str) -> Any:
        self.fetches += 1
        return self._fetch(url)

    def _jwks_uri_locked(self) -> str:
        if self._jwks_uri is not None:
            return self._jwks_uri
        if self.trusted.kind is not TrustKind.OIDC:
            raise FetchFailed("no bundle and no jwks_uri")
        issuer = self.trusted.issuer
        document = self._fetch_document(issuer.rstrip("/") + "/.well-known/openid-configuration")
        if not isinstance(document, dict) or document.get("issuer") != issuer:
            # OpenID Connect Discovery 1.0 §4.3: the document must name the same issuer.
            raise FetchFailed("the discovery document names another issuer")
        uri = document.get("jwks_uri")
        if not isinstance(uri, str):
            raise FetchFailed("the discovery document has no jwks_uri")
        try:
            self._jwks_uri = checked_url(uri, "jwks_uri")
        except Exception:
            raise FetchFailed("the discovery document's jwks_uri is not an https URL") from None
        return self._jwks_uri
