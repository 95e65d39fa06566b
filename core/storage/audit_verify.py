"""Verifying the stored audit log: the chain, its signatures and checkpoints, and every
request against its replayed entries, all read in one snapshot. Entries not yet chained are
counted as pending, never verified (docs/audit.md, "Pending entries")."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from core.audit.chain import ChainReport, verify_chain
from core.audit.checkpoints import Checkpoint
from core.audit.verification import Anchoring, LogChecks
from core.keys import KeyRing
from core.storage.audit_crosscheck import CrossCheckReport, crosscheck_requests
from core.storage.audit_store import (
    PendingEntries,
    chain_snapshot,
    iter_entries,
    pending_entries,
    pending_request_ids,
    read_head,
)
from core.storage.database import Database


@dataclass(frozen=True, slots=True)
class AuditVerification:
    chain: ChainReport
    anchoring: Anchoring
    requests: CrossCheckReport
    # Entries written and not yet chained (PostgreSQL, moments after their commit): neither
    # verified nor counted in ``chain``; their requests are not compared (``requests.pending``).
    pending: PendingEntries


def verify_in_snapshot(
    session: Session, keyring: KeyRing | None, *, anchors: Iterable[Checkpoint] = ()
) -> AuditVerification:
    """Raises AuditChainBroken naming the first bad entry (hash, link, signature, checkpoint,
    or an outside checkpoint the log no longer holds); then compares the requests, whose
    differences are in the report. ``keyring`` may be None only for a log with no signed
    entries (a fresh install): any signed entry then fails."""
    checks = LogChecks(keyring, anchors)
    chain = verify_chain(iter_entries(session), head=read_head(session), check_signature=checks)
    anchoring = checks.finish(chain)
    pending = pending_entries(session)
    waiting = pending_request_ids(session) if pending.count else set()
    requests = crosscheck_requests(session, keyring, pending=waiting)
    return AuditVerification(chain, anchoring, requests, pending)


def verify_database(
    db: Database, keyring: KeyRing | None, *, anchors: Iterable[Checkpoint] = ()
) -> AuditVerification:
    """``verify_in_snapshot`` in one read snapshot: on PostgreSQL an entry the running service
    appends meanwhile would otherwise look like one added behind its back."""
    with chain_snapshot(db) as session:
        return verify_in_snapshot(session, keyring, anchors=anchors)
