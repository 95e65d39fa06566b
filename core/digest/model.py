"""What a digest holds: the figures of one window, as frozen records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from core.audit.checkpoints import Checkpoint
from core.model import Tier

DAY = timedelta(hours=24)
MAX_WINDOW = timedelta(days=7)  # after a long outage, the digest covers at most a week
TOP = 5
REFUSAL_KINDS = ("ineligible", "sponsor", "owner")
# How a request ended up, in display order: the decision, not the lifecycle status.
OUTCOMES = ("allowed", "break-glass", "approved", "denied", "expired", "cancelled", "pending")
TIERS = tuple(t.value for t in Tier)


@dataclass(frozen=True, slots=True)
class TierOutcome:
    tier: str
    outcome: str
    count: int


@dataclass(frozen=True, slots=True)
class DecisionTimes:
    """Seconds from submission to the approvers' decision; None when nothing was decided."""

    count: int
    median_seconds: float | None
    p95_seconds: float | None


@dataclass(frozen=True, slots=True)
class RequestRef:
    request_id: str
    agent: str
    action: str
    target: str
    environment: str
    tier: str


@dataclass(frozen=True, slots=True)
class Expired:
    request: RequestRef
    at: datetime
    was: str  # "pending" (nobody decided) or "approved" (the credential was never claimed)


@dataclass(frozen=True, slots=True)
class Denial:
    request: RequestRef
    at: datetime
    by: str  # an approver's email (or Slack id), or "policy"
    rule: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class RefusedClick:
    at: datetime
    request_id: str | None
    clicker: str | None
    why: str


@dataclass(frozen=True, slots=True)
class BreakGlassUse:
    request: RequestRef
    at: datetime
    rule: str | None
    status: str
    reviewed_by: str | None
    reviewed_at: datetime | None

    @property
    def reviewed(self) -> bool:
        return self.reviewed_at is not None


@dataclass(frozen=True, slots=True)
class RevocationFailure:
    jti: str
    request_id: str
    agent: str | None
    target: str | None
    attempts: int
    last_error: str | None
    since: datetime
    alerted_at: datetime | None


@dataclass(frozen=True, slots=True)
class ActiveCredential:
    request: RequestRef
    expires_at: datetime
    rule: str | None
    approvers: tuple[str, ...]  # empty when the policy allowed it without approval
    issuer: str = "jwt"  # the rule's issuer (``orders-db``), or ``jwt``: stepup's own token


@dataclass(frozen=True, slots=True)
class AuditStatus:
    """``stepup audit verify`` as of the digest: the chain (``broken_seq``/``problem`` name
    its first bad entry) and the requests compared with their entries (``differences``)."""

    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    broken_seq: int | None = None
    problem: str | None = None
    differences: int = 0
    # Entries written but not yet chained (PostgreSQL's chainer adds them within a second):
    # verified by nothing until then. ``pending_stale``: the oldest has waited longer than
    # ``stepup audit verify`` allows (it exits 1): the chainer is stopped, or a row was put
    # in the pending table by hand.
    pending: int = 0
    oldest_pending_at: datetime | None = None
    pending_stale: bool = False

    @property
    def healthy(self) -> bool:
        """Intact, matching the database, and nothing waiting too long to be chained."""
        return self.ok and not self.pending_stale


@dataclass(frozen=True, slots=True)
class Digest:
    window_start: datetime
    window_end: datetime
    requests: tuple[TierOutcome, ...]
    decision_times: DecisionTimes
    expired: tuple[Expired, ...]
    denials: tuple[Denial, ...]
    refused_clicks: tuple[RefusedClick, ...]
    break_glass: tuple[BreakGlassUse, ...]
    revocation_failures: tuple[RevocationFailure, ...]
    active_credentials: tuple[ActiveCredential, ...]
    top_agents: tuple[tuple[str, int], ...]
    top_targets: tuple[tuple[str, int], ...]
    audit: AuditStatus
    # The latest signed checkpoint of the chain: posting it holds the head outside the
    # database (``stepup audit verify --checkpoint``).
    checkpoint: Checkpoint | None = None
    # Enabled agents whose static key (``stpa_…``, for development) works now, where a
    # workload identity should (docs/identity.md).
    static_key_agents: int = 0
    # Signed callbacks given up on in the window (docs/callbacks.md), and the request ids of
    # the latest few (``stepup requests show ID`` gives each one's error).
    callback_dead_letters: int = 0
    callback_dead_requests: tuple[str, ...] = ()

    @property
    def total_requests(self) -> int:
        return sum(c.count for c in self.requests)

    @property
    def live_by_issuer(self) -> dict[str, int]:
        """Credentials alive now per issuer (``jwt``: stepup's own token), busiest first."""
        counts: dict[str, int] = {}
        for item in self.active_credentials:
            counts[item.issuer] = counts.get(item.issuer, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    @property
    def refused_by_kind(self) -> dict[str, int]:
        counts = dict.fromkeys(REFUSAL_KINDS, 0)
        for click in self.refused_clicks:
            counts[click.why] = counts.get(click.why, 0) + 1
        return counts
