"""The ``github_app`` issuer: an installation access token of a GitHub App, narrowed to the
grant's repositories and permissions, revoked with ``DELETE /installation/token``
(docs/issuers/github_app.md).

GitHub revokes an installation token only when the token itself is presented, so the handle must
let stepup recover it; it is stored *sealed* with a key derived from the App's private key, which
the database does not hold (``core.issuers.sealing``).
"""

from __future__ import annotations

import builtins
import logging
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import Field, field_validator

from core.issuers.base import (
    BuildContext,
    Grant,
    Issued,
    IssueRequest,
    IssuerSettings,
    IssuerUnavailable,
)
from core.issuers.sealing import SealError, seal, unseal

log = logging.getLogger(__name__)

SEAL_PURPOSE = b"stepup github_app handle v1"
MAX_HANDLE = 4000
_REPO = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_PERMISSION = re.compile(r"[a-z_]{1,64}")
Level = Literal["read", "write", "admin"]
_LEVELS = {"read": 1, "write": 2, "admin": 3}
# GitHub adds read access to repository metadata (names, collaborators) to every token that
# has a repository permission; it is not a widening.
_IMPLIED: dict[str, Level] = {"metadata": "read"}
_API_HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}


class GitHubAppSettings(IssuerSettings):
    app_id: int = Field(gt=0)
    installation_id: int = Field(gt=0)
    private_key_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    api_url: str = "https://api.github.com"
    timeout_seconds: float = Field(default=10, gt=0, le=120)

    @field_validator("api_url")
    @classmethod
    def _https(cls, value: str) -> str:
        """The App JWT and the tokens travel over this URL: plain HTTP is refused."""
        if not re.fullmatch(r"https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?", value):
            raise ValueError("must be an https:// URL (GitHub or GitHub Enterprise Server API)")
        return value.rstrip("/")


class GitHubAppGrant(Grant):
    repositories: list[str] = Field(min_length=1, max_length=500)
    permissions: dict[str, Level] = Field(min_length=1)

    @field_validator("repositories")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        """Names only (the installation's owner is implied): an ``owner/name`` or a wildcard
        would not narrow anything."""
        for index, name in enumerate(value):
            if not _REPO.fullmatch(name):
                raise ValueError(
                    f"[{index}]: a repository name, letters, digits, '_', '.', '-' (1-100), "
                    "without the owner"
                )
        return value

    @field_validator("permissions")
    @classmethod
    def _keys(cls, value: dict[str, Level]) -> dict[str, Level]:
        for key in value:
            if not _PERMISSION.fullmatch(key):
                raise ValueError(f"{key[:64]!r}: a GitHub permission name ([a-z_], 1-64)")
        return value


class GitHubAppType:
    type: ClassVar[str] = "github_app"
    settings_model: ClassVar[builtins.type[IssuerSettings]] = GitHubAppSettings
    grant_model: ClassVar[builtins.type[Grant]] = GitHubAppGrant
    safe_value: ClassVar[re.Pattern[str]] = re.compile(r"[A-Za-z0-9_.-]{1,100}")
    safe_value_text: ClassVar[str] = "letters, digits, '_', '.' or '-' (1 to 100 characters)"
    min_ttl: ClassVar[timedelta] = timedelta(0)

    @classmethod
    def build(cls, name: str, settings: IssuerSettings, context: BuildContext) -> GitHubAppIssuer:
        assert isinstance(settings, GitHubAppSettings)
        return GitHubAppIssuer(name, settings, context.environ)

    @classmethod
    def describe(cls, name: str, settings: IssuerSettings, grant: Grant) -> str:
        assert isinstance(grant, GitHubAppGrant)
        permissions = ", ".join(f"{key}: {level}" for key, level in grant.permissions.items())
        return f"GitHub App token from {name} for {', '.join(grant.repositories)} ({permissions})"


def _wider(asked: GitHubAppGrant, body: Mapping[str, Any]) -> str | None:
    """Why GitHub's answer grants more than was asked, or None. Fails closed: an answer that
    does not list what it covers counts as wider."""
    permissions = body.get("permissions")
    if not isinstance(permissions, dict):
        return "the answer lists no permissions"
    for key, level in permissions.items():
        wanted = asked.permissions.get(key, _IMPLIED.get(key))
        if wanted is None or _LEVELS.get(str(level), 99) > _LEVELS[wanted]:
            return f"permission {key}: {level} was not asked for"
    if body.get("repository_selection") == "all":
        return "the token covers all repositories"
    repositories = body.get("repositories")
    if not isinstance(repositories, list) or not repositories:
        return "the answer lists no repositories"
    names = [repo.get("name") if isinstance(repo, dict) else None for repo in repositories]
    extra = [str(name) for name in names if name not in asked.repositories]
    if extra:
        return f"repositories not asked for: {', '.join(extra[:5])}"
    return None


def _object(response: requests.Response) -> dict[str, Any]:
    """The JSON object of an answer, or an empty one (a proxy's HTML page, a truncated body)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _github_error(response: requests.Response) -> str:
    """GitHub's own ``message`` (it never echoes a token), shortened."""
    message = _object(response).get("message", "")
    return f"HTTP {response.status_code}" + (f" ({str(message)[:200]})" if message else "")


class GitHubAppIssuer:
    """One configured GitHub App installation."""

    type = "github_app"

    def __init__(
        self,
        name: str,
        settings: GitHubAppSettings,
        environ: Mapping[str, str],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        session: requests.Session | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self._environ = environ
        self._clock = clock
        self._session = session or requests.Session()

    @property
    def min_ttl(self) -> timedelta:
        return timedelta(0)

    def _private_key_pem(self) -> bytes:
        """The App's key in canonical PEM, read at use; some deployments store the PEM with
        literal ``\\n``."""
        variable = self.settings.private_key_env
        value = self._environ.get(variable, "")
        if not value.strip():
            raise IssuerUnavailable(f"{self.name}: environment variable {variable} is not set")
        if "\n" not in value and "\\n" in value:
            value = value.replace("\\n", "\n")
        try:
            key = serialization.load_pem_private_key(value.strip().encode(), password=None)
        except (ValueError, TypeError):
            raise IssuerUnavailable(
                f"{self.name}: {variable} does not hold an unencrypted PEM private key"
            ) from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise IssuerUnavailable(
                f"{self.name}: {variable} is not an RSA key (GitHub signs RS256)"
            )
        # One canonical form (PKCS#8), so handles sealed before a cosmetic change of the
        # variable (PKCS#1 vs PKCS#8, escaped newlines) still open.
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def _app_jwt(self, pem: bytes) -> str:
        """GitHub's App JWT: ``iat`` 60 s back for clock drift, ``exp`` under its 10-minute
        limit."""
        now = int(self._clock().timestamp())
        claims = {"iat": now - 60, "exp": now + 9 * 60, "iss": str(self.settings.app_id)}
        return jwt.encode(claims, pem, algorithm="RS256")

    def _call(
        self, method: str, path: str, bearer: str, body: Mapping[str, Any] | None = None
    ) -> requests.Response:
        """One request; never follows a redirect (it would carry the bearer elsewhere)."""
        try:
            return self._session.request(
                method,
                self.settings.api_url + path,
                headers={**_API_HEADERS, "Authorization": f"Bearer {bearer}"},
                json=body,
                timeout=self.settings.timeout_seconds,
                allow_redirects=False,
            )
        except OSError as exc:  # requests' errors derive from it
            raise IssuerUnavailable(
                f"{self.name}: GitHub API unreachable ({type(exc).__name__})"
            ) from None

    def issue(self, grant: Grant, request: IssueRequest, expires_at: datetime) -> Issued:
        assert isinstance(grant, GitHubAppGrant)
        pem = self._private_key_pem()
        path = f"/app/installations/{self.settings.installation_id}/access_tokens"
        asked = {"repositories": list(grant.repositories), "permissions": dict(grant.permissions)}
        response = self._call("POST", path, self._app_jwt(pem), asked)
        if response.status_code != 201:
            raise IssuerUnavailable(
                f"{self.name}: installation token refused: {_github_error(response)}"
            )
        body = _object(response)
        token = body.get("token")
        if not isinstance(token, str) or not token:
            raise IssuerUnavailable(f"{self.name}: GitHub's answer holds no token")
        why = _wider(grant, body)
        if why is not None:
            self._discard(token)
            raise IssuerUnavailable(f"{self.name}: GitHub granted more than asked ({why})")
        handle = seal(pem, token, self.name, purpose=SEAL_PURPOSE)
        if len(handle) > MAX_HANDLE:
            self._discard(token)
            raise IssuerUnavailable(f"{self.name}: the token is too long to keep a handle for")
        log.info(
            "github_app %s: token for request %s, repositories %s",
            self.name,
            request.request_id,
            ",".join(grant.repositories),
        )
        return Issued(
            secret={
                "token": token,
                "repositories": [repo["name"] for repo in body["repositories"]],
                "permissions": dict(body["permissions"]),
            },
            handle=handle,
            expires_at=min(expires_at, self._github_expiry(body.get("expires_at"))),
        )

    def _github_expiry(self, value: object) -> datetime:
        """GitHub's ``expires_at`` (an hour out); if unreadable, assume the hour."""
        try:
            parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return self._clock() + timedelta(hours=1)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    def _discard(self, token: str) -> None:
        """Revoke a token that will not be handed out; a failure is logged (it still dies
        within the hour)."""
        try:
            self._revoke_token(token)
        except IssuerUnavailable as exc:
            log.warning("github_app %s: could not revoke a refused token: %s", self.name, exc)

    def _revoke_token(self, token: str) -> None:
        response = self._call("DELETE", "/installation/token", token)
        if response.status_code in (204, 401):  # 401: expired or revoked already
            return
        raise IssuerUnavailable(f"{self.name}: token revocation failed: {_github_error(response)}")

    def revoke(self, handle: str) -> None:
        pem = self._private_key_pem()
        try:
            token = unseal(pem, handle, self.name, purpose=SEAL_PURPOSE)
        except SealError:
            raise IssuerUnavailable(
                f"{self.name}: the handle cannot be opened (tampered, or the App key changed)"
            ) from None
        self._revoke_token(token)

    def check(self) -> str:
        installation = self.settings.installation_id
        response = self._call(
            "GET", f"/app/installations/{installation}", self._app_jwt(self._private_key_pem())
        )
        if response.status_code != 200:
            raise IssuerUnavailable(
                f"{self.name}: installation {installation} not reachable: {_github_error(response)}"
            )
        account = _object(response).get("account") or {}
        login = account.get("login", "?") if isinstance(account, dict) else "?"
        return f"installation {installation} on account {login} reachable"
