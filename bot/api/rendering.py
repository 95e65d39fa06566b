"""A request as agents see it: the dict every request route answers.

Built by hand, JSON-ready, because submit is the hottest route; ``bot.api.schemas.RequestView``
declares the same shape and a test holds the two together. Never contains a credential secret.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi.encoders import jsonable_encoder

from core.approvals import tally
from core.snapshots import RequestSnapshot
from core.usecases.sessions import Claimed


def request_json(snapshot: RequestSnapshot) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": snapshot.id,
        "status": snapshot.status.value,
        "rule": snapshot.rule,
        "tier": snapshot.tier.value,
        "reasons": list(snapshot.reasons),
        "agent": snapshot.agent_id,
        "action": snapshot.action,
        "action_class": snapshot.action_class.value,
        "target": snapshot.target,
        "environment": snapshot.environment,
        "justification": snapshot.justification,
        "parameters": snapshot.parameters,
        "parameters_digest": snapshot.parameters_digest,
        "requested_ttl_seconds": snapshot.requested_ttl_seconds,
        "data_volume_bytes": snapshot.data_volume_bytes,
        "on_behalf_of": snapshot.on_behalf_of,
        "sponsor_verified": snapshot.sponsor_verified,
        "parent_request_id": snapshot.parent_request_id,
        "break_glass": snapshot.break_glass,
        "created_at": _iso(snapshot.created_at),
        "expires_at": _iso(snapshot.expires_at),
        "decided_at": _iso(snapshot.decided_at),
        "approvals": {
            "required": snapshot.terms.quorum if snapshot.terms.approver_groups else 0,
            "received": tally(snapshot.votes, snapshot.terms.quorum).received,
            "approvers": [
                {
                    "name": v.name,
                    "email": v.email,
                    "slack_user_id": v.slack_user_id,
                    "at": _iso(v.at),
                }
                for v in snapshot.approvals
            ],
        },
        "outcome": snapshot.outcome,
        "outcome_detail": snapshot.outcome_detail,
        "status_reason": snapshot.status_reason,
        "callback_url": snapshot.callback_url,
    }
    if snapshot.break_glass:
        body["break_glass_review"] = {
            "reviewed_at": _iso(snapshot.break_glass_reviewed_at),
            "reviewed_by": snapshot.break_glass_reviewed_by,
        }
    if snapshot.credential is not None:
        body["credential"] = {
            "jti": snapshot.credential.jti,
            "expires_at": _iso(snapshot.credential.expires_at),
            "revoked_at": _iso(snapshot.credential.revoked_at),
        }
    return body


def claim_json(claimed: Claimed) -> dict[str, Any]:
    """The claim answer (``bot.api.schemas.ClaimAnswer``): the credential, returned once."""
    issued = claimed.credential
    body: dict[str, Any] = {
        "token": issued.token,
        "token_type": issued.token_type,
        "expires_at": _iso(issued.expires_at),
        "scope": issued.scope,
        "jti": issued.handle,
        "request_id": claimed.request.id,
        "credential_type": claimed.request.terms.credential_type,
    }
    if claimed.minted is not None:
        body["secret"] = jsonable_encoder(dict(claimed.minted.secret))
    return body


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None
