"""The store of ``core/store.py`` on SQL: one ``SqlStoreTx`` per transaction of ``Database``."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from core.audit.events import AuditLog
from core.delegation import Delegation
from core.model import AgentIdentity
from core.notices import NoSlack
from core.snapshots import RequestSnapshot
from core.storage import agents_repo, delegations_repo, dpop_repo, identity_repo, revocations_repo
from core.storage import requests_repo as repo
from core.storage.audit_store import SqlAuditAppender
from core.storage.database import Database
from core.storage.tables import OutboxRow
from core.store import LeasedRevocation, LiveCredential, NewCredential, NewVote, OutboxSink

logger = logging.getLogger(__name__)


class SqlOutbox:
    """Notices become outbox rows, committed with the change they report."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self.kinds: set[str] = set()  # what this transaction queued

    def add(
        self, kind: str, request_id: str | None, payload: dict[str, Any], now: datetime
    ) -> None:
        self.kinds.add(kind)
        self._session.add(
            OutboxRow(
                request_id=request_id,
                kind=kind,
                payload=json.dumps(payload, sort_keys=True),
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )


class SqlStoreTx:
    def __init__(self, session: Session, *, slack: bool = True) -> None:
        self.session = session
        self._slack = slack
        self._audit: AuditLog | None = None
        self._outbox: OutboxSink | None = None
        self._queued: SqlOutbox | None = None

    @property
    def audit(self) -> AuditLog:
        if self._audit is None:
            self._audit = AuditLog(SqlAuditAppender(self.session))
        return self._audit

    @property
    def outbox(self) -> OutboxSink:
        if self._outbox is None:
            self._queued = SqlOutbox(self.session)
            self._outbox = self._queued if self._slack else NoSlack(self._queued)
        return self._outbox

    @property
    def queued_kinds(self) -> frozenset[str]:
        """The kinds of outbox entries this transaction queued."""
        return frozenset(self._queued.kinds) if self._queued is not None else frozenset()

    def load(
        self, request_id: str, *, agent_id: str | None = None, lock: bool = False
    ) -> RequestSnapshot:
        return repo.load(self.session, request_id, agent_id=agent_id, lock=lock)

    def load_many(self, request_ids: Sequence[str], *, lock: bool = False) -> list[RequestSnapshot]:
        return repo.load_many(self.session, request_ids, lock=lock)

    def find_by_idempotency_key(
        self, agent_id: str, key: str
    ) -> tuple[RequestSnapshot, str] | None:
        return repo.find_by_idempotency_key(self.session, agent_id, key)

    def insert(self, values: Mapping[str, Any]) -> RequestSnapshot:
        return repo.insert_new(self.session, values)

    def save(
        self, changes: Sequence[tuple[RequestSnapshot, Mapping[str, Any]]], now: datetime
    ) -> None:
        repo.save(self.session, changes, now)

    def list_requests(
        self,
        *,
        status: Sequence[str] | None = None,
        agent_id: str | None = None,
        limit: int = 100,
    ) -> list[RequestSnapshot]:
        return repo.list_snapshots(self.session, status=status, agent_id=agent_id, limit=limit)

    def due(self, now: datetime, *, limit: int) -> list[str]:
        return [request_id for request_id, _ in repo.due_ids(self.session, now, limit=limit)]

    def due_escalations(self, now: datetime, *, limit: int) -> list[str]:
        return repo.due_escalation_ids(self.session, now, limit=limit)

    def next_deadline(self) -> datetime | None:
        return repo.next_deadline(self.session)

    def add_vote(self, request_id: str, vote: NewVote) -> None:
        repo.add_vote(self.session, request_id, vote)

    def add_credential(self, credential: NewCredential) -> None:
        repo.add_credential(self.session, credential)

    def live_credential(self, jti: str) -> LiveCredential | None:
        return repo.live_credential(self.session, jti)

    def spend_dpop_proof(self, key: str, *, until: datetime, now: datetime) -> None:
        dpop_repo.spend(self.session, key, until=until, now=now)

    def revoke_credentials(
        self,
        credentials: Sequence[tuple[str, str]],
        *,
        reason: str,
        now: datetime,
        builtin_settled: bool = False,
    ) -> set[str]:
        return repo.revoke_credentials(
            self.session, credentials, reason=reason, now=now, builtin_settled=builtin_settled
        )

    def lease_revocations(
        self, now: datetime, *, limit: int, until: datetime, jtis: Sequence[str] | None = None
    ) -> list[LeasedRevocation]:
        return revocations_repo.lease(self.session, now, limit=limit, until=until, jtis=jtis)

    def queue_revocation(
        self, request_id: str, issuer: str, handle: str, issuer_config: str, now: datetime
    ) -> str:
        return revocations_repo.queue(self.session, request_id, issuer, handle, issuer_config, now)

    def logged_terms(self, request_id: str) -> dict[str, Any] | None:
        return repo.logged_terms(self.session, request_id)

    def revocations_done(self, jtis: Sequence[str], now: datetime) -> dict[str, datetime | None]:
        return revocations_repo.done(self.session, jtis, now)

    def revocation_failed(
        self, jti: str, *, error: str, retry_at: datetime, alert: bool, now: datetime
    ) -> bool | None:
        return revocations_repo.failed(
            self.session, jti, error=error, retry_at=retry_at, alert=alert, now=now
        )

    def pending_count(self, agent_id: str) -> int:
        return repo.pending_count(self.session, agent_id)

    def authenticate_agent(self, key: str, *, now: datetime) -> AgentIdentity:
        return agents_repo.authenticate_agent(self.session.connection(), key, now)

    def authenticate_workload(self, trust_name: str, subject: str) -> AgentIdentity:
        return identity_repo.authenticate_workload(self.session.connection(), trust_name, subject)

    def add_delegation(self, delegation: Delegation) -> None:
        delegations_repo.add(self.session, delegation)

    def delegation(self, delegation_id: str) -> Delegation | None:
        return delegations_repo.get(self.session, delegation_id)

    def delegations_of(self, request_id: str, *, agent_id: str | None = None) -> list[Delegation]:
        return delegations_repo.of_request(self.session, request_id, agent_id=agent_id)

    def live_children(self, request_ids: Sequence[str]) -> list[str]:
        return delegations_repo.live_children(self.session, request_ids)

    def callback_hosts(self, agent_id: str) -> frozenset[str]:
        return agents_repo.callback_hosts(self.session, agent_id)

    def agent_enabled(self, agent_id: str) -> bool:
        return delegations_repo.agent_enabled(self.session, agent_id)


class SqlStore:
    """``slack=False``: nothing delivers to Slack, so no notice is queued (``NoSlack``)."""

    def __init__(self, db: Database, *, slack: bool = True) -> None:
        self.db = db
        self.slack = slack
        self._outbox_listeners: list[Callable[[frozenset[str]], None]] = []

    def on_outbox(self, listener: Callable[[frozenset[str]], None]) -> None:
        """``listener`` is told the kinds of outbox entries each transaction of this process
        queued, once it committed (the delivery workers wake on it; nothing else does)."""
        self._outbox_listeners.append(listener)

    @contextmanager
    def write(self) -> Iterator[SqlStoreTx]:
        with self.db.write() as session:
            tx = SqlStoreTx(session, slack=self.slack)
            yield tx
        kinds = tx.queued_kinds
        if kinds:
            for listener in self._outbox_listeners:
                try:
                    listener(kinds)
                except Exception:  # a listener never undoes a commit
                    logger.exception("outbox listener failed")

    @contextmanager
    def read(self) -> Iterator[SqlStoreTx]:
        with self.db.read() as session:
            yield SqlStoreTx(session, slack=self.slack)
