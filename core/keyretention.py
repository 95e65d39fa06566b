"""When each signing key was created and retired, and how long a retired key stays in the JWKS.

A retired key stays in the JWKS until every token it can have signed has expired: its
retirement time plus the longest credential lifetime plus ``CLOCK_SKEW`` (a verifier whose
clock is behind still accepts a token that long). After that the JWKS drops it; its public
file stays on disk, so signed decisions in the audit log remain verifiable.

The times are kept in ``keys.json`` in the keys directory, written by ``keys rotate`` (under the
rotation lock, atomically)::

    {"version": 1, "keys": {"<kid>": {"created_at": "…Z", "retired_at": "…Z",
                                      "jwks_until": "…Z"}}}

A running service never drops a key earlier than ``retired_at`` + its own longest credential
lifetime + ``CLOCK_SKEW``, whatever the file says. A retired key with no record (retired before
the file existed) counts as retired when the active key was created: no later than that.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError
from core.keyfiles import write_file_atomically

if TYPE_CHECKING:
    from core.policy import Policy

MANIFEST_FILE = "keys.json"
CLOCK_SKEW = timedelta(minutes=5)
# The API's cap on ``requested_ttl_seconds``: the bound used when the policy is not known.
REQUESTED_TTL_CAP = timedelta(seconds=86_400)

_KID = re.compile(r"^[A-Za-z0-9_-]{43}$")  # unpadded base64url of a SHA-256 digest
_FIELDS = ("created_at", "retired_at", "jwks_until")
_MAX_MANIFEST_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class KeyRecord:
    """What ``keys.json`` says about one key."""

    created_at: datetime | None = None
    retired_at: datetime | None = None
    jwks_until: datetime | None = None


@dataclass(frozen=True)
class KeyStatus:
    """One key as ``keys list`` shows it and as the JWKS is built from."""

    kid: str
    created_at: datetime | None
    active: bool
    retired_at: datetime | None = None
    # Published until then; None for the active key, or when there is nothing to go by
    # (a ring read from a JWKS): published.
    jwks_until: datetime | None = None
    estimated: bool = False  # no record: retired_at is an upper bound

    def published(self, now: datetime) -> bool:
        return self.active or self.jwks_until is None or now < self.jwks_until


def longest_credential_ttl(policy: Policy) -> timedelta:
    """The longest lifetime a credential minted under ``policy`` can have."""
    ttls = [policy.defaults.max_ttl]
    for rule in policy.rules:
        ttls += [rule.decision.max_ttl, rule.on_break_glass.max_ttl]
    return max(ttls)


def key_statuses(
    active_kid: str,
    created: Mapping[str, datetime | None],
    records: Mapping[str, KeyRecord],
    *,
    lifetime: timedelta,
) -> list[KeyStatus]:
    """Every key of ``created`` (kid → its public file's time), the active one first, then
    the retired ones, most recently retired first. ``lifetime``: the longest credential."""

    def created_at(kid: str) -> datetime | None:
        record = records.get(kid)
        return record.created_at if record and record.created_at else created.get(kid)

    active_since = created_at(active_kid)
    retired: list[KeyStatus] = []
    for kid in created:
        if kid == active_kid:
            continue
        record = records.get(kid, KeyRecord())
        retired_at, estimated = record.retired_at, False
        if retired_at is None:
            known = [t for t in (active_since, created_at(kid)) if t is not None]
            retired_at, estimated = (max(known) if known else None), True
        until = None
        if retired_at is not None:
            until = retired_at + lifetime + CLOCK_SKEW
            if record.jwks_until is not None:
                until = max(until, record.jwks_until)
        retired.append(KeyStatus(kid, created_at(kid), False, retired_at, until, estimated))
    retired.sort(key=lambda s: s.kid)
    retired.sort(key=lambda s: s.retired_at or datetime.max.replace(tzinfo=UTC), reverse=True)
    return [KeyStatus(active_kid, active_since, True), *retired]


def rotation_records(
    records: Mapping[str, KeyRecord],
    before: Iterable[KeyStatus],
    *,
    new_kid: str,
    now: datetime,
    lifetime: timedelta,
) -> dict[str, KeyRecord]:
    """``keys.json`` after a rotation at ``now``: the active key of ``before`` retired now, kept
    in the JWKS for ``lifetime`` + skew; unrecorded retired keys get their estimate written
    down, so a later rotation cannot move it; the new key created now."""
    after = dict(records)
    for status in before:
        if status.active:
            after[status.kid] = KeyRecord(status.created_at, now, now + lifetime + CLOCK_SKEW)
        elif records.get(status.kid, KeyRecord()).retired_at is None:
            after[status.kid] = KeyRecord(status.created_at, status.retired_at, status.jwks_until)
    after[new_kid] = KeyRecord(created_at=now)
    return after


# --------------------------------------------------------------------- keys.json


def read_manifest(directory: Path) -> dict[str, KeyRecord]:
    """The records in ``directory/keys.json``; none if absent; ``ConfigError`` if malformed."""
    path = directory / MANIFEST_FILE
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > _MAX_MANIFEST_BYTES:
        raise ConfigError(f"{path} is too large")
    try:
        data = json.loads(raw)
    except ValueError:
        raise ConfigError(f"{path} is not JSON") from None
    if not isinstance(data, dict) or data.get("version") != 1:
        raise ConfigError(f"{path}: expected an object with version 1")
    keys = data.get("keys")
    if not isinstance(keys, dict):
        raise ConfigError(f"{path}: 'keys' must be an object")
    return {kid: _record(path, kid, entry) for kid, entry in keys.items()}


def write_manifest(directory: Path, records: Mapping[str, KeyRecord]) -> None:
    keys = {
        kid: {name: _iso(getattr(record, name)) for name in _FIELDS}
        for kid, record in sorted(records.items())
    }
    text = json.dumps({"version": 1, "keys": keys}, indent=2) + "\n"
    write_file_atomically(directory, MANIFEST_FILE, text.encode("ascii"), 0o644)


def _record(path: Path, kid: str, entry: Any) -> KeyRecord:
    if not _KID.match(kid) or not isinstance(entry, dict):
        raise ConfigError(f"{path}: {kid!r} is not a key id with an object of times")
    return KeyRecord(**{name: _time(path, kid, name, entry.get(name)) for name in _FIELDS})


def _time(path: Path, kid: str, name: str, value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ConfigError(f"{path}: {kid}.{name} is not an ISO 8601 time with a zone")
    return moment.astimezone(UTC)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
