"""The ``http`` issuer: a broker for anything stepup has no issuer for (docs/issuers/http.md).

stepup POSTs a JWS signed with its own key (verifiable with its JWKS) to the broker's URL; the
broker mints the credential and answers with a handle, the secret and the expiry. Later a
signed revoke carries the handle back. Transport failures and 5xx are retried with backoff
under one ``Idempotency-Key``, so a broker can tell a retry of one attempt from a new attempt.
Every ``issue`` call has a key of its own: two claims of one request (at once, or again after
stepup discarded an answer) are two credentials, never one shared handle that revoking the
loser's would take from the winner.
"""

from __future__ import annotations

import builtins
import hashlib
import ipaddress
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests
from pydantic import ConfigDict, Field, field_validator, model_validator

from core.issuers.base import (
    BuildContext,
    Grant,
    Issued,
    IssueRequest,
    IssuerSettings,
    IssuerUnavailable,
)

log = logging.getLogger(__name__)

Sign = Callable[[dict[str, Any], str], str]

BACKOFF_BASE_SECONDS = 0.2
REQUEST_LIFETIME_SECONDS = 60  # exp - iat of every signed request
MAX_HANDLE_CHARS = 1000
MAX_EXCERPT_CHARS = 200
MAX_DESCRIBED_CHARS = 200  # the grant as the approver's card shows it
# The longest cut a value gets, tried from the first down: short values stay whole, long ones
# share what is left.
DESCRIBED_VALUE_CAPS = range(60, 7, -1)
MAX_GRANT_JSON_CHARS = 16_384
MAX_GRANT_DEPTH = 5

ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
# What stepup sets itself; a configured header must not replace them.
RESERVED_HEADERS = frozenset(
    {
        "accept",
        "content-length",
        "content-type",
        "host",
        "idempotency-key",
        "transfer-encoding",
        "connection",
    }
)
GRANT_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_HEADER_VALUE = re.compile(r"[\x20-\x7e]+")
# Worth another attempt: no answer, or an answer cut off.
_TRANSIENT = (
    requests.Timeout,
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


def require_https_or_loopback(url: str) -> str:
    """A URL stepup sends credentials or signed requests to: https, or plain http only to this
    machine (a broker sidecar, a test), and nothing secret-looking in it: no user:password, no
    ?query, no #fragment (the URL is printed by ``stepup issuers check``, logged and, for a
    broker, signed as the ``aud`` every broker log keeps)."""
    parts = urlsplit(url)
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        raise ValueError("must be an https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not hold a user or password: use headers_env for credentials")
    if parts.query or url.rstrip().endswith("?"):
        raise ValueError("must not hold a ?query: use headers_env for credentials")
    if parts.fragment or "#" in url:
        raise ValueError("must not hold a #fragment")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError("plain http:// is allowed only for localhost; use https://")
    return url


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def excerpt(text: str) -> str:
    """Broker-controlled text fit for a log line: control characters gone, 200 chars at most."""
    cleaned = _CONTROL.sub(" ", text).strip()
    if len(cleaned) > MAX_EXCERPT_CHARS:
        return cleaned[:MAX_EXCERPT_CHARS] + "…"
    return cleaned


class HttpSettings(IssuerSettings):
    """``issuers.NAME`` of ``type: http``."""

    url: str
    timeout_seconds: float = Field(default=10, gt=0, le=120)
    retries: int = Field(default=2, ge=0, le=5)
    headers_env: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return require_https_or_loopback(value)

    @field_validator("headers_env")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for header, env in value.items():
            if not HEADER_NAME.fullmatch(header):
                raise ValueError(f"{header!r} is not a header name (letters, digits and -)")
            if header.lower() in RESERVED_HEADERS:
                raise ValueError(f"{header} is set by stepup itself")
            if not ENV_NAME.fullmatch(env):
                raise ValueError(f"{env!r} is not an environment variable name (A-Z, 0-9, _)")
        return value


def _check_json_value(value: Any, where: str, depth: int) -> None:
    """Grant values are data the broker reads: strings, integers, booleans, lists and maps."""
    if depth > MAX_GRANT_DEPTH:
        raise ValueError(f"{where}: nested deeper than {MAX_GRANT_DEPTH} levels")
    if isinstance(value, str | bool | int):
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_json_value(item, f"{where}[{index}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not GRANT_KEY.fullmatch(key):
                raise ValueError(f"{where}: {key!r} is not a key (a letter or _, then . _ -)")
            _check_json_value(item, f"{where}.{key}", depth + 1)
        return
    raise ValueError(f"{where}: must be a string, integer, boolean, list or map")


class HttpGrant(Grant):
    """Free-form: whatever the broker understands, passed to it as the ``grant`` claim."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="after")
    def _shape(self) -> HttpGrant:
        fields = self.as_dict()
        _check_json_value(fields, "grant", 0)
        if len(json.dumps(fields)) > MAX_GRANT_JSON_CHARS:
            raise ValueError(f"grant is larger than {MAX_GRANT_JSON_CHARS} characters")
        return self

    def as_dict(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def _parse_expiry(value: Any) -> datetime:
    """The broker's ``expires_at``: unix seconds or ISO 8601 with a zone."""
    if isinstance(value, bool):
        raise ValueError("expires_at is a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("expires_at is not finite")
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            raise ValueError("expires_at has no time zone")
        return parsed.astimezone(UTC)
    raise ValueError("expires_at must be unix seconds or an ISO 8601 string")


class HttpIssuer:
    """One configured broker."""

    def __init__(
        self,
        name: str,
        settings: HttpSettings,
        context: BuildContext,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.type = HttpType.type
        self._settings = settings
        self._context = context
        self._session = session or requests.Session()
        self._sleep = sleep
        self._clock = clock

    @property
    def min_ttl(self) -> timedelta:
        return HttpType.min_ttl

    def issue(self, grant: Grant, request: IssueRequest, expires_at: datetime) -> Issued:
        if not isinstance(grant, HttpGrant):
            raise TypeError(f"issuer {self.name} takes an http grant, not {type(grant).__name__}")
        asked = math.floor(expires_at.timestamp())
        fields = {
            "request_id": request.request_id,
            "agent": request.agent,
            "action": request.action,
            "target": request.target,
            "environment": request.environment,
            "args_digest": request.args_digest,
            "grant": grant.as_dict(),
            "expires_at": asked,
        }
        # New per call, the same across this call's retries: a broker de-duplicates retries
        # of one attempt, while another claim is another credential with a handle of its own.
        key = f"{request.request_id}:{secrets.token_hex(8)}:issue"
        response = self._post("issue", fields, idempotency_key=key)
        if response.status_code not in (200, 201):
            raise self._refusal("issue", response)
        handle, secret, answered = self._read_issued(response)
        expiry = datetime.fromtimestamp(asked, UTC) if answered is None else answered
        if expiry.timestamp() > asked:
            self._revoke_quietly(handle)
            raise IssuerUnavailable(
                f"broker {self.name} answered an expiry ({expiry.isoformat()}) later than asked "
                f"({datetime.fromtimestamp(asked, UTC).isoformat()}); the credential was revoked"
            )
        log.info(
            "issuer %s: broker issued handle %s for request %s until %s",
            self.name,
            excerpt(handle),
            request.request_id,
            expiry.isoformat(),
        )
        return Issued(secret=secret, handle=handle, expires_at=expiry)

    def revoke(self, handle: str) -> None:
        # Keyed by the handle alone: every revoke of one handle asks for the same thing.
        digest = hashlib.sha256(handle.encode()).hexdigest()[:32]
        response = self._post("revoke", {"handle": handle}, idempotency_key=f"{digest}:revoke")
        if response.status_code in (404, 410):
            log.info("issuer %s: broker no longer knows handle %s", self.name, excerpt(handle))
            return
        if response.status_code not in (200, 204):
            raise self._refusal("revoke", response)

    def check(self) -> str:
        response = self._post("check", {}, idempotency_key=f"check:{secrets.token_hex(8)}")
        if response.status_code not in (200, 204):
            raise self._refusal("check", response)
        return (
            f"broker at {self._settings.url} accepted a signed check (HTTP {response.status_code})"
        )

    # -- the wire --------------------------------------------------------------------------

    def _post(
        self, op: str, fields: Mapping[str, Any], *, idempotency_key: str
    ) -> requests.Response:
        """POST a freshly signed request per attempt (a new jti, the same idempotency key);
        timeouts, connection errors and 5xx are retried, anything else is the answer."""
        headers = {
            "Content-Type": "application/jwt",
            "Accept": "application/json",
            "Idempotency-Key": idempotency_key,
            **self._extra_headers(),
        }
        attempts = self._settings.retries + 1
        failure = ""
        for attempt in range(attempts):
            if attempt:
                self._sleep(BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
            body = self._signed(op, fields)
            try:
                response = self._session.post(
                    self._settings.url,
                    data=body.encode(),
                    headers=headers,
                    timeout=self._settings.timeout_seconds,
                    allow_redirects=False,
                )
            except _TRANSIENT as exc:
                failure = type(exc).__name__
                continue
            except requests.RequestException as exc:  # a request that cannot work as configured
                raise IssuerUnavailable(
                    f"broker {self.name} {op} could not be sent: {type(exc).__name__}"
                ) from None
            if response.status_code >= 500:
                failure = f"HTTP {response.status_code}"
                continue
            return response
        raise IssuerUnavailable(
            f"broker {self.name} did not answer {op} after {attempts} attempt(s): {failure}"
        )

    def _signed(self, op: str, fields: Mapping[str, Any]) -> str:
        sign: Sign | None = self._context.sign
        if sign is None or not self._context.issuer_url:
            raise IssuerUnavailable(
                f"issuer {self.name}: stepup's signing key or public URL is not configured"
            )
        now = int(self._clock())
        claims = {
            "iss": self._context.issuer_url,
            "aud": self._settings.url,
            "iat": now,
            "exp": now + REQUEST_LIFETIME_SECONDS,
            "jti": secrets.token_urlsafe(16),
            "op": op,
            **fields,
        }
        return sign(claims, f"stepup-{op}+jwt")

    def _extra_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for header, env in self._settings.headers_env.items():
            value = self._context.environ.get(env)
            if not value:
                raise IssuerUnavailable(f"issuer {self.name}: environment variable {env} is unset")
            if not _HEADER_VALUE.fullmatch(value):
                raise IssuerUnavailable(
                    f"issuer {self.name}: environment variable {env} holds characters a header "
                    "value cannot (printable ASCII only)"
                )
            headers[header] = value
        return headers

    def _refusal(self, op: str, response: requests.Response) -> IssuerUnavailable:
        if 300 <= response.status_code < 400:
            return IssuerUnavailable(
                f"broker {self.name} answered {op} with a redirect (HTTP {response.status_code}); "
                "redirects are not followed: configure the final URL"
            )
        return IssuerUnavailable(
            f"broker {self.name} refused {op} (HTTP {response.status_code}): "
            f"{excerpt(response.text)}"
        )

    def _read_issued(
        self, response: requests.Response
    ) -> tuple[str, dict[str, Any], datetime | None]:
        """The answer's handle, secret and expiry. The body holds the secret: no error quotes
        it. A valid handle with a bad rest is revoked, so nothing is left behind."""
        try:
            answer = response.json()
        except ValueError:
            raise IssuerUnavailable(
                f"broker {self.name} answered issue with a body that is not JSON"
            ) from None
        if not isinstance(answer, dict):
            raise IssuerUnavailable(f"broker {self.name} answered issue with no JSON object")
        handle = answer.get("handle")
        if not _valid_handle(handle):
            raise IssuerUnavailable(
                f"broker {self.name} answered issue without a valid handle "
                f"(a printable string of 1 to {MAX_HANDLE_CHARS} characters)"
            )
        assert isinstance(handle, str)
        secret = answer.get("secret")
        if not isinstance(secret, dict):
            self._revoke_quietly(handle)
            raise IssuerUnavailable(
                f"broker {self.name} answered issue without a secret object; "
                "the credential was revoked"
            )
        try:
            raw_expiry = answer.get("expires_at")
            expiry = None if raw_expiry is None else _parse_expiry(raw_expiry)
        except (ValueError, OverflowError, OSError):
            self._revoke_quietly(handle)
            raise IssuerUnavailable(
                f"broker {self.name} answered issue with an unusable expires_at; "
                "the credential was revoked"
            ) from None
        return handle, secret, expiry

    def _revoke_quietly(self, handle: str) -> None:
        """Take back a credential stepup will not hand out; a failure is logged, not raised,
        since the refusal that follows matters more (the handle is in the log to finish it)."""
        try:
            self.revoke(handle)
        except IssuerUnavailable as exc:
            log.warning(
                "issuer %s: could not revoke refused handle %s: %s", self.name, excerpt(handle), exc
            )


def _valid_handle(handle: Any) -> bool:
    return (
        isinstance(handle, str)
        and 0 < len(handle) <= MAX_HANDLE_CHARS
        and handle.isprintable()
        and handle.strip() == handle
    )


class HttpType:
    """``type: http``."""

    type: ClassVar[str] = "http"
    settings_model: ClassVar[builtins.type[IssuerSettings]] = HttpSettings
    grant_model: ClassVar[builtins.type[Grant]] = HttpGrant
    # Data for the broker, but brokers build paths and names from it: no leading . / -, no
    # "..", no spaces, quotes, wildcards or shell characters.
    safe_value: ClassVar[re.Pattern[str]] = re.compile(
        r"(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._:/@+=,-]{0,255}"
    )
    safe_value_text: ClassVar[str] = (
        "1 to 256 ASCII letters, digits and . _ : / @ + = , - starting with a letter or digit, "
        "without '..'"
    )
    min_ttl: ClassVar[timedelta] = timedelta(0)

    @classmethod
    def build(cls, name: str, settings: IssuerSettings, context: BuildContext) -> HttpIssuer:
        if not isinstance(settings, HttpSettings):
            raise TypeError(f"issuer {name}: settings are not http settings")
        return HttpIssuer(name, settings, context)

    @classmethod
    def describe(cls, name: str, settings: IssuerSettings, grant: Grant) -> str:
        fields = grant.as_dict() if isinstance(grant, HttpGrant) else {}
        shown = _describe_fields(fields)
        return f"Credential from broker {name}" + (f" ({shown})" if shown else "")


def _describe_fields(fields: Mapping[str, Any]) -> str:
    """Every key with its value: an agent may have chosen a value, and the approver decides on
    what it says. A long value is cut (with an ellipsis, so it shows it was), never hidden; the
    whole stays within MAX_DESCRIBED_CHARS for the card."""
    rendered = [(key, _describe_value(value)) for key, value in fields.items()]
    shown = ""
    for cap in DESCRIBED_VALUE_CAPS:
        shown = ", ".join(f"{key}={_clip(text, cap)}" for key, text in rendered)
        if len(shown) <= MAX_DESCRIBED_CHARS:
            return shown
    return _clip(shown, MAX_DESCRIBED_CHARS)


def _describe_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + " ".join(_describe_value(item) for item in value) + "]"
    if isinstance(value, dict):
        inner = " ".join(f"{key}={_describe_value(item)}" for key, item in value.items())
        return "{" + inner + "}"
    return _CONTROL.sub(" ", str(value))


def _clip(text: str, cap: int) -> str:
    return text if len(text) <= cap else text[: cap - 1] + "…"
