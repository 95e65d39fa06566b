"""Agent registration and authentication, and the target systems allowed to introspect."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from core import names
from core.audit.events import AuditLog
from core.callbacks import normalise_host
from core.durations import format_duration
from core.errors import Conflict, IllegalTransition, ValidationFailed
from core.identity.presented import present
from core.identity.trust import TrustKind, checked_spiffe_id, spiffe_trust_domain
from core.model import AgentIdentity, Status
from core.service import Stepup
from core.storage import agents_repo, identity_repo
from core.storage.agents_repo import ResourceServer
from core.storage.audit_store import SqlAuditAppender
from core.storage.requests_repo import ids_of

MAX_AGENT_ID = 128  # the column's size
DEFAULT_KEY_GRACE = timedelta(minutes=10)  # old keys work this long after a rotation
MAX_KEY_GRACE = timedelta(hours=24)


def canonical_name(value: str, what: str, *, max_length: int) -> str:
    """``value`` in the canonical form of ``core.names``, else ValidationFailed naming ``what``."""
    try:
        name = names.canonical(value)
    except ValueError as exc:
        raise ValidationFailed(f"{what} {value!a}: {exc}") from None
    if len(name) > max_length:
        raise ValidationFailed(f"{what}: longer than {max_length} characters")
    return name


STATIC_KEY = "static key (development)"


def _as_listed(stored: str) -> str:
    """A stored allow-list entry in today's form (one stored by an earlier release may not be:
    ``0:0::1`` for ``::1``); as stored if it no longer parses."""
    try:
        return normalise_host(stored)
    except ValidationFailed:
        return stored


@dataclass(frozen=True, slots=True)
class AgentSummary:
    id: str
    owner_email: str
    disabled: bool
    created_at: datetime
    live_keys: int = 0  # keys that work now (a rotation's old keys until their grace ends)
    identities: tuple[str, ...] = ()  # bound workload identities, as TRUST:SUBJECT
    workloads: tuple[str, ...] = ()  # how those authenticate: oidc:NAME, spiffe

    @property
    def auth(self) -> list[str]:
        """How it can authenticate: ``static key (development)``, ``oidc:NAME``, ``spiffe``."""
        shown = [STATIC_KEY] if self.live_keys else []
        return list(dict.fromkeys([*shown, *self.workloads]))


@dataclass(frozen=True, slots=True)
class WorkloadBinding:
    """``--oidc NAME:SUBJECT`` or ``--spiffe-id ID``, as given to ``agents add``."""

    trust: str | None  # None for a SPIFFE ID: its trust domain is the trust's name
    subject: str

    @classmethod
    def oidc(cls, value: str) -> WorkloadBinding:
        trust, sep, subject = value.partition(":")
        if not sep or not trust or not subject:
            raise ValidationFailed(f"--oidc {value!a}: NAME:SUBJECT")
        return cls(trust, subject)

    @classmethod
    def spiffe(cls, value: str) -> WorkloadBinding:
        return cls(None, checked_spiffe_id(value))


@dataclass(frozen=True, slots=True)
class RotatedKey:
    key: str  # shown once, never stored
    old_keys: int  # keys that worked before, and stop at ``old_keys_until``
    old_keys_until: datetime


class AgentRegistry:
    def __init__(self, service: Stepup) -> None:
        self.service = service
        self.db = service.db

    def add(
        self,
        agent_id: str,
        owner_email: str,
        *,
        by: str,
        now: datetime,
        identities: Sequence[WorkloadBinding] = (),
        callback_hosts: Sequence[str] = (),
    ) -> str:
        """Register an agent; returns its key, which is never stored nor shown again. Its id is
        canonical (``core.names``): NFKC, then ASCII letters, digits and ``._-:/@+=``. Its
        workload ``identities`` authenticate it too (docs/identity.md); ``callback_hosts`` are
        the hosts its requests' ``callback_url`` may name (docs/callbacks.md)."""
        key = self._register(
            agent_id,
            owner_email,
            by=by,
            now=now,
            identities=identities,
            callback_hosts=callback_hosts,
        )
        assert key is not None
        return key

    def add_keyless(
        self,
        agent_id: str,
        owner_email: str,
        *,
        by: str,
        now: datetime,
        identities: Sequence[WorkloadBinding],
        callback_hosts: Sequence[str] = (),
    ) -> None:
        """Register an agent with no static key: only its workload identities authenticate it."""
        if not identities:
            raise ValidationFailed("an agent without a key needs a workload identity")
        self._register(
            agent_id,
            owner_email,
            by=by,
            now=now,
            identities=identities,
            key=False,
            callback_hosts=callback_hosts,
        )

    def _register(
        self,
        agent_id: str,
        owner_email: str,
        *,
        by: str,
        now: datetime,
        identities: Sequence[WorkloadBinding],
        key: bool = True,
        callback_hosts: Sequence[str] = (),
    ) -> str | None:
        agent_id = canonical_name(agent_id, "agent id", max_length=MAX_AGENT_ID)
        hosts = list(dict.fromkeys(normalise_host(h) for h in callback_hosts))
        with self.db.write() as session:
            bound = [self._binding(session, b) for b in identities]
            made = agents_repo.add_agent(
                session, agent_id, owner_email.strip().lower(), now, key=key
            )
            for trust, subject in bound:
                identity_repo.bind_identity(session, agent_id, trust, subject, now)
            agents_repo.add_callback_hosts(session, agent_id, hosts)
            AuditLog(SqlAuditAppender(session)).agent_added(
                agent_id,
                owner_email,
                by,
                now,
                identities=[f"{trust}:{subject}" for trust, subject in bound],
                key=key,
                callback_hosts=hosts,
            )
        return made

    def callback_hosts(self, agent_id: str) -> list[str]:
        """The agent's callback allow-list, sorted (docs/callbacks.md)."""
        with self.db.read() as session:
            agents_repo.get_agent(session, agent_id)
            return sorted({_as_listed(h) for h in agents_repo.callback_hosts(session, agent_id)})

    def change_callback_hosts(
        self,
        agent_id: str,
        *,
        by: str,
        now: datetime,
        add: Sequence[str] = (),
        remove: Sequence[str] = (),
        clear: bool = False,
    ) -> list[str]:
        """Change the agent's callback allow-list: ``clear`` it, then ``remove`` entries (each
        must be on it), then ``add`` entries (``HOST`` or ``HOST:PORT``). Returns the list
        after, sorted. A change is audited in its transaction; a refused one changes nothing.
        Requests already submitted are checked against the new list at each delivery."""
        adding = list(dict.fromkeys(normalise_host(h) for h in add))
        removing = list(dict.fromkeys(normalise_host(h) for h in remove))
        with self.db.write() as session:
            agents_repo.get_agent(session, agent_id)
            stored = agents_repo.callback_hosts(session, agent_id)
            before = {_as_listed(h): h for h in stored}  # as listed -> as stored
            missing = [h for h in removing if h not in before]
            if missing:
                raise ValidationFailed(
                    f"--remove {', '.join(missing)}: not on the callback allow-list of {agent_id}"
                )
            gone = set(before) if clear else set(removing)
            agents_repo.remove_callback_hosts(session, agent_id, sorted(before[h] for h in gone))
            kept = set(before) - gone
            new = [h for h in adding if h not in kept]
            agents_repo.add_callback_hosts(session, agent_id, new)
            after = sorted(kept | set(new))
            if set(after) != set(before):
                AuditLog(SqlAuditAppender(session)).agent_callback_hosts_changed(
                    agent_id,
                    by,
                    now,
                    added=sorted(set(after) - set(before)),
                    removed=sorted(set(before) - set(after)),
                    hosts=after,
                )
        return after

    @staticmethod
    def _binding(session: Session, binding: WorkloadBinding) -> tuple[str, str]:
        """(trust name, subject), the trust checked: it exists, and is of the right kind."""
        if binding.trust is None:
            domain = spiffe_trust_domain(binding.subject)
            trusted = None if domain is None else identity_repo.get_trusted_issuer(session, domain)
            if trusted is None or trusted.kind is not TrustKind.SPIFFE:
                raise ValidationFailed(
                    f"--spiffe-id {binding.subject}: the trust domain {domain} is not trusted "
                    "(stepup trust add-spiffe)"
                )
            return trusted.name, binding.subject
        trusted = identity_repo.get_trusted_issuer(session, binding.trust)
        if trusted is None:
            raise ValidationFailed(
                f"--oidc {binding.trust}:{binding.subject}: no trusted issuer {binding.trust} "
                "(stepup trust list)"
            )
        if trusted.kind is not TrustKind.OIDC:
            raise ValidationFailed(
                f"--oidc {binding.trust}:...: {binding.trust} is a SPIFFE trust domain "
                "(use --spiffe-id)"
            )
        if len(binding.subject) > 512:
            raise ValidationFailed("--oidc: the subject is longer than 512 characters")
        return trusted.name, binding.subject

    def authenticate(self, key: str, *, now: datetime | None = None) -> AgentIdentity:
        """The agent of a key or a workload token at ``now`` (the API passes its clock;
        default: the wall clock). Unauthenticated for either, the same."""
        at = now or datetime.now(UTC)
        presented = present(self.service.parts.identity, key, now=at)
        workload = presented.workload
        with self.db.query() as conn:
            if workload is None:
                return agents_repo.authenticate_agent(conn, key, at)
            agent = identity_repo.authenticate_workload(conn, workload.trust, workload.subject)
        return replace(agent, sponsors=workload.sponsors)

    def static_key_agents(self, *, now: datetime) -> int:
        """Enabled agents with a static key that works now (development only)."""
        return sum(1 for a in self.list_agents(now=now) if a.live_keys and not a.disabled)

    def rotate_key(
        self,
        agent_id: str,
        *,
        by: str,
        now: datetime,
        grace: timedelta = DEFAULT_KEY_GRACE,
    ) -> RotatedKey:
        """A new key for the agent. Its keys that work now keep working until ``now + grace``
        (none is extended; ``grace`` 0: they stop at once), then get what an unknown key gets."""
        if not timedelta(0) <= grace <= MAX_KEY_GRACE:
            raise ValidationFailed(f"grace: from 0s to {format_duration(MAX_KEY_GRACE)}")
        until = now + grace
        with self.db.write() as session:
            if agents_repo.get_agent(session, agent_id).disabled:
                raise Conflict(f"agent {agent_id} is disabled: it gets no new key")
            old = agents_repo.end_agent_keys(session, agent_id, at=until, now=now)
            key = agents_repo.add_agent_key(session, agent_id, now)
            AuditLog(SqlAuditAppender(session)).agent_key_rotated(
                agent_id, by, now, old_keys=old, old_keys_until=until
            )
        return RotatedKey(key, old, until)

    def list_agents(self, *, now: datetime) -> list[AgentSummary]:
        with self.db.read() as session:
            live = agents_repo.live_key_counts(session, now)
            bound = identity_repo.identities_by_agent(session)
            labels = {t.name: t.label for t in identity_repo.trusted_issuers(session)}
            return [
                AgentSummary(
                    a.id,
                    a.owner_email,
                    a.disabled,
                    a.created_at,
                    live.get(a.id, 0),
                    tuple(f"{t}:{s}" for t, s in bound.get(a.id, [])),
                    tuple(labels.get(t, f"oidc:{t}") for t, _ in bound.get(a.id, [])),
                )
                for a in agents_repo.list_agents(session)
            ]

    def disable(self, agent_id: str, *, by: str, now: datetime) -> list[str]:
        """Stop the agent's keys and revoke its live credentials; returns the revoked ids."""
        with self.db.write() as session:
            agents_repo.disable_agent(session, agent_id, now)
            AuditLog(SqlAuditAppender(session)).agent_disabled(agent_id, by, now)
            live = ids_of(
                session,
                status=[Status.APPROVED.value, Status.ACTIVE.value],
                agent_id=agent_id,
                limit=10_000,
            )
        revoked = []
        for request_id in live:
            try:
                self.service.revoke(request_id, by=by, reason=f"agent {agent_id} disabled", now=now)
            except IllegalTransition:
                continue  # it ended meanwhile, and its ending revoked its credential
            revoked.append(request_id)
        return revoked

    def add_resource_server(
        self, name: str, *, by: str, now: datetime, audiences: Sequence[str] = ()
    ) -> str:
        """Register a target system; returns its key. It may introspect tokens whose ``aud`` is
        one of ``audiences`` (by default, just its name)."""
        # An audience is a request's target, so canonical as targets are (or it never matches).
        audiences = [canonical_name(a, "audience", max_length=512) for a in audiences]
        with self.db.write() as session:
            key = agents_repo.add_resource_server(session, name, now, audiences)
            server = agents_repo.authenticate_resource_server(session, key)
            AuditLog(SqlAuditAppender(session)).resource_server_added(
                name, by, now, audiences=server.audiences
            )
        return key

    def disable_resource_server(self, name: str, *, by: str, now: datetime) -> bool:
        """Its key gets 401 from now on; False (and nothing written) if it was disabled."""
        with self.db.write() as session:
            changed = agents_repo.disable_resource_server(session, name)
            if changed:
                AuditLog(SqlAuditAppender(session)).resource_server_disabled(name, by, now)
        return changed

    def rotate_resource_server_key(self, name: str, *, by: str, now: datetime) -> str:
        """A new introspection key; the old one stops when this commits (no grace period)."""
        with self.db.write() as session:
            key = agents_repo.replace_resource_server_key(session, name)
            AuditLog(SqlAuditAppender(session)).resource_server_key_rotated(name, by, now)
        return key

    def authenticate_resource_server(self, key: str) -> ResourceServer:
        with self.db.read() as session:
            return agents_repo.authenticate_resource_server(session, key)

    def list_resource_servers(self) -> list[ResourceServer]:
        with self.db.read() as session:
            return agents_repo.list_resource_servers(session)
