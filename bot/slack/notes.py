"""The words for what core reports: every ``Fact`` as a line of Slack text.

Thread notes, the sponsor's DMs and security alerts are all rendered here, at delivery time,
from the fact that was queued with the change.
"""

from __future__ import annotations

from datetime import datetime

from core.facts import Fact, FactKind
from core.model import Status
from core.snapshots import RequestSnapshot

_EXPIRED = {
    Status.PENDING.value: "Expired — no decision",
    Status.APPROVED.value: "Expired — the credential was not claimed in time",
    Status.ACTIVE.value: "Credential TTL elapsed — revoked",
}


def clock(at: str | datetime) -> str:
    moment = datetime.fromisoformat(at) if isinstance(at, str) else at
    return moment.strftime("%H:%M:%S UTC")


def note_text(fact: Fact) -> str:
    """The fact as a line in the card's thread (and the body of the sponsor's DM)."""
    data, who = fact.data, fact.actor or "?"
    kind = fact.kind
    if kind is FactKind.APPROVAL_COUNTED:
        return f"{who} approved ({data['received']} of {data['required']})"
    if kind is FactKind.APPROVED:
        return (
            f"Approved by {', '.join(data['approvers'])}; the agent may claim its "
            f"credential until {clock(data['claim_until'])}"
        )
    if kind is FactKind.DENIED:
        return f"Denied by {who}: {data.get('reason', '')}"
    if kind is FactKind.CLAIMED:
        return f"Credential issued to {who}, active until {clock(data['credential']['expires_at'])}"
    if kind is FactKind.COMPLETED:
        detail = data.get("detail") or ""
        return (
            f"Completed: {data['outcome']}"
            + (f" — {detail}" if detail else "")
            + "; credential revoked"
        )
    if kind is FactKind.CANCELLED:
        return "Cancelled by the agent"
    if kind is FactKind.REVOKED:
        return f"Revoked by {who}: {data.get('reason', '')}"
    if kind is FactKind.EXPIRED:
        return _EXPIRED.get(str(data.get("was")), "Expired")
    if kind is FactKind.ESCALATION_REMINDER:
        return (
            f":bell: Reminder: {data['missing']} more approval(s) needed from "
            f"{', '.join(data['groups'])}; escalating to {data['escalate_to']} at "
            f"{clock(data['escalate_at'])}"
        )
    if kind is FactKind.ESCALATED:
        return f":arrow_up: Escalated to {data['to']}: its members may now decide"
    return alert_text(fact)


def sponsor_text(fact: Fact, snapshot: RequestSnapshot) -> str:
    """The sponsor's DM: which request, then what happened."""
    return f"Request {snapshot.id} ({snapshot.action} on {snapshot.target}): {note_text(fact)}"


def alert_text(fact: Fact) -> str:
    """A security-channel alert about a credential's revocation at its issuer."""
    data = fact.data
    if fact.kind is FactKind.ISSUER_REVOKE_FAILING:
        return (
            f":rotating_light: Revoking credential `{data['jti']}` (request "
            f"`{fact.request_id}`) at its issuer has failed {data['attempts']} times: "
            f"{data['error']}. The revocation list already refuses it; stepup keeps retrying "
            "until the issuer confirms."
        )
    if fact.kind is FactKind.ISSUER_REVOKE_RECOVERED:
        return (
            f":white_check_mark: Revocation of credential `{data['jti']}` (request "
            f"`{fact.request_id}`) succeeded after {data['attempts']} attempts. Alert cleared."
        )
    return f"{fact.kind.value} on {fact.request_id}"
