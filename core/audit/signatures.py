"""Checks the signed decisions embedded in audit entries against the service's keys."""

from __future__ import annotations

import json

from core.audit.chain import AuditEntry, SignatureCheck
from core.audit.events import AuditKind
from core.decisions import verify_decision
from core.keys import KeyRing


def decision_signature_check(keyring: KeyRing) -> SignatureCheck:
    def check(entry: AuditEntry) -> None:
        if entry.kind != AuditKind.DECISION_RECORDED.value:
            return
        data = json.loads(entry.data)
        record = verify_decision(data["signed_decision"], keyring)
        if record.request_id != entry.request_id or record.decision.value != data.get("vote"):
            raise ValueError("signed decision does not match the entry it is in")

    return check
