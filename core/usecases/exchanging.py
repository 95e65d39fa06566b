"""RFC 8693 token exchange for delegation (docs/delegation.md, "Token exchange").

The subject token is the parent request's stepup credential, the actor the child agent (the
edge authenticates its token like any agent's). The exchange is the pre-authorised case of a
delegated submission: it records the child request under an existing delegation (the same
rules as ``POST /v1/requests`` with ``parent_request_id``) and claims it at once, which only
works when the policy allows the child's request outright. Anything that would need people
is refused, with nothing written: submit the request instead and wait for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core import names
from core.credentials import verify_credential
from core.errors import InvalidToken, StepupError
from core.model import AgentIdentity, Intent, Outcome, Status
from core.usecases.delegating import delegation_for
from core.usecases.parts import Parts
from core.usecases.reading import _as_issued
from core.usecases.sessions import Claimed, Sessions
from core.usecases.submitting import Submitting


class ExchangeRefused(StepupError):
    """An exchange refused, with its RFC 6749 §5.2 ``error`` code (answered 400)."""

    title = "Token exchange refused"

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(detail)
        self.error = error


@dataclass(frozen=True)
class Exchanged:
    claimed: Claimed
    parent_request_id: str
    delegation_id: str


class Exchanging:
    def __init__(self, parts: Parts, submitting: Submitting, sessions: Sessions) -> None:
        self.parts = parts
        self.submitting = submitting
        self.sessions = sessions

    def exchange(
        self,
        subject_token: str,
        actor: AgentIdentity,
        *,
        scope: str,
        audience: str,
        now: datetime,
    ) -> Exchanged:
        """The child credential of ``actor`` for ``scope`` (an action) on ``audience`` (a
        target) under the request ``subject_token`` was issued for."""
        parent_id = self._subject(subject_token, now)
        try:
            action = names.canonical(scope)
        except ValueError as exc:
            raise ExchangeRefused("invalid_scope", f"scope: {exc}") from None
        try:
            target = names.canonical(audience)
        except ValueError as exc:
            raise ExchangeRefused("invalid_target", f"audience: {exc}") from None
        with self.parts.store.read() as tx:
            parent = tx.load(parent_id)
        intent = Intent(
            agent=actor.id,
            action=action,
            action_class=parent.action_class,
            target=target,
            environment=parent.environment,
            justification=f"token exchange under request {parent.id}",
            parameters={},
            parent_request_id=parent.id,
        )
        with self.parts.store.write() as tx:  # the delegation's rules first; nothing written
            delegation = delegation_for(tx, actor, intent)
        if delegation is None:
            raise ExchangeRefused(
                "invalid_request", "the actor is the subject's own agent: claim the request"
            )
        decision = self.parts.policy.current.evaluate(intent, now)
        if decision.outcome is not Outcome.ALLOW:
            raise ExchangeRefused(
                "invalid_request",
                f"the policy does not pre-authorise {action!r} on {target!r} for {actor.id} "
                f"(rule {decision.rule!r}: {decision.outcome.value}); submit it with "
                "parent_request_id to ask for approval",
            )
        if decision.require_dpop:
            raise ExchangeRefused(
                "invalid_request",
                f"rule {decision.rule!r} requires a DPoP-bound credential: submit the request "
                "with parent_request_id and claim it with a DPoP proof",
            )
        created, _ = self.submitting.submit(actor, intent, now=now)
        if created.status is not Status.APPROVED:
            raise ExchangeRefused(
                "invalid_request",
                f"request {created.id} is {created.status.value}, not pre-authorised",
            )
        claimed = self.sessions.claim(created.id, actor, now=now)
        record: dict[str, Any] = {
            "parent_request_id": parent.id,
            "delegation_id": delegation.id,
            "subject_jti": self._jti(subject_token, now),
            "jti": claimed.credential.handle,
        }
        with self.parts.store.write() as tx:
            tx.audit.token_exchanged(created.id, actor.id, record, now)
        return Exchanged(claimed, parent.id, delegation.id)

    def _claims(self, token: str, now: datetime) -> dict[str, Any]:
        return verify_credential(
            token,
            keyring=self.parts.keyring,
            issuer_url=self.parts.issuer_url,
            audience=None,
            now=now,
        )

    def _jti(self, token: str, now: datetime) -> str:
        return str(self._claims(token, now).get("jti", ""))

    def _subject(self, token: str, now: datetime) -> str:
        """The request the subject token was issued for, if it is a live stepup credential
        (signature, times, not revoked, as issued)."""
        try:
            claims = self._claims(token, now)
        except InvalidToken:
            raise ExchangeRefused("invalid_request", "invalid subject_token") from None
        with self.parts.store.read() as tx:
            issued = tx.live_credential(str(claims.get("jti", "")))
        request_id = claims.get("request_id")
        if not _as_issued(claims, issued) or not isinstance(request_id, str):
            raise ExchangeRefused("invalid_request", "invalid subject_token")
        return request_id
