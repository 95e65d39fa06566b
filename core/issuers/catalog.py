"""The issuer types stepup knows, the policy's configured issuers, and the live instances.

``IssuerConfig`` is one entry of the policy's ``issuers:`` map, validated when the policy is
compiled (``stepup policy check``). ``Issuers`` builds each configured issuer once, on first
use, and keeps it across policy reloads while its settings stay the same (connections, Vault
logins); an issuer that left the policy is still built from its last settings when a credential
it issued must be revoked.
"""

from __future__ import annotations

import builtins
import importlib
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from pydantic import ValidationError

from core.issuers.base import (
    BuildContext,
    Grant,
    GrantRefused,
    Issuer,
    IssuerSettings,
    IssuerType,
    IssuerUnavailable,
)
from core.issuers.grants import SAMPLE_VALUE, fill, placeholders

JWT = "jwt"  # the built-in credential: ``credential_type`` of rules without ``issuer:``

_MODULES = {
    "postgres": "core.issuers.postgres",
    "vault": "core.issuers.vault",
    "aws_sts": "core.issuers.aws_sts",
    "github_app": "core.issuers.github_app",
    "http": "core.issuers.http_broker",
}
TYPE_NAMES = tuple(_MODULES)


def issuer_type(name: str) -> type[IssuerType]:
    """The issuer type called ``name`` in a policy (``postgres``); KeyError when unknown."""
    module = importlib.import_module(_MODULES[name])
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and getattr(value, "type", None) == name
            and hasattr(value, "settings_model")
            and hasattr(value, "grant_model")
            and hasattr(value, "build")
        ):
            return cast(type[IssuerType], value)
    raise KeyError(name)  # pragma: no cover - every module defines its type


@dataclass(frozen=True)
class IssuerConfig:
    """One validated entry of the policy's ``issuers:`` map."""

    name: str
    type: str
    settings: IssuerSettings

    @property
    def kind(self) -> builtins.type[IssuerType]:
        return issuer_type(self.type)

    @classmethod
    def parse(cls, name: str, raw: Mapping[str, Any]) -> IssuerConfig:
        """From the policy's mapping; ``ValueError`` with a message naming the key."""
        kind_name = raw.get("type")
        if not isinstance(kind_name, str) or kind_name not in _MODULES:
            raise ValueError(f"type must be one of {', '.join(TYPE_NAMES)}")
        settings = {key: value for key, value in raw.items() if key != "type"}
        try:
            parsed = issuer_type(kind_name).settings_model.model_validate(settings)
        except ValidationError as exc:
            raise ValueError(_first_error(exc)) from None
        return cls(name=name, type=kind_name, settings=parsed)

    def check_template(self, template: Mapping[str, Any]) -> None:
        """A rule's grant template: known placeholders, and the shape its issuer accepts once
        they are filled (with a sample value). ``GrantRefused`` names the field."""
        placeholders(template)
        kind = self.kind
        sample = SAMPLE_VALUE if kind.safe_value.fullmatch(SAMPLE_VALUE) else None
        if sample is None:  # pragma: no cover - every type accepts a plain word
            return
        values = dict.fromkeys(("target", "action", "environment", "agent", "request_id"), sample)
        filled = fill(
            template,
            values,
            _SampleParameters(sample),
            safe=kind.safe_value,
            safe_text=kind.safe_value_text,
            issuer_type=self.type,
        )
        self.grant(filled)

    def grant(self, filled: Mapping[str, Any]) -> Grant:
        """The filled grant as its issuer's model; ``GrantRefused`` naming the field."""
        try:
            return self.kind.grant_model.model_validate(filled)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in ("grant", *error["loc"]))
            raise GrantRefused(where, error["msg"]) from None

    def describe(self, grant: Grant) -> str:
        return self.kind.describe(self.name, self.settings, grant)

    @property
    def settings_record(self) -> dict[str, Any]:
        """The settings as JSON values (no secret: secrets are only named, ``*_env``)."""
        return self.settings.model_dump(mode="json")

    def record(self) -> str:
        """What a credential keeps to be revoked with exactly these settings later, even after
        the policy changed them, renamed the issuer or dropped it."""
        return json.dumps(
            {"name": self.name, "type": self.type, "settings": self.settings_record},
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_record(cls, text: str) -> IssuerConfig:
        raw = json.loads(text)
        return cls.parse(str(raw["name"]), {"type": raw["type"], **raw["settings"]})


class _SampleParameters(dict[str, Any]):
    """Every parameter name answers the sample value (policy check knows no request)."""

    def __init__(self, sample: str) -> None:
        super().__init__()
        self._sample = sample

    def get(self, key: str, default: Any = None) -> Any:
        return self._sample


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])


class Issuers:
    """Issuers built once per name and settings (thread-safe): the current policy's, and
    those a credential's record names (what it was minted with, to revoke it with)."""

    def __init__(
        self, configured: Callable[[], Mapping[str, IssuerConfig]], context: BuildContext
    ) -> None:
        self._configured = configured  # the current policy's ``issuers:``
        self._context = context
        self._built: dict[str, Issuer] = {}  # by record
        self._lock = threading.Lock()

    def config(self, name: str) -> IssuerConfig:
        """The current policy's issuer ``name``; IssuerUnavailable when it has none."""
        config = self._configured().get(name)
        if config is None:
            raise IssuerUnavailable(f"issuer {name!r} is not configured")
        return config

    def get(self, name: str) -> Issuer:
        """The current policy's issuer ``name``."""
        return self.build(self.config(name))

    def build(self, config: IssuerConfig) -> Issuer:
        key = config.record()
        with self._lock:
            issuer = self._built.get(key)
            if issuer is None:
                issuer = config.kind.build(config.name, config.settings, self._context)
                self._built[key] = issuer
            return issuer

    def recorded(self, name: str, record: str | None) -> Issuer:
        """The issuer a credential was minted by, with the settings it was minted under
        (``record``); the current policy's ``name`` for a credential without one."""
        if not record:
            return self.get(name)
        try:
            config = IssuerConfig.from_record(record)
        except (ValueError, KeyError, TypeError) as exc:
            raise IssuerUnavailable(f"issuer {name!r}: unreadable settings record") from exc
        return self.build(config)

    def names(self) -> list[str]:
        """The current policy's issuers."""
        return sorted(self._configured())
