"""The words for what core reports: every ``Fact`` as a line of Slack text.

Thread notes, the sponsor's DMs and security alerts are all rendered here, at delivery time,
from the fact that was queued with the change. Whatever a fact carries from an agent or typed
by a person (the actor, a reason, an outcome and its detail, an issuer's error) is shown in a
code span it cannot close, cut to a bound, so a note is never refused and never pings anyone.
"""

from __future__ import annotations

from datetime import datetime

from bot.slack.markup import code, escape, person
from core.facts import Fact, FactKind
from core.model import Status
from core.snapshots import RequestSnapshot

NOTE_VALUE = 1_500  # one reason or detail; a note stays well under Slack's 4,000 to read well
WHO = 200

_EXPIRED = {
    Status.PENDING.value: "Expired — no decision",
    Status.APPROVED.value: "Expired — the credential was not claimed in time",
    Status.ACTIVE.value: "Credential TTL elapsed — revoked",
}


def clock(at: str | datetime) -> str:
    moment = datetime.fromisoformat(at) if isinstance(at, str) else at
    return moment.strftime("%H:%M:%S UTC")


def _names(names: object) -> str:
    listed = [code(str(n), WHO) for n in names] if isinstance(names, list) else []
    shown = ", ".join(listed[:10])
    return shown + (f" and {len(listed) - 10} more" if len(listed) > 10 else "")


def _groups(groups: object) -> str:
    """Approver groups: names from the policy, escaped."""
    return ", ".join(person(str(g)[:WHO]) for g in groups) if isinstance(groups, list) else "?"


def note_text(fact: Fact) -> str:
    """The fact as a line in the card's thread (and the body of the sponsor's DM)."""
    data, who = fact.data, code(fact.actor or "?", WHO)
    kind = fact.kind
    if kind is FactKind.APPROVAL_COUNTED:
        return f"{who} approved ({int(data['received'])} of {int(data['required'])})"
    if kind is FactKind.APPROVED:
        return (
            f"Approved by {_names(data['approvers'])}; the agent may claim its "
            f"credential until {clock(data['claim_until'])}"
        )
    if kind is FactKind.DENIED:
        return f"Denied by {who}: {code(data.get('reason'), NOTE_VALUE)}"
    if kind is FactKind.CLAIMED:
        return f"Credential issued to {who}, active until {clock(data['credential']['expires_at'])}"
    if kind is FactKind.COMPLETED:
        detail = data.get("detail") or ""
        return (
            f"Completed: {code(str(data['outcome']), 100)}"
            + (f" — {code(detail, NOTE_VALUE)}" if detail else "")
            + "; credential revoked"
        )
    if kind is FactKind.CANCELLED:
        return "Cancelled by the agent"
    if kind is FactKind.REVOKED:
        return f"Revoked by {who}: {code(data.get('reason'), NOTE_VALUE)}"
    if kind is FactKind.EXPIRED:
        return _EXPIRED.get(str(data.get("was")), "Expired")
    if kind is FactKind.ESCALATION_REMINDER:
        return (
            f":bell: Reminder: {int(data['missing'])} more approval(s) needed from "
            f"{_groups(data['groups'])}; escalating to {person(str(data['escalate_to']))} at "
            f"{clock(data['escalate_at'])}"
        )
    if kind is FactKind.ESCALATED:
        return f":arrow_up: Escalated to {person(str(data['to']))}: its members may now decide"
    return alert_text(fact)


def sponsor_text(fact: Fact, snapshot: RequestSnapshot) -> str:
    """The sponsor's DM: which request, then what happened."""
    s = snapshot
    return (
        f"Request {code(s.id)} ({code(s.action, 600)} on {code(s.target, 1_200)}): "
        f"{note_text(fact)}"
    )


def alert_text(fact: Fact) -> str:
    """A security-channel alert about a credential's revocation at its issuer."""
    data = fact.data
    if fact.kind is FactKind.ISSUER_REVOKE_FAILING:
        return (
            f":rotating_light: Revoking credential {code(str(data['jti']))} (request "
            f"{code(fact.request_id)}) at its issuer has failed {int(data['attempts'])} times: "
            f"{code(str(data['error']), NOTE_VALUE)}. The revocation list already refuses it; "
            "stepup keeps retrying until the issuer confirms."
        )
    if fact.kind is FactKind.ISSUER_REVOKE_RECOVERED:
        return (
            f":white_check_mark: Revocation of credential {code(str(data['jti']))} (request "
            f"{code(fact.request_id)}) succeeded after {int(data['attempts'])} attempts. "
            "Alert cleared."
        )
    return f"{escape(fact.kind.value)} on {code(fact.request_id)}"
