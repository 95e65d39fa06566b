"""The engine on the in-memory store: every use case, no database, fixed times."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.audit.events import AuditKind
from core.credentials import JwtIssuer
from core.keys import KeyRing
from core.model import AgentIdentity
from core.policy import PolicyHolder, parse_policy
from core.service import Stepup
from core.snapshots import RequestSnapshot
from core.usecases.parts import Parts
from tests.support import ISSUER, OWNER, TEST_POLICY
from tests.unit.usecases.memory_store import MemoryStore, Notice

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
AGENT = AgentIdentity("deploy-bot", OWNER)
AGENT_KEY = "stpa_test-key"


@dataclass
class World:
    service: Stepup
    store: MemoryStore
    published: list[RequestSnapshot]

    def audit_kinds(self, request_id: str) -> list[AuditKind]:
        return [e.kind for e in self.store.state.audit if e.request_id == request_id]

    def notices(self, request_id: str, kind: str | None = None) -> list[Notice]:
        return [
            n
            for n in self.store.state.outbox
            if n.request_id == request_id and (kind is None or n.kind == kind)
        ]

    def stored(self, request_id: str) -> RequestSnapshot:
        return self.service.get(request_id)


def build_world(tmp_path: Path, policy: str = TEST_POLICY) -> World:
    keyring = KeyRing.load_or_create(tmp_path / "keys")
    store = MemoryStore()
    store.state.agents[AGENT_KEY] = AGENT
    parts = Parts(
        store,
        PolicyHolder(parse_policy(policy)),
        keyring,
        JwtIssuer(keyring, issuer_url=ISSUER),
        ISSUER,
        security_channel="C0SECURITY",
    )
    service = Stepup.on_store(parts)
    published: list[RequestSnapshot] = []
    service.subscribe(published.append)
    return World(service, store, published)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return build_world(tmp_path)
