"""Delegation (docs/delegation.md): an agent hands part of its active request to another.

``Delegating.delegate`` records a delegation; ``delegation_for`` is what a child's submission
is held to (``core/usecases/submitting.py``); ``lineage`` is what a child's claim puts in its
credential (``core/usecases/sessions.py``: ``sub`` the root agent, ``act`` the chain, the TTL
capped by the parent's credential). The narrowing rules themselves are ``core/delegation.py``;
ending a request ends its descendants in ``core/usecases/transition.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from core import names
from core.delegation import MAX_DELEGATION_TTL, Delegation, check_globs, child_ttl, under
from core.durations import format_duration
from core.errors import Conflict, IllegalTransition, NotFound, ValidationFailed
from core.issuers.catalog import issuer_type
from core.model import AgentIdentity, Intent, Status
from core.snapshots import RequestSnapshot
from core.store import StoreTx
from core.usecases.parts import Parts

_MAX_CHAIN = 12  # delegations stop at max_depth <= 10: a longer chain is a broken store


@dataclass(frozen=True, slots=True)
class Lineage:
    """A delegated request's place in its chain."""

    root_agent: str  # the agent of the request at the top: the credential's ``sub``
    actors: tuple[str, ...]  # this request's agent first, back to the first delegate
    parent: RequestSnapshot
    delegation: Delegation
    chain: tuple[RequestSnapshot, ...]  # the requests above, the parent first, the root last


class Delegating:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    def delegate(
        self,
        request_id: str,
        agent: AgentIdentity,
        *,
        child: str,
        actions: Sequence[str],
        targets: Sequence[str],
        max_ttl: timedelta,
        now: datetime,
    ) -> Delegation:
        """Record that ``child`` may submit requests under ``request_id`` within these globs.
        Only the request's own agent, only while it is active, only if its rule (and every
        rule above it) allows this depth."""
        with self.parts.store.write() as tx:
            parent = tx.load(request_id, agent_id=agent.id, lock=True)
            _check_active(parent, now, what="delegated")
            chain = _chain(tx, parent)
            if not parent.terms.delegable:
                raise Conflict(
                    f"the rule {parent.rule!r} of request {parent.id} does not allow "
                    "delegation (delegable: true)"
                )
            depth = _depth(tx, parent) + 1
            limit = min(snap.terms.max_depth for snap in chain)
            if depth > limit:
                raise Conflict(
                    f"a delegation of request {parent.id} would be at depth {depth}; its "
                    f"chain allows {limit} (max_depth)"
                )
            child = _child_agent(tx, child, chain)
            try:
                action_globs = check_globs("actions", parent.action, actions)
                target_globs = check_globs("targets", parent.target, targets)
            except ValueError as exc:
                raise ValidationFailed(str(exc)) from None
            if max_ttl > MAX_DELEGATION_TTL:
                raise ValidationFailed(f"max_ttl: at most {format_duration(MAX_DELEGATION_TTL)}")
            delegation = Delegation(
                id="dlg_" + uuid.uuid4().hex,
                parent_request_id=parent.id,
                agent_id=child,
                actions=action_globs,
                targets=target_globs,
                max_ttl_seconds=int(max_ttl.total_seconds()),
                depth=depth,
                created_at=now,
                created_by=agent.id,
            )
            tx.add_delegation(delegation)
            tx.audit.delegation_created(
                parent.id,
                agent.id,
                {
                    "delegation_id": delegation.id,
                    "agent": child,
                    "actions": list(action_globs),
                    "targets": list(target_globs),
                    "max_ttl_seconds": delegation.max_ttl_seconds,
                    "depth": depth,
                },
                now,
            )
        return delegation

    def chain(self, snap: RequestSnapshot) -> list[tuple[str, str]]:
        """(agent, request id) from the root down to ``snap``, for a delegated request (what
        its card shows); empty for any other. A broken chain reads as empty, never raises."""
        if snap.delegation_id is None:
            return []
        try:
            with self.parts.store.read() as tx:
                above = _chain(tx, snap)
        except (Conflict, NotFound):
            return []
        return [(link.agent_id, link.id) for link in reversed(above)]


_LIVE_PARENT = frozenset({Status.PENDING, Status.APPROVED, Status.ACTIVE})


def _check_own_parent(parent: RequestSnapshot) -> None:
    """A sub-request of the agent's own request: only under a live one (an ended parent's
    cascade is over: a child recorded under it would outlive it), and not under a request
    delegated to the agent (a child of its own would sit outside the delegation's bounds,
    depth and chain)."""
    if parent.status not in _LIVE_PARENT:
        raise IllegalTransition(
            f"the parent request {parent.id} is {parent.status.value}: a sub-request needs "
            "a pending, approved or active parent",
            status=parent.status.value,
            event="submit",
        )
    if parent.delegation_id is not None:
        raise ValidationFailed(
            f"parent_request_id: request {parent.id} was delegated to this agent; a "
            "delegated request has no sub-requests of its own (delegate part of it instead)"
        )


def delegation_for(tx: StoreTx, agent: AgentIdentity, intent: Intent) -> Delegation | None:
    """The delegation a submission with ``parent_request_id`` falls under, checked; None when
    the parent is the agent's own request (a plain sub-request, as before delegation). The
    parent is locked, so it cannot end while its child is being recorded unseen."""
    parent_id = str(intent.parent_request_id)
    parent = tx.load(parent_id, lock=True)
    if parent.agent_id == agent.id:
        _check_own_parent(parent)
        return None
    delegations = tx.delegations_of(parent.id, agent_id=agent.id)
    if not delegations:
        raise NotFound(f"no request {parent_id}")  # another agent's: as if it did not exist
    if parent.status is not Status.ACTIVE:
        raise IllegalTransition(
            f"the parent request {parent.id} is {parent.status.value}: only an active "
            "request's delegations can be used",
            status=parent.status.value,
            event="delegate",
        )
    if names.fold(intent.environment) != names.fold(parent.environment):
        raise ValidationFailed(
            f"environment: a delegated request stays in its parent's {parent.environment!r}"
        )
    if intent.break_glass:
        raise ValidationFailed("break_glass: a delegated request cannot break glass")
    fitting = [
        d
        for d in delegations
        if d.allows("action", intent.action) and under(parent.action, intent.action)
    ]
    if not fitting:
        raise ValidationFailed(
            f"action: {intent.action!r} is outside every delegation of request {parent.id} "
            f"to {agent.id} ({_globs(delegations, 'action')})"
        )
    fitting = [
        d
        for d in fitting
        if d.allows("target", intent.target) and under(parent.target, intent.target)
    ]
    if not fitting:
        raise ValidationFailed(
            f"target: {intent.target!r} is outside every delegation of request {parent.id} "
            f"to {agent.id} for this action ({_globs(delegations, 'target')})"
        )
    return fitting[0]


def lineage(tx: StoreTx, snap: RequestSnapshot) -> Lineage | None:
    """The chain above a delegated request; None for a request that was not delegated."""
    if snap.delegation_id is None:
        return None
    delegation = tx.delegation(snap.delegation_id)
    if delegation is None:
        raise Conflict(f"request {snap.id}: its delegation is missing")
    parent = tx.load(delegation.parent_request_id)
    chain = _chain(tx, parent)
    actors = [snap.agent_id]
    for above in chain[:-1]:
        actors.append(above.agent_id)  # every request above but the root was delegated too
    return Lineage(chain[-1].agent_id, tuple(actors), parent, delegation, chain)


def claim_ttl(
    tx: StoreTx, snap: RequestSnapshot, normal: timedelta, now: datetime
) -> tuple[timedelta, Lineage | None]:
    """A claim's credential lifetime and, for a delegated request, its lineage: ``normal``
    capped by the delegation's max TTL and by the parent's remaining credential lifetime.
    Refused (409) unless every request above is still active with a live credential."""
    line = lineage(tx, snap)
    if line is None:
        return normal, None
    for above in line.chain:
        _check_active(above, now, what="used by a delegate")
    parent = line.parent.credential
    assert parent is not None  # _check_active
    ttl = child_ttl(normal, parent.expires_at, line.delegation.max_ttl, now)
    if ttl <= timedelta(0):
        raise IllegalTransition(
            f"the parent request {line.parent.id}'s credential ends now",
            status=line.parent.status.value,
            event="delegate",
        )
    issuer = snap.terms.issuer_type
    if issuer is not None and ttl < issuer_type(issuer).min_ttl:
        raise Conflict(
            f"the parent request {line.parent.id} has {int(ttl.total_seconds())} s left, "
            f"less than the {issuer} issuer's shortest credential: nothing was issued"
        )
    return ttl, line


def _check_active(snap: RequestSnapshot, now: datetime, *, what: str) -> datetime:
    credential = snap.credential
    if (
        snap.status is not Status.ACTIVE
        or credential is None
        or credential.revoked_at is not None
        or credential.expires_at <= now
    ):
        raise IllegalTransition(
            f"request {snap.id} is {snap.status.value}: only an active request with a live "
            f"credential can be {what}",
            status=snap.status.value,
            event="delegate",
        )
    return credential.expires_at


def _chain(tx: StoreTx, snap: RequestSnapshot) -> tuple[RequestSnapshot, ...]:
    """``snap`` and the requests its delegations come from, up to the root."""
    chain = [snap]
    current = snap
    for _ in range(_MAX_CHAIN):
        if current.delegation_id is None:
            return tuple(chain)
        delegation = tx.delegation(current.delegation_id)
        if delegation is None:
            raise Conflict(f"request {current.id}: its delegation is missing")
        current = tx.load(delegation.parent_request_id)
        chain.append(current)
    raise Conflict(f"request {snap.id}: its delegation chain is longer than any allowed")


def _depth(tx: StoreTx, snap: RequestSnapshot) -> int:
    if snap.delegation_id is None:
        return 0
    delegation = tx.delegation(snap.delegation_id)
    return delegation.depth if delegation is not None else 0


def _child_agent(tx: StoreTx, child: str, chain: Sequence[RequestSnapshot]) -> str:
    try:
        child = names.canonical(child)
    except ValueError as exc:
        raise ValidationFailed(f"agent: {exc}") from None
    if not tx.agent_enabled(child):
        raise ValidationFailed(f"agent: {child!r} is not a registered, enabled agent")
    if any(names.fold(snap.agent_id) == names.fold(child) for snap in chain):
        raise ValidationFailed(f"agent: {child!r} is already in this request's chain")
    return child


def _globs(delegations: Sequence[Delegation], field: str) -> str:
    globs = [g for d in delegations for g in (d.actions if field == "action" else d.targets)]
    return "allowed: " + ", ".join(dict.fromkeys(globs))
