"""Submitting an intent: evaluate the policy, record the request, queue its card."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from core.callbacks import check_callback_url
from core.canonical import canonical_digest, canonical_json, parameters_digest
from core.errors import Conflict, DuplicateIdempotencyKey, ValidationFailed
from core.identity.presented import present
from core.issuers.base import GrantRefused
from core.issuers.grants import fill
from core.model import AgentIdentity, Intent, Outcome, Status
from core.notices import Notices
from core.policy import PolicyDecision
from core.snapshots import RequestSnapshot
from core.store import StoreTx
from core.terms import Terms
from core.usecases.delegating import delegation_for
from core.usecases.limits import SubmitRate, check_pending
from core.usecases.parts import Parts

logger = logging.getLogger(__name__)

BeforeCommit = Callable[[RequestSnapshot], None]
"""Runs inside the transaction that records a new request, last: raising rolls it all back."""
AfterInsert = Callable[[StoreTx, AgentIdentity, RequestSnapshot], RequestSnapshot]
"""Runs inside that transaction right after the request is recorded and may change it (the
claim of a submit with ``claim``); returns the request as it now is."""


class Submitting:
    """submit, with idempotency keys and the limits per agent (``core/usecases/limits.py``):
    over either one, TooManyRequests and nothing written."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.rate = SubmitRate()  # per process

    def submit(
        self,
        agent: AgentIdentity,
        intent: Intent,
        *,
        now: datetime,
        idempotency_key: str | None = None,
        before_commit: BeforeCommit | None = None,
        after_insert: AfterInsert | None = None,
    ) -> tuple[RequestSnapshot, bool]:
        """Evaluate and record a request. Returns (request, created).

        ``before_commit`` runs with the new request inside its transaction, after everything
        else is written: the API builds its answer there, so an answer that cannot be built
        rolls the request back instead of leaving one the agent never heard of."""
        if intent.agent != agent.id:
            raise ValidationFailed("the agent is taken from its key, not from the body")
        return self._record(
            lambda _tx: agent,
            lambda _agent_id: intent,
            now=now,
            idempotency_key=idempotency_key,
            before_commit=before_commit,
            after_insert=after_insert,
        )

    def submit_by_key(
        self,
        key: str,
        draft: Callable[[str], Intent],
        *,
        now: datetime,
        idempotency_key: str | None = None,
        before_commit: BeforeCommit | None = None,
        after_insert: AfterInsert | None = None,
    ) -> tuple[RequestSnapshot, bool]:
        """submit() for a caller known only by its agent key; ``draft`` makes the intent once
        the agent's id is known. The key is checked in the transaction that records the
        request; a bad key raises Unauthenticated and writes nothing. A workload token (a JWT)
        is verified before the transaction; its binding to an agent is looked up like a key."""
        presented = present(self.parts.identity, key, now=now)
        return self._record(
            lambda tx: presented.authenticate(tx, now=now),
            draft,
            now=now,
            idempotency_key=idempotency_key,
            before_commit=before_commit,
            after_insert=after_insert,
        )

    def _record(
        self,
        identify: Callable[[StoreTx], AgentIdentity],
        draft: Callable[[str], Intent],
        *,
        now: datetime,
        idempotency_key: str | None,
        before_commit: BeforeCommit | None,
        after_insert: AfterInsert | None,
    ) -> tuple[RequestSnapshot, bool]:
        """One transaction: the agent identified, an ``idempotency_key`` looked up and, unless
        it replays, the request recorded. A replay costs nothing (no limit is taken: a retry
        after a 429 works), and a key used with another body is Conflict."""
        agent_id = ""
        digest = ""
        try:
            with self.parts.store.write() as tx:
                agent = identify(tx)
                agent_id = agent.id
                intent = draft(agent.id)
                digest = _body_digest(intent)
                if idempotency_key is not None:
                    found = tx.find_by_idempotency_key(agent.id, idempotency_key)
                    if found is not None:
                        return _replayed(found, digest), False  # nothing written
                self.rate.take(agent.id, self.parts.limits.submit_rate_per_agent, now)
                decision = self.parts.policy.current.evaluate(intent, now)
                created = self._insert(tx, agent, intent, decision, now, idempotency_key, digest)
                if after_insert is not None:
                    created = after_insert(tx, agent, created)
                if before_commit is not None:
                    before_commit(created)
        except DuplicateIdempotencyKey:
            # Two submissions with one idempotency key raced; the other one won.
            existing = self._replay(agent_id, str(idempotency_key), digest)
            if existing is None:
                raise
            return existing, False
        self.parts.feed.publish([created])
        return created, True

    def _insert(
        self,
        tx: StoreTx,
        agent: AgentIdentity,
        intent: Intent,
        decision: PolicyDecision,
        now: datetime,
        idempotency_key: str | None,
        body_digest: str,
    ) -> RequestSnapshot:
        """The request, its audit entries and notices, in the caller's transaction."""
        delegation = None
        if intent.parent_request_id is not None:
            # The agent's own request, or one delegated to it (docs/delegation.md).
            delegation = delegation_for(tx, agent, intent)
        if intent.callback_url is not None:
            check_callback_url(intent.callback_url, tx.callback_hosts(agent.id))
        fields = intent_fields(intent)
        values = self._new_values(
            agent, intent, fields, decision, now, idempotency_key, body_digest
        )
        if delegation is not None:
            values["delegation_id"] = delegation.id
        if values["status"] == Status.PENDING.value:
            # Only what people must decide counts: pre-authorised and denied requests pass.
            cap = self.parts.limits.max_pending_per_agent
            if cap > 0:
                check_pending(agent.id, tx.pending_count(agent.id), cap)
        created = tx.insert(values)  # the idempotency key's constraint fires here
        audit = tx.audit
        audit.intent_submitted(
            created.id,
            agent.id,
            fields if delegation is None else fields | {"delegation_id": delegation.id},
            now,
        )
        audit.policy_decided(
            created.id,
            {
                "outcome": decision.outcome.value,
                "status": created.status.value,
                "rule": decision.rule,
                "tier": decision.tier.value,
                "reasons": list(decision.reasons),
                "policy_digest": decision.policy_digest,
                # What the service will hold the request to (quorum, groups, TTL, step-up...):
                # in the log, so an edit of the stored terms is caught by audit verify.
                "terms": json.loads(values["terms"]),
            },
            now,
        )
        notices = Notices(tx.outbox, now)
        if decision.break_glass and decision.outcome is Outcome.ALLOW:
            audit.break_glass_used(created.id, agent.id, decision.rule, now)
            if self.parts.security_channel:
                # The security channel hears of it at once, with Acknowledge and Revoke.
                notices.break_glass_alert(created.id, self.parts.security_channel)
            else:
                logger.error("break-glass used by %s and no security channel is set", created.id)
        if created.status is Status.PENDING:
            notices.post_card(created.id, decision.channel, self._dm_targets(decision))
        if created.callback_url is not None:
            notices.callback(created.id, created.callback_url, created.status.value)
        return created

    def _dm_targets(self, decision: PolicyDecision) -> list[str]:
        """Slack ids and emails of the approvers to DM, when the rule asks for DMs."""
        if not decision.notify_dm:
            return []
        targets: list[str] = []
        for name in decision.approver_groups:
            group = self.parts.policy.current.groups.get(name)
            if group is not None:
                targets.extend(sorted(group.slack_users))
                targets.extend(sorted(group.emails))
        return list(dict.fromkeys(targets))

    def _replay(self, agent_id: str, key: str, body_digest: str) -> RequestSnapshot | None:
        with self.parts.store.read() as tx:
            found = tx.find_by_idempotency_key(agent_id, key)
        return None if found is None else _replayed(found, body_digest)

    @staticmethod
    def _new_values(
        agent: AgentIdentity,
        intent: Intent,
        fields: dict[str, Any],
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
        request_id = "req_" + uuid.uuid4().hex
        terms = terms_from(decision, intent, request_id)
        # The intent's fields as the audit records them (``fields``) are the request's columns
        # of the same names; the agent is the key's (``agent_id``), not a column of its own.
        intent_columns = {name: value for name, value in fields.items() if name != "agent"}
        return intent_columns | {
            "id": request_id,
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
            # Only a sponsor named by the workload token's claims is verified (docs/identity.md).
            "sponsor_verified": agent.vouches_for(intent.on_behalf_of),
            "body_digest": body_digest,
        }


def _replayed(found: tuple[RequestSnapshot, str], body_digest: str) -> RequestSnapshot:
    """The request an Idempotency-Key recorded, if the body is the same one."""
    snapshot, digest = found
    if digest != body_digest:
        raise Conflict("this Idempotency-Key was already used with a different body")
    return snapshot


def _body_digest(intent: Intent) -> str:
    """What an idempotency key is bound to: the whole intent, parameters included (the stored
    form of earlier releases, so keys recorded before still match)."""
    return canonical_digest(intent_fields(intent) | {"parameters": intent.parameters})


def terms_from(
    decision: PolicyDecision, intent: Intent | None = None, request_id: str = ""
) -> Terms:
    """The terms a request is held to; the rule's grant filled from ``intent`` (422 naming the
    request's field whose value the issuer cannot take)."""
    return Terms(
        **_credential_terms(decision, intent, request_id),
        approver_groups=decision.approver_groups,
        quorum=decision.quorum,
        channel=decision.channel,
        notify_dm=decision.notify_dm,
        max_ttl_seconds=int(decision.max_ttl.total_seconds()),
        approval_timeout_seconds=int(decision.approval_timeout.total_seconds()),
        claim_window_seconds=int(decision.claim_window.total_seconds()),
        step_up=decision.step_up,
        break_glass=decision.break_glass,
        escalate_after_seconds=int(decision.escalate_after.total_seconds())
        if decision.escalate_after
        else None,
        escalate_to=decision.escalate_to,
        require_dpop=decision.require_dpop,
        delegable=decision.delegable,
        max_depth=decision.max_depth,
    )


def _credential_terms(
    decision: PolicyDecision, intent: Intent | None, request_id: str
) -> dict[str, Any]:
    config = decision.issuer
    if config is None or decision.outcome is Outcome.DENY or intent is None:
        return {}
    kind = config.kind
    values = {
        "target": intent.target,
        "action": intent.action,
        "environment": intent.environment,
        "agent": intent.agent,
        "request_id": request_id,
    }
    try:
        filled = fill(
            decision.grant or {},
            values,
            intent.parameters,
            safe=kind.safe_value,
            safe_text=kind.safe_value_text,
            issuer_type=config.type,
        )
        grant = config.grant(filled)
    except GrantRefused as exc:
        raise ValidationFailed(
            f"{exc.field}: {exc.detail} (rule {decision.rule}, issuer {config.name})"
        ) from None
    return {
        "issuer": config.name,
        "issuer_type": config.type,
        "issuer_settings": config.settings_record,
        "grant": grant.model_dump(mode="json", exclude_none=True),
        "issues": config.describe(grant),
    }


def intent_fields(intent: Intent) -> dict[str, Any]:
    """The intent as the audit log records it (its fields are the request's columns too);
    ``callback_url`` only when given (idempotency digests of earlier releases still match)."""
    fields: dict[str, Any] = {
        "agent": intent.agent,
        "action": intent.action,
        "action_class": intent.action_class.value,
        "target": intent.target,
        "environment": intent.environment,
        "justification": intent.justification,
        "parameters_digest": parameters_digest(intent.parameters),
        "requested_ttl_seconds": intent.requested_ttl_seconds,
        "data_volume_bytes": intent.data_volume_bytes,
        "on_behalf_of": intent.on_behalf_of,
        "parent_request_id": intent.parent_request_id,
        "break_glass": intent.break_glass,
    }
    if intent.callback_url is not None:
        fields["callback_url"] = intent.callback_url
    return fields


def first_escalation_at(created_at: datetime, terms: Terms) -> datetime | None:
    """Stage 1 (the reminder) falls due at half of ``escalate_after``."""
    if terms.escalate_after_seconds is None or terms.escalate_to is None:
        return None
    return created_at + timedelta(seconds=terms.escalate_after_seconds / 2)
