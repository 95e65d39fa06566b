"""The issuer interface: what every credential issuer (PostgreSQL, Vault, AWS STS, a GitHub App,
an HTTP broker) provides, and the errors it raises (docs/issuers.md).

An issuer *type* (``IssuerType``) knows its settings and grant shapes and builds issuers; an
*issuer* is one configured instance (``orders-db``), named in the policy's ``issuers:`` map.

Contract for implementations:

- ``issue`` mints one credential for one approved request, valid until ``expires_at`` at the
  latest (or the issuer's own minimum when it cannot do shorter: ``min_ttl``). It returns the
  secret (shown to the agent once, never stored or logged), a *handle* that is enough to revoke
  it later (a role name, a lease id; stored in the database, so never the secret itself unless
  sealed with a key that is not in the database) and the real expiry.
- ``revoke`` is idempotent and safe to retry: revoking what is already gone succeeds. Any
  failure raises (``IssuerUnavailable``); the scheduler retries with backoff and alerts.
- ``check`` tests reachability and permission without issuing anything.
- No method logs a secret or puts one in an exception message.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict


class IssuerUnavailable(Exception):
    """The issuer could not issue, revoke or be checked. The message is safe to show and log:
    it never holds a secret."""


class GrantRefused(ValueError):
    """A grant (or a value substituted into one) is not acceptable to its issuer.

    ``field`` names where: ``grant.member_of[0]`` or ``parameters.table``."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


class IssuerSettings(BaseModel):
    """Base of every issuer type's settings (the policy's ``issuers.NAME`` minus ``type``).

    Secrets appear only as the *names* of environment variables (``*_env``), never inline."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Grant(BaseModel):
    """Base of every issuer type's grant (a rule's ``grant:``), after placeholders were filled."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class IssueRequest:
    """The approved request a credential is for (what a grant's placeholders and an issuer's
    tags, session names and audit trails may use)."""

    request_id: str
    agent: str
    action: str
    target: str
    environment: str
    args_digest: str


@dataclass(frozen=True, slots=True)
class Issued:
    """What ``issue`` returns: the secret (once), the handle (stored), the real expiry."""

    secret: Mapping[str, Any] = field(repr=False)
    handle: str
    expires_at: datetime  # aware, UTC


class Issuer(Protocol):
    """One configured issuer (``issuers.orders-db`` of the policy)."""

    name: str
    type: str

    @property
    def min_ttl(self) -> timedelta:
        """The shortest credential the issuer can mint (AWS STS: 15 minutes); else zero."""
        ...

    def issue(self, grant: Grant, request: IssueRequest, expires_at: datetime) -> Issued: ...

    def revoke(self, handle: str) -> None: ...

    def check(self) -> str:
        """Reachable and permitted: a one-line account of what was verified. Raises
        ``IssuerUnavailable`` saying what is wrong."""
        ...


@dataclass(frozen=True)
class BuildContext:
    """What an issuer may need from the service when it is built."""

    environ: Mapping[str, str]  # where ``*_env`` settings are looked up (os.environ)
    sign: Any = None  # Callable[[dict[str, Any], str], str]: JWS with the service's key (typ)
    issuer_url: str = ""  # the service's public URL (iss of what it signs)


class IssuerType(Protocol):
    """An issuer type: its name in the policy, settings and grant models, the pattern every
    value substituted into its grants must match, and how to build and describe."""

    type: ClassVar[str]
    settings_model: ClassVar[builtins.type[IssuerSettings]]
    grant_model: ClassVar[builtins.type[Grant]]
    safe_value: ClassVar[re.Pattern[str]]
    safe_value_text: ClassVar[str]  # the pattern in words, for error messages
    min_ttl: ClassVar[timedelta]

    @classmethod
    def build(cls, name: str, settings: IssuerSettings, context: BuildContext) -> Issuer: ...

    @classmethod
    def describe(cls, name: str, settings: IssuerSettings, grant: Grant) -> str:
        """What will be issued, in plain words without the TTL (``PostgreSQL login on
        orders-db, member of orders_reader``); the card adds the TTL and escapes it."""
        ...
