"""The ``vault`` issuer: a dynamic secret read from HashiCorp Vault or OpenBao (a database login,
cloud keys, ...) whose lease stepup revokes through ``sys/leases/revoke`` (docs/issuers/vault.md).

The lease is held to the approval at Vault itself, not only in what stepup reports: a lease
Vault grants for longer (a role's default TTL) is shortened with ``sys/leases/renew`` and a
smaller increment, or revoked at once and the claim refused. So a secret does not outlive its
approval even if stepup crashes before it records the lease, or cannot revoke it later.

Requests go through hvac's ``RawAdapter`` built by hand rather than ``hvac.Client``: the client
reads ``VAULT_TOKEN``, ``VAULT_ADDR`` and ``~/.vault-token`` when not told otherwise, and stepup
must use exactly the policy's settings. Redirects are never followed (the token would go along).
"""

from __future__ import annotations

import builtins
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import requests
from pydantic import Field, StrictInt, StrictStr, field_validator, model_validator

from core.issuers.base import (
    BuildContext,
    Grant,
    Issued,
    IssueRequest,
    IssuerSettings,
    IssuerUnavailable,
)

log = logging.getLogger(__name__)

MAX_HANDLE = 4000
_SEGMENT = r"[A-Za-z0-9_.-]+"
_PATH = re.compile(rf"{_SEGMENT}(/{_SEGMENT})*")
_FORBIDDEN_ROOTS = {"sys", "auth", "identity"}  # Vault's own control plane, not secrets
_DATA_KEY = re.compile(r"[a-z_][a-z0-9_]{0,63}")
_DURATION = re.compile(r"([0-9]{1,9})([smh]?)")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600}
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_GONE = ("invalid lease", "lease not found")  # older Vault's 400 for a lease already revoked
LEASE_SLACK_SECONDS = 2  # what a lease may outlast the approval by (clocks, the round trip)


class AppRoleAuth(IssuerSettings):
    role_id: str = Field(min_length=1, max_length=256)
    secret_id_env: str = Field(pattern=_ENV_NAME)
    mount: str = Field(default="approle", pattern=rf"^{_SEGMENT}(/{_SEGMENT})*$")


class KubernetesAuth(IssuerSettings):
    role: str = Field(min_length=1, max_length=256)
    jwt_path: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    mount: str = Field(default="kubernetes", pattern=rf"^{_SEGMENT}(/{_SEGMENT})*$")


class VaultAuth(IssuerSettings):
    approle: AppRoleAuth | None = None
    kubernetes: KubernetesAuth | None = None

    @model_validator(mode="after")
    def _one(self) -> VaultAuth:
        if (self.approle is None) == (self.kubernetes is None):
            raise ValueError("auth: name exactly one of approle or kubernetes")
        return self


class VaultSettings(IssuerSettings):
    url: str
    allow_http: bool = False
    namespace: str | None = Field(default=None, pattern=rf"^{_SEGMENT}(/{_SEGMENT})*/?$")
    token_env: str | None = Field(default=None, pattern=_ENV_NAME)
    auth: VaultAuth | None = None
    ca_cert: str | None = None
    timeout_seconds: float = Field(default=10, gt=0, le=120)

    @model_validator(mode="after")
    def _valid(self) -> VaultSettings:
        """Exactly one way to log in; plain HTTP only to this machine (a dev server), since
        the token travels in every request."""
        if (self.token_env is None) == (self.auth is None):
            raise ValueError("name exactly one of token_env or auth")
        parts = urlsplit(self.url)
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise ValueError(
                "url: no user:password@ in the address (it would be printed and logged); "
                "use token_env or auth"
            )
        if "?" in self.url or "#" in self.url:
            raise ValueError("url: no ?query or #fragment, only the Vault address")
        if not parts.hostname or parts.path not in ("", "/"):
            raise ValueError("url: the Vault address, like https://vault.example.com:8200")
        if parts.scheme == "http" and self.allow_http and parts.hostname in _LOOPBACK:
            return self
        if parts.scheme != "https":
            raise ValueError("url: https:// (http:// only with allow_http: true and a loopback)")
        return self


def _seconds(value: str | int) -> int | None:
    """A Vault TTL given as seconds or ``30s``/``5m``/``1h``; None if not one of those."""
    if isinstance(value, int):
        return value if value > 0 else None
    match = _DURATION.fullmatch(value)
    return int(match[1]) * _UNIT[match[2]] if match and int(match[1]) > 0 else None


class VaultGrant(Grant):
    path: str = Field(max_length=512)
    method: Literal["GET", "POST"] = "GET"
    data: dict[str, StrictStr | StrictInt] | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        """A secrets-engine path: no traversal, no absolute path, nothing of Vault's own
        control plane (a substituted value could otherwise reach ``sys/`` or ``auth/``)."""
        segments = value.split("/")
        if not _PATH.fullmatch(value) or any(s in (".", "..") for s in segments):
            raise ValueError(
                "segments of letters, digits, '_', '.', '-' joined by '/' (no leading '/', no '..')"
            )
        if segments[0].lower() in _FORBIDDEN_ROOTS:
            raise ValueError(f"{segments[0]}/ is not a secrets engine")
        return value

    @field_validator("data")
    @classmethod
    def _data(cls, value: dict[str, str | int] | None) -> dict[str, str | int] | None:
        for key, item in (value or {}).items():
            if not _DATA_KEY.fullmatch(key):
                raise ValueError(f"data key {key[:64]!r}: a parameter name ([a-z0-9_])")
            if isinstance(item, str) and (len(item) > 1024 or re.search(r"[\x00-\x1f]", item)):
                raise ValueError(f"data.{key}: at most 1024 printable characters")
        if value and "ttl" in value and _seconds(value["ttl"]) is None:
            raise ValueError("data.ttl: seconds, or a number with s, m or h")
        return value

    @model_validator(mode="after")
    def _data_with_post(self) -> VaultGrant:
        if self.data is not None and self.method != "POST":
            raise ValueError("data: only with method: POST")
        return self


class VaultType:
    type: ClassVar[str] = "vault"
    settings_model: ClassVar[builtins.type[IssuerSettings]] = VaultSettings
    grant_model: ClassVar[builtins.type[Grant]] = VaultGrant
    safe_value: ClassVar[re.Pattern[str]] = re.compile(r"[A-Za-z0-9_.-]{1,128}")
    safe_value_text: ClassVar[str] = (
        "letters, digits, '_', '.' or '-' (1 to 128 characters, one path segment)"
    )
    min_ttl: ClassVar[timedelta] = timedelta(0)

    @classmethod
    def build(cls, name: str, settings: IssuerSettings, context: BuildContext) -> VaultIssuer:
        assert isinstance(settings, VaultSettings)
        return VaultIssuer(name, settings, context.environ)

    @classmethod
    def describe(cls, name: str, settings: IssuerSettings, grant: Grant) -> str:
        assert isinstance(grant, VaultGrant)
        return f"Vault secret from {name}, {grant.path}"


def _errors(response: requests.Response, secrets: Iterable[str] = ()) -> str:
    """Vault's ``errors``, on one line and short, with anything secret masked (Vault does not
    echo credentials, but a message that might is not worth trusting)."""
    try:
        body = response.json()
        errors = body.get("errors") if isinstance(body, dict) else None
    except ValueError:
        errors = None
    text = "; ".join(str(e) for e in errors) if isinstance(errors, list) else ""
    text = " ".join(text.replace("*", " ").split())[:200]
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return f"HTTP {response.status_code}" + (f" ({text})" if text else "")


def _object(response: requests.Response) -> dict[str, Any]:
    """The JSON object of an answer, or an empty one (a proxy's HTML page, a truncated body)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _number(value: object) -> int:
    """A duration field of Vault's answer; 0 if absent or not a whole number."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class VaultIssuer:
    """One configured Vault (or OpenBao) server and the identity stepup logs in with."""

    type = "vault"

    def __init__(
        self,
        name: str,
        settings: VaultSettings,
        environ: Mapping[str, str],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        import hvac.adapters  # heavy; only when a Vault issuer is configured

        self.name = name
        self.settings = settings
        self._environ = environ
        self._clock = clock
        self._lock = threading.Lock()
        self._token = ""
        self._secrets: set[str] = set()  # what error messages must never show
        self._adapter = hvac.adapters.RawAdapter(
            base_uri=settings.url.rstrip("/"),
            token=None,  # sent per request (threads share the adapter)
            cert=None,
            verify=settings.ca_cert or True,
            timeout=settings.timeout_seconds,
            allow_redirects=False,
            namespace=settings.namespace,
        )

    @property
    def min_ttl(self) -> timedelta:
        return timedelta(0)

    # -- authentication -----------------------------------------------------------------

    def _env(self, variable: str) -> str:
        value = self._environ.get(variable, "").strip()
        if not value:
            raise IssuerUnavailable(f"{self.name}: environment variable {variable} is not set")
        self._secrets.add(value)
        return value

    @property
    def _can_relogin(self) -> bool:
        return self.settings.auth is not None

    def _current_token(self) -> str:
        with self._lock:
            if not self._token:
                self._token = self._login()
            return self._token

    def _relogin(self, stale: str) -> bool:
        """After a 403: log in again unless another thread already did. False when the token
        came from the environment (nothing to renew it with)."""
        if not self._can_relogin:
            return False
        with self._lock:
            if self._token == stale:
                self._token = self._login()
        return True

    def _login(self) -> str:
        auth = self.settings.auth
        if auth is None:
            assert self.settings.token_env is not None
            return self._env(self.settings.token_env)
        if auth.approle is not None:
            mount, method = auth.approle.mount, "AppRole"
            body = {
                "role_id": auth.approle.role_id,
                "secret_id": self._env(auth.approle.secret_id_env),
            }
        else:
            assert auth.kubernetes is not None
            mount, method = auth.kubernetes.mount, "Kubernetes"
            jwt = self._service_account_jwt(auth.kubernetes.jwt_path)
            body = {"role": auth.kubernetes.role, "jwt": jwt}
        response = self._send("POST", f"auth/{mount}/login", "", body)
        token = None
        if response.status_code == 200:
            token = (_object(response).get("auth") or {}).get("client_token")
        if not isinstance(token, str) or not token:
            raise IssuerUnavailable(
                f"{self.name}: {method} login failed: {_errors(response, self._secrets)}"
            )
        self._secrets.add(token)
        return token

    def _service_account_jwt(self, path: str) -> str:
        """Read at every login: Kubernetes rotates projected service-account tokens."""
        try:
            jwt = Path(path).read_text().strip()
        except OSError as exc:
            raise IssuerUnavailable(
                f"{self.name}: cannot read the service-account token {path} ({exc.strerror})"
            ) from None
        if not jwt:
            raise IssuerUnavailable(f"{self.name}: the service-account token {path} is empty")
        self._secrets.add(jwt)
        return jwt

    # -- transport ------------------------------------------------------------------------

    def _send(
        self, method: str, path: str, token: str, body: Mapping[str, Any] | None = None
    ) -> requests.Response:
        """One request. A redirect is refused, not followed: it would carry the token (or the
        login secret) to wherever it points."""
        headers = {"X-Vault-Token": token} if token else {}
        try:
            response: requests.Response = self._adapter.request(
                method, f"/v1/{path}", headers=headers, json=body, raise_exception=False
            )
        except requests.RequestException as exc:
            raise IssuerUnavailable(
                f"{self.name}: Vault unreachable ({type(exc).__name__})"
            ) from None
        except OSError:  # requests checks the CA bundle before connecting
            raise IssuerUnavailable(
                f"{self.name}: ca_cert {self.settings.ca_cert} cannot be read"
            ) from None
        if 300 <= response.status_code < 400:
            raise IssuerUnavailable(
                f"{self.name}: Vault answered {path} with a redirect "
                f"(HTTP {response.status_code}); redirects are not followed"
            )
        return response

    def _authorized(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> requests.Response:
        """A request with the current token, logging in again once if Vault says 403 (an
        AppRole or Kubernetes token that expired)."""
        token = self._current_token()
        response = self._send(method, path, token, body)
        if response.status_code == 403 and self._relogin(token):
            response = self._send(method, path, self._current_token(), body)
        return response

    # -- the issuer -----------------------------------------------------------------------

    def issue(self, grant: Grant, request: IssueRequest, expires_at: datetime) -> Issued:
        assert isinstance(grant, VaultGrant)
        now = self._clock()
        remaining = int((expires_at - now).total_seconds())
        if remaining <= 0:
            raise IssuerUnavailable(f"{self.name}: the approval has already expired")
        body: dict[str, Any] | None = None
        if grant.method == "POST":
            body = dict(grant.data or {})
            if "ttl" in body:
                body["ttl"] = f"{min(_seconds(body['ttl']) or remaining, remaining)}s"
        response = self._authorized(grant.method, grant.path, body)
        if response.status_code != 200:
            raise IssuerUnavailable(
                f"{self.name}: reading {grant.path} failed: {_errors(response, self._secrets)}"
            )
        answer = _object(response)
        if not answer:
            raise IssuerUnavailable(f"{self.name}: Vault's answer for {grant.path} is not JSON")
        lease_id = answer.get("lease_id")
        if not isinstance(lease_id, str) or not lease_id:
            raise IssuerUnavailable(
                f"{self.name}: {grant.path} is a static secret (no lease): it cannot be "
                "revoked, so it is not issued; use a dynamic secrets engine"
            )
        if len(lease_id) > MAX_HANDLE:
            self.revoke(lease_id)
            raise IssuerUnavailable(f"{self.name}: the lease id is too long to keep")
        lease_duration = self._held_to_approval(grant.path, lease_id, answer, expires_at)
        log.info("vault %s: lease on %s for request %s", self.name, grant.path, request.request_id)
        return Issued(
            secret={
                "lease_id": lease_id,
                "lease_duration": lease_duration,
                "data": answer.get("data") or {},
            },
            handle=lease_id,
            expires_at=min(expires_at, now + timedelta(seconds=lease_duration)),
        )

    def _held_to_approval(
        self, path: str, lease_id: str, answer: Mapping[str, Any], expires_at: datetime
    ) -> int:
        """The lease's real duration, once it ends by the approval's expiry at Vault itself.

        A lease longer than that (GET, or POST without ``ttl``: the role's default TTL) is
        renewed with the time left as increment; Vault takes the increment from now, capped by
        the role's max TTL, and answers the duration it set. If the lease cannot be renewed,
        the renew fails or Vault still answers longer, the lease is revoked at once and the
        claim refused: a secret that outlives its approval must not be handed out."""
        remaining = int((expires_at - self._clock()).total_seconds())
        duration = _number(answer.get("lease_duration"))
        if 0 < duration <= remaining + LEASE_SLACK_SECONDS:
            return duration
        why = ""
        if remaining <= 0:
            why = "the approval expired while Vault answered"
        elif answer.get("renewable") is False:
            why = "the lease is not renewable, so it cannot be shortened"
        else:
            renewed = self._authorized(
                "PUT", "sys/leases/renew", {"lease_id": lease_id, "increment": remaining}
            )
            duration = _number(_object(renewed).get("lease_duration"))
            if renewed.status_code != 200:
                why = f"shortening it failed: {_errors(renewed, self._secrets)}"
            elif not 0 < duration <= remaining + LEASE_SLACK_SECONDS:
                why = f"Vault kept it at {duration} s when asked for {remaining} s"
            else:
                return duration
        revoked = (
            "it was revoked"
            if self._revoke_unissued(lease_id)
            else f"revoking it failed too, so revoke lease {lease_id} by hand"
        )
        raise IssuerUnavailable(
            f"{self.name}: the lease Vault gave for {path} outlasts the approval "
            f"({remaining} s left; {why}); {revoked}. The Vault role's TTL is longer than the "
            "approval: set the role's default_ttl and max_ttl no longer than the rule's max_ttl"
        )

    def _revoke_unissued(self, lease_id: str) -> bool:
        """Revoke a lease stepup will not hand out. A failure is logged with the lease id (not
        a secret) for an operator to finish; the refusal that follows matters more."""
        try:
            self.revoke(lease_id)
        except IssuerUnavailable as exc:
            log.warning("vault %s: could not revoke refused lease %s: %s", self.name, lease_id, exc)
            return False
        return True

    def revoke(self, handle: str) -> None:
        response = self._authorized("PUT", "sys/leases/revoke", {"lease_id": handle})
        if response.status_code in (200, 204):  # 204 also for a lease already gone
            return
        if response.status_code == 400 and any(gone in _errors(response).lower() for gone in _GONE):
            return
        raise IssuerUnavailable(
            f"{self.name}: revoking lease {handle} failed: {_errors(response, self._secrets)}"
        )

    def check(self) -> str:
        response = self._authorized("GET", "auth/token/lookup-self")
        if response.status_code != 200:
            raise IssuerUnavailable(
                f"{self.name}: token lookup failed: {_errors(response, self._secrets)}"
            )
        data = _object(response).get("data") or {}
        policies = ", ".join(str(p) for p in data.get("policies") or [])
        ttl = _number(data.get("ttl"))
        lasting = f"ttl {ttl} s" if ttl else "no expiry"
        return f"token valid, policies [{policies}], {lasting}"
