"""The running service's side of retention: the engine as `stepup serve` builds it
(``build_service``), on SQLite and PostgreSQL, with the rotation done by another ring on the
same directory, as `stepup keys rotate` does.

- a retired key stays in the JWKS for the longest credential the policy *in force* allows
  (plus skew), whatever the rotating command assumed;
- once a key has left the JWKS, introspection no longer trusts it: a leaked retired key
  cannot mint a credential that introspection calls active.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import jwt
import pytest

from bot.settings import Settings
from bot.wiring import build_service
from core.agents import AgentRegistry
from core.keyretention import CLOCK_SKEW
from core.keys import KeyRing
from core.model import ActionClass
from core.service import Stepup
from tests.conftest import T0
from tests.support import OWNER, TEST_POLICY, intent

MINUTE = timedelta(minutes=1)
POLICY_LONGEST = timedelta(minutes=15)  # TEST_POLICY's defaults.max_ttl


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[Stepup]:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "policy.yaml").write_text(TEST_POLICY)
    for name, value in {
        "STEPUP_DATABASE_URL": database_url,
        "STEPUP_POLICY_FILE": str(tmp_path / "policy.yaml"),
        "STEPUP_KEYS_DIR": str(tmp_path / "keys"),
        "STEPUP_PUBLIC_URL": "https://stepup.test",
    }.items():
        monkeypatch.setenv(name, value)
    built = build_service(Settings())
    yield built
    built.db.dispose()


def kids(ring: KeyRing, at: datetime) -> list[str]:
    return [k["kid"] for k in ring.jwks(at)["keys"]]


def rotate_elsewhere(tmp_path: Path, *, lifetime: timedelta, at: timedelta = MINUTE) -> str:
    """What `stepup keys rotate` does to the shared directory; the service then notices."""
    return KeyRing.load_or_create(tmp_path / "keys").rotate(T0 + at, lifetime=lifetime)


def test_a_retired_key_stays_for_the_longest_credential_of_the_policy_in_force(
    service: Stepup, tmp_path: Path
) -> None:
    ring = service.keyring
    old = ring.active_kid
    new = rotate_elsewhere(tmp_path, lifetime=MINUTE)  # the rotating command assumed 1 minute
    ring.reload_soon()
    gone = T0 + MINUTE + POLICY_LONGEST + CLOCK_SKEW

    assert kids(ring, gone - timedelta(seconds=1)) == [new, old]
    assert kids(ring, gone) == [new]

    (tmp_path / "policy.yaml").write_text(TEST_POLICY.replace("max_ttl: 15m", "max_ttl: 1h"))
    service.policy.reload(tmp_path / "policy.yaml")  # what SIGHUP does
    assert kids(ring, T0 + MINUTE + timedelta(hours=1) + CLOCK_SKEW - MINUTE) == [new, old]


def test_a_leaked_retired_key_mints_nothing_introspection_trusts_once_out_of_the_jwks(
    service: Stepup, tmp_path: Path
) -> None:
    registry = AgentRegistry(service)
    agent = registry.authenticate(registry.add("batch-bot", OWNER, by="t", now=T0))
    read = intent(agent, action="db.query", action_class=ActionClass.READ, environment="staging")
    snap, _ = service.submit(agent, read, now=T0)
    _, issued = service.claim(snap.id, agent, now=T0)
    leaked, old = service.keyring.private_key, service.keyring.active_kid
    new = rotate_elsewhere(tmp_path, lifetime=POLICY_LONGEST)
    service.keyring.reload_soon()
    assert service.introspect(issued.token, now=T0 + MINUTE)["active"] is True  # unexpired
    assert kids(service.keyring, T0 + MINUTE) == [new, old]

    # The attacker copies a live jti and grants themselves more, with the retired key.
    claims = jwt.decode(issued.token, options={"verify_signature": False})
    forged_claims = claims | {"scope": "db.drop_database", "exp": int(T0.timestamp()) + 7200}
    forged = jwt.encode(
        forged_claims, leaked, algorithm="EdDSA", headers={"kid": old, "typ": "at+jwt"}
    )
    gone = T0 + MINUTE + POLICY_LONGEST + CLOCK_SKEW

    # While the old key is still published its signature is indistinguishable from ours, but
    # the claims are not what was issued under that jti: introspection refuses them anyway.
    assert service.introspect(forged, now=gone - timedelta(seconds=1)) == {"active": False}
    assert service.introspect(forged, now=gone) == {"active": False}
