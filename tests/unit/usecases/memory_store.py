"""An in-memory ``Store`` (core/store.py) for unit tests of the use cases: no database.

A write transaction works on the live state and puts a copy back if the block raises, so a
failed use case leaves nothing behind, as a rolled-back SQL transaction would. Audit entries
and outbox notices are plain lists the tests read.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.audit.events import AuditKind, AuditLog
from core.delegation import Delegation
from core.errors import Conflict, DuplicateIdempotencyKey, DuplicateVote, NotFound, Unauthenticated
from core.model import AgentIdentity, Status
from core.snapshots import CredentialInfo, RequestSnapshot
from core.storage.requests_repo import new_snapshot
from core.store import LeasedRevocation, LiveCredential, NewCredential, NewVote, advance


@dataclass(frozen=True)
class Entry:
    kind: AuditKind
    request_id: str | None
    actor: str | None
    data: dict[str, Any]


@dataclass(frozen=True)
class Notice:
    kind: str
    request_id: str | None
    payload: dict[str, Any]


@dataclass
class State:
    requests: dict[str, RequestSnapshot] = field(default_factory=dict)
    bodies: dict[str, tuple[str, str, str]] = field(
        default_factory=dict
    )  # id -> agent, key, digest
    credentials: dict[str, CredentialInfo] = field(default_factory=dict)
    issued: dict[str, NewCredential] = field(default_factory=dict)
    revocations: dict[str, dict[str, Any]] = field(default_factory=dict)
    agents: dict[str, AgentIdentity] = field(default_factory=dict)  # key -> agent
    key_ends: dict[str, datetime] = field(default_factory=dict)  # key -> when it stops
    # (trust name, subject) -> agent: workload identities (docs/identity.md)
    workloads: dict[tuple[str, str], AgentIdentity] = field(default_factory=dict)
    dpop_proofs: dict[str, datetime] = field(default_factory=dict)  # replay key -> until
    delegations: dict[str, Delegation] = field(default_factory=dict)  # id -> delegation
    callback_hosts: dict[str, frozenset[str]] = field(default_factory=dict)  # agent -> hosts
    audit: list[Entry] = field(default_factory=list)
    outbox: list[Notice] = field(default_factory=list)


class _Appender:
    def __init__(self, state: State) -> None:
        self._state = state

    def append(
        self,
        kind: AuditKind,
        *,
        at: datetime,
        request_id: str | None,
        actor: str | None,
        data: dict[str, Any],
    ) -> None:
        self._state.audit.append(Entry(kind, request_id, actor, data))


class _Outbox:
    def __init__(self, state: State) -> None:
        self._state = state

    def add(
        self, kind: str, request_id: str | None, payload: dict[str, Any], now: datetime
    ) -> None:
        self._state.outbox.append(Notice(kind, request_id, payload))


class MemoryTx:
    def __init__(self, state: State) -> None:
        self.state = state
        self.audit = AuditLog(_Appender(state))
        self.outbox = _Outbox(state)

    def _current(self, snap: RequestSnapshot) -> RequestSnapshot:
        if snap.credential is None:
            return snap
        return dataclasses.replace(snap, credential=self.state.credentials[snap.credential.jti])

    def load(
        self, request_id: str, *, agent_id: str | None = None, lock: bool = False
    ) -> RequestSnapshot:
        # One thread, one transaction at a time: a lock has nothing to exclude here, so
        # locking is proven by the database tests (tests/integration/test_transition_path.py).
        snap = self.state.requests.get(request_id)
        if snap is None or (agent_id is not None and snap.agent_id != agent_id):
            raise NotFound(f"no request {request_id}")
        return self._current(snap)

    def load_many(self, request_ids: Sequence[str], *, lock: bool = False) -> list[RequestSnapshot]:
        return [self.load(i) for i in request_ids if i in self.state.requests]

    def find_by_idempotency_key(
        self, agent_id: str, key: str
    ) -> tuple[RequestSnapshot, str] | None:
        for request_id, (agent, used, digest) in self.state.bodies.items():
            if (agent, used) == (agent_id, key):
                return self.load(request_id), digest
        return None

    def insert(self, values: Mapping[str, Any]) -> RequestSnapshot:
        key = values.get("idempotency_key")
        if key is not None and self.find_by_idempotency_key(values["agent_id"], key):
            raise DuplicateIdempotencyKey("this Idempotency-Key was just used")
        snap = new_snapshot(values)
        self.state.requests[snap.id] = snap
        if key is not None:
            self.state.bodies[snap.id] = (snap.agent_id, key, values["body_digest"])
        return snap

    def save(
        self, changes: Sequence[tuple[RequestSnapshot, Mapping[str, Any]]], now: datetime
    ) -> None:
        for snap, values in changes:
            stored = self.state.requests[snap.id]
            if stored.version != snap.version:
                raise Conflict("a request changed concurrently; read it again")
            self.state.requests[snap.id] = advance(stored, values, now)

    def list_requests(
        self,
        *,
        status: Sequence[str] | None = None,
        agent_id: str | None = None,
        limit: int = 100,
    ) -> list[RequestSnapshot]:
        found = [
            self._current(s)
            for s in self.state.requests.values()
            if (not status or s.status.value in status) and (not agent_id or s.agent_id == agent_id)
        ]
        return sorted(found, key=lambda s: s.created_at, reverse=True)[:limit]

    def _deadline(self, snap: RequestSnapshot) -> datetime | None:
        if snap.status is Status.ACTIVE:
            return snap.credential.expires_at if snap.credential else None
        if snap.status in (Status.PENDING, Status.APPROVED):
            return snap.expires_at
        return None

    def due(self, now: datetime, *, limit: int) -> list[str]:
        """As in SQL: up to ``limit`` per live status, each status by its deadline."""
        found: list[str] = []
        for status in (Status.PENDING, Status.APPROVED, Status.ACTIVE):
            due = sorted(
                (deadline, s.id)
                for s in self.state.requests.values()
                if s.status is status
                and (deadline := self._deadline(s)) is not None
                and deadline <= now
            )
            found += [request_id for _, request_id in due[:limit]]
        return found

    def due_escalations(self, now: datetime, *, limit: int) -> list[str]:
        return [
            s.id
            for s in self.state.requests.values()
            if s.status is Status.PENDING
            and s.next_escalation_at is not None
            and s.next_escalation_at <= now
        ][:limit]

    def next_deadline(self) -> datetime | None:
        found = [d for s in self.state.requests.values() if (d := self._deadline(s))]
        found += [
            s.next_escalation_at
            for s in self.state.requests.values()
            if s.status is Status.PENDING and s.next_escalation_at
        ]
        return min(found, default=None)

    def add_vote(self, request_id: str, vote: NewVote) -> None:
        snap = self.state.requests[request_id]
        if any(v.slack_user_id == vote.vote.slack_user_id for v in snap.votes):
            raise DuplicateVote("your decision was already recorded")
        self.state.requests[request_id] = dataclasses.replace(snap, votes=(*snap.votes, vote.vote))

    def add_credential(self, credential: NewCredential) -> None:
        self.state.credentials[credential.jti] = credential.info
        self.state.issued[credential.jti] = credential

    def live_credential(self, jti: str) -> LiveCredential | None:
        info = self.state.credentials.get(jti)
        issued = self.state.issued.get(jti)
        if info is None or info.revoked_at is not None or issued is None:
            return None
        return LiveCredential(
            issued.agent_id, issued.scope, issued.audience, issued.expires_at, issued.jkt
        )

    def spend_dpop_proof(self, key: str, *, until: datetime, now: datetime) -> None:
        seen = self.state.dpop_proofs
        for stale in [k for k, end in seen.items() if end < now]:
            del seen[stale]
        if key in seen:
            raise Conflict("this DPoP proof was already used")
        seen[key] = until

    def revoke_credentials(
        self,
        credentials: Sequence[tuple[str, str]],
        *,
        reason: str,
        now: datetime,
        builtin_settled: bool = False,
    ) -> set[str]:
        revoked = set()
        for request_id, jti in credentials:
            info = self.state.credentials.get(jti)
            if info is not None and info.revoked_at is None:
                self.state.credentials[jti] = dataclasses.replace(
                    info, revoked_at=now, revoke_reason=reason
                )
                issued = self.state.issued.get(jti)
                settled = builtin_settled and (issued is None or issued.issuer is None)
                self.state.revocations[jti] = {
                    "issuer": issued.issuer if issued else None,
                    "handle": issued.handle if issued else None,
                    "issuer_config": issued.issuer_config if issued else None,
                    "request_id": request_id,
                    "status": "done" if settled else "pending",
                    "attempts": 1 if settled else 0,
                    "next_attempt_at": now,
                    "alerted_at": None,
                    "last_error": None,
                }
                revoked.add(jti)
        return revoked

    def lease_revocations(
        self, now: datetime, *, limit: int, until: datetime, jtis: Sequence[str] | None = None
    ) -> list[LeasedRevocation]:
        leased: list[LeasedRevocation] = []
        for jti, r in self.state.revocations.items():
            if jtis is not None and jti not in jtis:
                continue
            if r["status"] == "pending" and r["next_attempt_at"] <= now and len(leased) < limit:
                r["next_attempt_at"] = until
                r["attempts"] += 1
                leased.append(
                    LeasedRevocation(
                        jti,
                        r["request_id"],
                        r["attempts"],
                        r.get("issuer"),
                        r.get("handle"),
                        r.get("issuer_config"),
                    )
                )
        return leased

    def logged_terms(self, request_id: str) -> dict[str, Any] | None:
        for entry in self.state.audit:
            if entry.kind is AuditKind.POLICY_DECIDED and entry.request_id == request_id:
                terms = entry.data.get("terms")
                return terms if isinstance(terms, dict) else None
        return None

    def queue_revocation(
        self, request_id: str, issuer: str, handle: str, issuer_config: str, now: datetime
    ) -> str:
        jti = f"unclaimed_{len(self.state.revocations)}"
        self.state.revocations[jti] = {
            "issuer": issuer,
            "handle": handle,
            "issuer_config": issuer_config,
            "request_id": request_id,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "alerted_at": None,
            "last_error": None,
        }
        return jti

    def revocations_done(self, jtis: Sequence[str], now: datetime) -> dict[str, datetime | None]:
        marked: dict[str, datetime | None] = {}
        for jti in jtis:
            r = self.state.revocations[jti]
            if r["status"] != "done":
                r.update(status="done", done_at=now, last_error=None)
                marked[jti] = r["alerted_at"]
        return marked

    def revocation_failed(
        self, jti: str, *, error: str, retry_at: datetime, alert: bool, now: datetime
    ) -> bool | None:
        r = self.state.revocations.get(jti)
        if r is None or r["status"] == "done":
            return None
        r.update(next_attempt_at=retry_at, last_error=error)
        if alert and r["alerted_at"] is None:
            r["alerted_at"] = now
            return True
        return False

    def pending_count(self, agent_id: str) -> int:
        return sum(
            1
            for snap in self.state.requests.values()
            if snap.agent_id == agent_id and snap.status is Status.PENDING
        )

    def authenticate_agent(self, key: str, *, now: datetime) -> AgentIdentity:
        ends = self.state.key_ends.get(key)
        if key not in self.state.agents or (ends is not None and ends <= now):
            raise Unauthenticated()
        return self.state.agents[key]

    def authenticate_workload(self, trust_name: str, subject: str) -> AgentIdentity:
        agent = self.state.workloads.get((trust_name, subject))
        if agent is None:
            raise Unauthenticated()
        return agent

    def add_delegation(self, delegation: Delegation) -> None:
        self.state.delegations[delegation.id] = delegation

    def delegation(self, delegation_id: str) -> Delegation | None:
        return self.state.delegations.get(delegation_id)

    def delegations_of(self, request_id: str, *, agent_id: str | None = None) -> list[Delegation]:
        return [
            d
            for d in self.state.delegations.values()
            if d.parent_request_id == request_id and agent_id in (None, d.agent_id)
        ]

    def live_children(self, request_ids: Sequence[str]) -> list[str]:
        live = (Status.PENDING, Status.APPROVED, Status.ACTIVE)
        return sorted(
            snap.id
            for snap in self.state.requests.values()
            if snap.parent_request_id in request_ids and snap.status in live
        )

    def agent_enabled(self, agent_id: str) -> bool:
        return any(agent.id == agent_id for agent in self.state.agents.values())

    def callback_hosts(self, agent_id: str) -> frozenset[str]:
        return self.state.callback_hosts.get(agent_id, frozenset())


class MemoryStore:
    def __init__(self) -> None:
        self.state = State()
        self.writes = 0  # committed write transactions

    @contextmanager
    def write(self) -> Iterator[MemoryTx]:
        saved = copy.deepcopy(self.state)
        try:
            yield MemoryTx(self.state)
        except BaseException:
            self.state.__dict__.update(saved.__dict__)
            raise
        self.writes += 1

    @contextmanager
    def read(self) -> Iterator[MemoryTx]:
        yield MemoryTx(self.state)
