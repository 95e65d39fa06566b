"""Rotation seen by running rings: reload without restart, retention in the JWKS, bad new keys.

Each ring here runs on a hand-set monotonic clock (``Ticks``), so "two seconds later" is a
number, not a sleep. Rotations "elsewhere" are real other processes (fork) on the same
directory, as a `stepup keys rotate` next to running replicas would be.
"""

from __future__ import annotations

import base64
import json
import logging
import multiprocessing
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core import keydir
from core.credentials import CREDENTIAL_TYP
from core.errors import ConfigError
from core.keyfiles import jwk_thumbprint
from core.keyretention import CLOCK_SKEW, KeyRecord, read_manifest, write_manifest
from core.keys import CHECK_INTERVAL_SECONDS, KeyRing, RejectedToken

T = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
FIFTEEN_MINUTES = timedelta(minutes=15)


class Ticks:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = CHECK_INTERVAL_SECONDS) -> None:
        self.now += seconds


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def ticks() -> Ticks:
    return Ticks()


@pytest.fixture
def ring(keys_dir: Path, ticks: Ticks) -> KeyRing:
    return KeyRing.load_or_create(keys_dir, clock=ticks)


def kid_of(token: str) -> str:
    head = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["kid"])


def signed_kid(ring: KeyRing) -> str:
    return kid_of(ring.sign({"n": 1}, typ="test+jwt"))


def jwks_kids(ring: KeyRing, now: datetime) -> list[str]:
    return [k["kid"] for k in ring.jwks(now)["keys"]]


def _rotate_elsewhere(directory: str, when: str, lifetime_s: float) -> str:
    ring = KeyRing.load_or_create(Path(directory))
    return ring.rotate(datetime.fromisoformat(when), lifetime=timedelta(seconds=lifetime_s))


def rotate_in_another_process(
    directory: Path, when: datetime = T, lifetime: timedelta = FIFTEEN_MINUTES
) -> str:
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        return str(
            pool.apply(
                _rotate_elsewhere, (str(directory), when.isoformat(), lifetime.total_seconds())
            )
        )


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` the way an operator's tool might: a new file, renamed into place."""
    tmp = path.with_name(".operator.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


# ----------------------------------------------------------------------------- reload


def test_a_rotation_by_another_process_is_used_after_the_check_interval(
    ring: KeyRing, keys_dir: Path, ticks: Ticks
) -> None:
    old = ring.active_kid
    new = rotate_in_another_process(keys_dir)
    assert new != old

    # Within the interval the hot path does not even look at the directory.
    ticks.advance(CHECK_INTERVAL_SECONDS - 0.1)
    assert signed_kid(ring) == old
    ticks.advance(0.1)
    token = ring.sign({"n": 2}, typ="test+jwt")

    assert kid_of(token) == new == ring.active_kid
    assert ring.verify(token, typ="test+jwt") == {"n": 2}
    assert jwks_kids(ring, T) == [new, old]


def test_reload_soon_uses_the_new_key_at_the_next_signature(ring: KeyRing, keys_dir: Path) -> None:
    new = rotate_in_another_process(keys_dir)

    ring.reload_soon()  # what SIGHUP does

    assert signed_kid(ring) == new


def test_a_token_with_a_kid_not_yet_seen_makes_the_ring_look_at_once(
    ring: KeyRing, keys_dir: Path
) -> None:
    """A replica that has not yet noticed the rotation verifies its peer's new tokens as the
    active key's (not as an unrecorded retired key), and signs with it from then on."""
    elsewhere = KeyRing.load_or_create(keys_dir)
    new = elsewhere.rotate(T, lifetime=FIFTEEN_MINUTES)
    token = elsewhere.sign({"n": 3}, typ=CREDENTIAL_TYP)
    far_later = T + timedelta(days=30)  # long after any retired key left the JWKS

    assert ring.verify(token, typ=CREDENTIAL_TYP, now=far_later) == {"n": 3}
    assert ring.active_kid == new
    assert signed_kid(ring) == new


# ----------------------------------------------------------------------------- retention


def test_a_retired_key_leaves_the_jwks_when_its_last_credential_has_expired(
    ring: KeyRing, keys_dir: Path
) -> None:
    old = ring.active_kid
    old_token = ring.sign({"n": 4}, typ=CREDENTIAL_TYP)
    decision = ring.sign({"vote": "approve"}, typ="stepup-decision+jwt")
    ring.set_credential_lifetime(lambda: FIFTEEN_MINUTES)
    new = ring.rotate(T)
    gone = T + FIFTEEN_MINUTES + CLOCK_SKEW

    assert jwks_kids(ring, T) == [new, old]
    assert jwks_kids(ring, gone - timedelta(seconds=1)) == [new, old]
    assert jwks_kids(ring, gone) == [new]
    # A credential follows the JWKS; a signed decision verifies for as long as the log is kept.
    assert ring.verify(old_token, typ=CREDENTIAL_TYP, now=gone - timedelta(seconds=1))
    with pytest.raises(RejectedToken) as refused:
        ring.verify(old_token, typ=CREDENTIAL_TYP, now=gone)
    assert refused.value.reason == "retired_kid"
    assert ring.verify(decision, typ="stepup-decision+jwt") == {"vote": "approve"}
    assert (keys_dir / "public" / f"{old}.pem").exists()
    record = read_manifest(keys_dir)[old]
    assert (record.retired_at, record.jwks_until) == (T, gone)


def test_the_service_keeps_a_key_for_its_own_longest_credential_whatever_the_file_says(
    ring: KeyRing, keys_dir: Path
) -> None:
    old = ring.active_kid
    ring.rotate(T, lifetime=timedelta(minutes=1))  # the rotating command assumed 1 minute
    ring.set_credential_lifetime(lambda: timedelta(hours=1))  # the service's policy says 1 h

    assert old in jwks_kids(ring, T + timedelta(hours=1, minutes=4))
    assert old not in jwks_kids(ring, T + timedelta(hours=1) + CLOCK_SKEW)
    # ...and the file's longer time wins over a shorter policy.
    ring.set_credential_lifetime(lambda: timedelta(seconds=10))
    assert old in jwks_kids(ring, T + timedelta(minutes=5, seconds=59))
    assert old not in jwks_kids(ring, T + timedelta(minutes=6))


def test_retired_keys_are_listed_newest_retirement_first(ring: KeyRing) -> None:
    first = ring.active_kid
    second = ring.rotate(T)
    third = ring.rotate(T + timedelta(minutes=1))

    assert jwks_kids(ring, T + timedelta(minutes=2)) == [third, second, first]
    statuses = ring.key_statuses()
    assert [(s.kid, s.active) for s in statuses] == [(third, True), (second, False), (first, False)]
    assert [s.retired_at for s in statuses] == [None, T + timedelta(minutes=1), T]


def test_a_retired_key_without_a_record_counts_as_retired_when_the_active_key_was_created(
    ring: KeyRing, keys_dir: Path
) -> None:
    """Keys retired before keys.json existed: kept until the active key's creation plus the
    longest credential plus skew; the next rotation writes that estimate down."""
    legacy = ring.active_kid
    current = ring.rotate(T, lifetime=FIFTEEN_MINUTES)
    (keys_dir / "keys.json").unlink()
    created = T + timedelta(seconds=30)
    os.utime(keys_dir / "public" / f"{current}.pem", (created.timestamp(),) * 2)
    older = (T - timedelta(days=90)).timestamp()
    os.utime(keys_dir / "public" / f"{legacy}.pem", (older, older))
    reloaded = KeyRing.load_or_create(keys_dir)
    reloaded.set_credential_lifetime(lambda: FIFTEEN_MINUTES)
    gone = created + FIFTEEN_MINUTES + CLOCK_SKEW

    (status,) = [s for s in reloaded.key_statuses() if s.kid == legacy]
    assert (status.retired_at, status.estimated, status.jwks_until) == (created, True, gone)
    assert jwks_kids(reloaded, gone - timedelta(seconds=1)) == [current, legacy]
    assert jwks_kids(reloaded, gone) == [current]

    reloaded.rotate(T + timedelta(days=1), lifetime=FIFTEEN_MINUTES)
    assert read_manifest(keys_dir)[legacy] == KeyRecord(status.created_at, created, gone)


# ----------------------------------------------------------------------------- bad new keys


@pytest.mark.parametrize(
    "damage",
    ["half written", "garbage", "readable by others", "deleted", "not ed25519"],
)
def test_an_unusable_new_active_key_never_stops_signing(
    ring: KeyRing,
    keys_dir: Path,
    ticks: Ticks,
    caplog: pytest.LogCaptureFixture,
    damage: str,
) -> None:
    old = ring.active_kid
    replacement = Ed25519PrivateKey.generate()
    active = keys_dir / "active.key"
    if damage == "half written":
        with active.open("r+b") as handle:  # as `cp` would leave it, mid-copy
            handle.truncate(0)
            handle.write(pem(replacement)[:50])
    elif damage == "garbage":
        write_private(active, b"not a key\n")
    elif damage == "readable by others":
        write_private(active, pem(replacement), mode=0o644)
    elif damage == "deleted":
        active.unlink()
    else:
        write_private(active, b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIE\n")

    with caplog.at_level(logging.ERROR, logger="core.keys"):
        for _ in range(3):
            ticks.advance()
            token = ring.sign({"n": 5}, typ="test+jwt")
            assert kid_of(token) == old
            assert ring.verify(token, typ="test+jwt") == {"n": 5}
        assert jwks_kids(ring, T)[0] == old

    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, errors  # once, not every two seconds
    assert f"still signing with key {old}" in errors[0].getMessage()
    assert "PRIVATE" not in errors[0].getMessage()

    write_private(active, pem(replacement))  # repaired: used at the next check
    ticks.advance()
    assert signed_kid(ring) == jwk_thumbprint(replacement.public_key())
    assert (keys_dir / "public" / f"{signed_kid(ring)}.pem").exists()  # published first


def test_a_malformed_keys_json_is_refused_at_start_and_kept_around_while_running(
    ring: KeyRing, keys_dir: Path, ticks: Ticks, caplog: pytest.LogCaptureFixture
) -> None:
    old = ring.active_kid
    (keys_dir / "keys.json").write_text('{"version": 1, "keys": {"x": 1}}')

    with pytest.raises(ConfigError, match=r"keys\.json"):
        KeyRing.load_or_create(keys_dir)
    with caplog.at_level(logging.ERROR, logger="core.keys"):
        ticks.advance()
        assert signed_kid(ring) == old
    assert "keys.json" in caplog.text
    with pytest.raises(ConfigError, match=r"keys\.json"):
        ring.rotate(T)
    assert signed_kid(ring) == old


# ----------------------------------------------------------------------------- concurrency


def _rotate_after(directory: str, barrier: multiprocessing.synchronize.Barrier, i: int) -> str:
    ring = KeyRing.load_or_create(Path(directory))

    def read_slowly(path: Path) -> dict[str, KeyRecord]:
        # Widens the race: between reading keys.json and writing it back, every other
        # rotation has time to start. Only the lock keeps them from reading the same file.
        records = read_manifest(path)
        time.sleep(0.2)
        return records

    keydir.read_manifest = read_slowly  # type: ignore[assignment]  # this child process only
    barrier.wait()
    return ring.rotate(T + timedelta(seconds=i), lifetime=FIFTEEN_MINUTES)


def test_concurrent_rotations_lose_no_retired_key(ring: KeyRing, keys_dir: Path) -> None:
    first = ring.active_kid
    context = multiprocessing.get_context("fork")
    barrier = context.Manager().Barrier(6)
    with context.Pool(6) as pool:
        made = pool.starmap(_rotate_after, [(str(keys_dir), barrier, i) for i in range(6)])

    ring.reload_soon()
    active = signed_kid(ring)
    records = read_manifest(keys_dir)
    retired = {kid for kid, record in records.items() if record.retired_at is not None}
    assert active in made
    # Every key that was ever active is recorded as retired, except the one active now, and
    # each rotation's own time is written down: its new key's creation and one retirement.
    # (Without the lock, rotations overwrite each other's records, and the lost ones come
    # back only as estimates from file times.)
    assert retired == {first, *made} - {active}
    assert [records[kid].created_at for kid in made] == [T + timedelta(seconds=i) for i in range(6)]
    assert sorted(records[kid].retired_at for kid in retired) == [  # type: ignore[type-var]
        T + timedelta(seconds=i) for i in range(6)
    ]
    assert [s.estimated for s in ring.key_statuses()] == [False] * 7
    assert sorted(jwks_kids(ring, T)) == sorted({first, *made})


def test_keys_json_round_trips_and_is_written_whole(keys_dir: Path) -> None:
    keys_dir.mkdir()
    kid = "A" * 43
    record = KeyRecord(T, T + timedelta(minutes=1), T + timedelta(minutes=21))
    write_manifest(keys_dir, {kid: record})

    assert read_manifest(keys_dir) == {kid: record}
    assert json.loads((keys_dir / "keys.json").read_bytes())["keys"][kid]["retired_at"] == (
        "2026-11-02T09:31:00Z"
    )
    assert [p.name for p in keys_dir.iterdir()] == ["keys.json"]
