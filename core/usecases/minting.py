"""A claim's credential from the rule's issuer (docs/issuers.md): minted outside any
transaction, only as approved, and never left alive when the claim is not recorded.

"As approved" means the issuer the request's terms froze at submission — its name, type and
settings — and the grant as filled then. A claim is refused when the policy has since dropped
the issuer or changed its settings (the approval was for those), and when the request's
stored terms differ from what the audit log recorded at submission (someone edited the row).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.errors import Conflict, IssuerFailed
from core.issuers.base import Issued, Issuer, IssueRequest, IssuerUnavailable
from core.issuers.catalog import IssuerConfig
from core.model import AgentIdentity
from core.snapshots import RequestSnapshot
from core.terms import Terms
from core.usecases.parts import Parts

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Minted:
    """What an issuer minted for a claim, and the issuer (with its settings) that did."""

    config: IssuerConfig
    issuer: Issuer
    issued: Issued


class Minting:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    def mint(
        self, snap: RequestSnapshot, agent: AgentIdentity, expires_at: datetime, now: datetime
    ) -> Minted:
        """The credential of ``snap``'s rule's issuer, valid until ``expires_at``. Any refusal
        or failure is audited (``credential.issue_failed``) and nothing is claimed."""
        config = self._as_approved(snap, agent, now)
        try:
            issuer = self.parts.issuers.build(config)
            issued = issuer.issue(
                config.grant(snap.terms.grant or {}),
                IssueRequest(
                    request_id=snap.id,
                    agent=snap.agent_id,
                    action=snap.action,
                    target=snap.target,
                    environment=snap.environment,
                    args_digest=snap.parameters_digest,
                ),
                expires_at,
            )
        except Exception as exc:  # any failure: nothing claimed, the agent may retry
            error = (str(exc) if isinstance(exc, IssuerUnavailable) else "") or type(exc).__name__
            self._failed(snap, agent, config.name, error, now)
            raise IssuerFailed(
                f"the credential issuer {config.name!r} could not issue the credential "
                f"({error}); the request is still approved: claim again"
            ) from None
        return Minted(config, issuer, issued)

    def discard(self, snap: RequestSnapshot, minted: Minted, now: datetime) -> None:
        """A minted credential that was not recorded (a lost race, a failed write): queued
        for revocation at its issuer and revoked at once."""
        handle = minted.issued.handle
        try:
            with self.parts.store.write() as tx:
                jti = tx.queue_revocation(
                    snap.id, minted.config.name, handle, minted.config.record(), now
                )
        except Exception:
            logger.exception(
                "credential %s at issuer %s for %s was minted but could not be recorded or "
                "queued for revocation; it lapses at %s",
                handle,
                minted.config.name,
                snap.id,
                minted.issued.expires_at.isoformat(),
            )
            return
        if self.parts.revoke_soon is not None:
            self.parts.revoke_soon([jti], now)

    def _as_approved(
        self, snap: RequestSnapshot, agent: AgentIdentity, now: datetime
    ) -> IssuerConfig:
        terms = snap.terms
        name = str(terms.issuer)
        try:
            config = self.parts.issuers.config(name)
        except IssuerUnavailable:
            config = None
        if config is None or (config.type, config.settings_record) != (
            terms.issuer_type,
            terms.issuer_settings,
        ):
            why = "is no longer in the policy" if config is None else "changed its settings"
            self._failed(snap, agent, name, f"issuer {why} since the request was approved", now)
            raise Conflict(
                f"the rule's issuer {name!r} {why} since this request was approved: nothing "
                "was issued; submit the request again"
            )
        with self.parts.store.read() as tx:
            logged = tx.logged_terms(snap.id)
        if not _same_terms(logged, terms):
            logger.error("the stored terms of %s differ from its audit entry", snap.id)
            self._failed(snap, agent, name, "stored terms differ from the audit log", now)
            raise Conflict(
                "this request's stored terms differ from what the audit log recorded: "
                "nothing was issued (run stepup audit verify)"
            )
        return config

    def _failed(
        self, snap: RequestSnapshot, agent: AgentIdentity, issuer: str, error: str, now: datetime
    ) -> None:
        logger.warning("issuer %s did not issue for %s: %s", issuer, snap.id, error)
        with self.parts.store.write() as tx:
            tx.audit.issue_failed(snap.id, agent.id, issuer, error, now)


def _same_terms(logged: dict[str, Any] | None, terms: Terms) -> bool:
    """Whether the audit log's terms are the stored ones. A field added to the terms after the
    entry was written reads as its default, as the stored terms do."""
    if logged is None:
        return False
    try:
        return Terms.from_json(json.dumps(logged)) == terms
    except (TypeError, ValueError):
        return False
