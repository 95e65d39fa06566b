"""Submitting an intent: evaluate the policy, record the request, queue its card."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.audit.events import AuditLog
from core.canonical import canonical_json, parameters_digest
from core.errors import Conflict, ValidationFailed
from core.model import Intent, Outcome, Status
from core.notices import Notices
from core.policy import PolicyDecision
from core.snapshots import RequestSnapshot
from core.storage import agents_repo
from core.storage import requests_repo as repo
from core.storage.agents_repo import AgentIdentity
from core.storage.audit_store import SqlAuditAppender
from core.usecases.base import StepupBase, intent_record, terms_from
from core.usecases.escalating import first_escalation_at

logger = logging.getLogger(__name__)


class Submitting(StepupBase):
    """submit, with idempotency keys."""

    def submit(
        self,
        agent: AgentIdentity,
        intent: Intent,
        *,
        now: datetime,
        idempotency_key: str | None = None,
    ) -> tuple[RequestSnapshot, bool]:
        """Evaluate and record a request. Returns (request, created)."""
        if intent.agent != agent.id:
            raise ValidationFailed("the agent is taken from its key, not from the body")
        body_digest = _body_digest(intent)
        if idempotency_key is not None:
            existing = self._replay(agent.id, idempotency_key, body_digest)
            if existing is not None:
                return existing, False
        decision = self.policy.current.evaluate(intent, now)
        try:
            with self.db.write() as session:
                created = self._record(
                    session, agent, intent, decision, now, idempotency_key, body_digest
                )
        except IntegrityError:
            # Two submissions with one idempotency key raced; the other one won.
            if idempotency_key is None:
                raise
            existing = self._replay(agent.id, idempotency_key, body_digest)
            if existing is None:
                raise
            return existing, False
        return self._changed(created), True

    def submit_by_key(
        self,
        key: str,
        draft: Callable[[str], Intent],
        *,
        now: datetime,
        idempotency_key: str | None = None,
    ) -> tuple[RequestSnapshot, bool]:
        """submit() for a caller known only by its agent key; ``draft`` makes the intent once
        the agent's id is known. Without an idempotency key, the key is checked inside the
        transaction that records the request (one transaction, not two); a bad key raises
        Unauthenticated and writes nothing. With one, the replay lookup needs the agent
        first, so the key is checked on its own before."""
        if idempotency_key is not None:
            with self.db.query() as conn:
                agent = agents_repo.authenticate_agent(conn, key)
            return self.submit(agent, draft(agent.id), now=now, idempotency_key=idempotency_key)
        with self.db.write() as session:
            agent = agents_repo.authenticate_agent(session.connection(), key)
            intent = draft(agent.id)
            decision = self.policy.current.evaluate(intent, now)
            created = self._record(
                session, agent, intent, decision, now, None, _body_digest(intent)
            )
        return self._changed(created), True

    def _record(
        self,
        session: Session,
        agent: AgentIdentity,
        intent: Intent,
        decision: PolicyDecision,
        now: datetime,
        idempotency_key: str | None,
        body_digest: str,
    ) -> RequestSnapshot:
        """The request row, its audit entries and notices, in the caller's transaction."""
        if intent.parent_request_id is not None:
            repo.load_row(session, intent.parent_request_id, agent_id=agent.id)
        record = intent_record(intent)
        values = self._new_values(
            agent, intent, record, decision, now, idempotency_key, body_digest
        )
        created = repo.insert_new(session, values)  # the idempotency key's constraint fires here
        audit = AuditLog(SqlAuditAppender(session))
        audit.intent_submitted(created.id, agent.id, record, now)
        audit.policy_decided(
            created.id,
            {
                "outcome": decision.outcome.value,
                "status": created.status.value,
                "rule": decision.rule,
                "tier": decision.tier.value,
                "reasons": list(decision.reasons),
                "policy_digest": decision.policy_digest,
            },
            now,
        )
        if decision.break_glass and decision.outcome is Outcome.ALLOW:
            audit.break_glass_used(created.id, agent.id, decision.rule, now)
            self._alert_break_glass(session, created.id, now)
        if created.status is Status.PENDING:
            Notices(session, now).post_card(
                created.id, decision.channel, self._dm_targets(decision)
            )
        return created

    def _replay(self, agent_id: str, key: str, body_digest: str) -> RequestSnapshot | None:
        with self.db.read() as session:
            row = repo.find_by_idempotency_key(session, agent_id, key)
            if row is None:
                return None
            if row.body_digest != body_digest:
                raise Conflict("this Idempotency-Key was already used with a different body")
            return repo.snapshot(session, row)

    def _alert_break_glass(self, session: Session, request_id: str, now: datetime) -> None:
        """The security channel hears of break-glass use at once, with Acknowledge/Revoke."""
        if self.security_channel:
            Notices(session, now).break_glass_alert(request_id, self.security_channel)
        else:
            logger.error("break-glass used by %s and no security channel is set", request_id)

    @staticmethod
    def _new_values(
        agent: AgentIdentity,
        intent: Intent,
        record: dict[str, Any],
        decision: PolicyDecision,
        now: datetime,
        idempotency_key: str | None,
        body_digest: str,
    ) -> dict[str, Any]:
        if decision.outcome is Outcome.DENY:
            status, expires_at, decided_at = Status.DENIED, None, now
        elif decision.outcome is Outcome.ALLOW:
            status, expires_at, decided_at = Status.APPROVED, now + decision.claim_window, now
        else:
            status, expires_at, decided_at = Status.PENDING, now + decision.approval_timeout, None
        terms = terms_from(decision)
        # The intent's fields as the audit records them (``record``) are the request's columns
        # of the same names; the agent is the key's (``agent_id``), not a column of its own.
        intent_columns = {name: value for name, value in record.items() if name != "agent"}
        return intent_columns | {
            "id": "req_" + uuid.uuid4().hex,
            "agent_id": agent.id,
            "owner_email": agent.owner_email,
            "status": status.value,
            "version": 1,
            "parameters": canonical_json(intent.parameters),
            "rule": decision.rule,
            "tier": decision.tier.value,
            "reasons": json.dumps(list(decision.reasons)),
            "policy_digest": decision.policy_digest,
            "terms": terms.to_json(),
            "next_escalation_at": (
                first_escalation_at(now, terms) if status is Status.PENDING else None
            ),
            "created_at": now,
            "updated_at": now,
            "expires_at": expires_at,
            "decided_at": decided_at,
            "idempotency_key": idempotency_key,
            "body_digest": body_digest,
        }


def _body_digest(intent: Intent) -> str:
    """What an idempotency key is bound to: the whole intent, parameters included."""
    return parameters_digest(intent_record(intent) | {"parameters": intent.parameters})
