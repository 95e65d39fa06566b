"""The schema. Migrations in ``migrations/versions`` create exactly these tables."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from core.storage.types import UTCDateTime


class Base(DeclarativeBase):
    pass


class AgentRow(Base):
    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    owner_email: Mapped[str] = mapped_column(String(320))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AgentKeyRow(Base):
    """Only a SHA-256 of each key is kept; the key itself is shown once at creation."""

    __tablename__ = "agent_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ResourceServerRow(Base):
    """A target system allowed to call introspection."""

    __tablename__ = "resource_servers"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # JSON list: the ``aud`` values of the tokens it may introspect (by default, its name).
    audiences: Mapped[str] = mapped_column(Text)


class RequestRow(Base):
    __tablename__ = "requests"
    __table_args__ = (
        UniqueConstraint("agent_id", "idempotency_key", name="uq_requests_idempotency"),
        # Finding what is due is a range scan over one status: O(due), not O(all).
        Index("ix_requests_status_expires", "status", "expires_at"),
        Index("ix_requests_status_credential_expires", "status", "credential_expires_at"),
        Index("ix_requests_status_escalation", "status", "next_escalation_at"),
        # An agent's requests in a status (the pending cap at submit), and all of them.
        Index("ix_requests_agent_status", "agent_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(128))
    owner_email: Mapped[str] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer, default=1)
    action: Mapped[str] = mapped_column(String(256))
    action_class: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(512))
    environment: Mapped[str] = mapped_column(String(64))
    justification: Mapped[str] = mapped_column(Text, default="")
    parameters: Mapped[str] = mapped_column(Text)  # canonical JSON
    parameters_digest: Mapped[str] = mapped_column(String(80))
    requested_ttl_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    data_volume_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    on_behalf_of: Mapped[str | None] = mapped_column(String(320), nullable=True)
    parent_request_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    # The delegation a child request was submitted under (docs/delegation.md).
    delegation_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # on_behalf_of came from the workload token's claims, not only from the agent's word.
    sponsor_verified: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    break_glass: Mapped[bool] = mapped_column(Boolean, default=False)
    rule: Mapped[str | None] = mapped_column(String(128), nullable=True)
    tier: Mapped[str] = mapped_column(String(16))
    reasons: Mapped[str] = mapped_column(Text)  # JSON list
    policy_digest: Mapped[str] = mapped_column(String(80))
    terms: Mapped[str] = mapped_column(Text)  # JSON: what the deciding rule asked for
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    credential_jti: Mapped[str | None] = mapped_column(String(64), nullable=True)
    credential_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    outcome_detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    body_digest: Mapped[str | None] = mapped_column(String(80), nullable=True)
    # Escalation: 0 none yet, 1 approvers reminded, 2 secondary group notified and eligible.
    escalation_stage: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_escalation_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    break_glass_reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    break_glass_reviewed_by: Mapped[str | None] = mapped_column(String(320), nullable=True)
    # Where its status changes are POSTed, signed (docs/callbacks.md).
    callback_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)


class VoteRow(Base):
    """One counted click. The unique constraint makes a double click count once."""

    __tablename__ = "votes"
    __table_args__ = (UniqueConstraint("request_id", "approver_slack_id", name="uq_votes_person"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("requests.id"), index=True)
    approver_slack_id: Mapped[str] = mapped_column(String(64))
    approver_email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    approver_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    vote: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    signature: Mapped[str] = mapped_column(Text)  # the signed decision (JWS)


class CredentialRow(Base):
    """Issued credentials and the revocation list. The token itself is never stored."""

    __tablename__ = "credentials"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("requests.id"), index=True)
    agent_id: Mapped[str] = mapped_column(String(128))
    scope: Mapped[str] = mapped_column(String(256))
    audience: Mapped[str] = mapped_column(String(512))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoke_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Who minted the credential the agent uses (NULL: the built-in JWT, the jti is all) and
    # its handle there (a role name, a lease id; never the secret itself).
    issuer: Mapped[str | None] = mapped_column(String(100), nullable=True)
    handle: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The issuer's type and settings it was minted under (JSON, no secret): revoked with those.
    issuer_config: Mapped[str | None] = mapped_column(Text, nullable=True)
    # RFC 9449: the thumbprint of the agent's DPoP key the credential is bound to (cnf.jkt).
    jkt: Mapped[str | None] = mapped_column(String(64), nullable=True)


class AuditRow(Base):
    """Append-only and hash-chained: ``hash`` covers every field and ``prev_hash``."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(48))
    request_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    actor: Mapped[str | None] = mapped_column(String(320), nullable=True)
    data: Mapped[str] = mapped_column(Text)  # canonical JSON
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditPendingRow(Base):
    """An audit entry written, not yet chained (PostgreSQL): the chainer moves it into
    ``audit_log`` with its seq and hash, in ``id`` order (docs/audit.md, "Pending entries")."""

    __tablename__ = "audit_pending"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(48))
    request_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    actor: Mapped[str | None] = mapped_column(String(320), nullable=True)
    data: Mapped[str] = mapped_column(Text)  # canonical JSON


class AuditHeadRow(Base):
    """The chain's head: one row, locked by each appender so entries are strictly ordered."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class OutboxRow(Base):
    """A message stepup owes to Slack, written in the transaction of the change it reports.

    A worker delivers it; transient failures are retried with backoff up to a cap; a message
    Slack refuses, or one past the cap, is kept as ``dead`` with its error (and reported).
    Entries of one request are delivered in order (a card must exist before it can be updated).
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    request_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[str] = mapped_column(Text)  # JSON
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|sent|dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class SlackMessageRow(Base):
    """Where a request's card (in a channel or an approver's DM) lives, to update it in place."""

    __tablename__ = "slack_messages"
    __table_args__ = (
        UniqueConstraint("request_id", "channel", name="uq_slack_messages_request_channel"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("requests.id"), index=True)
    channel: Mapped[str] = mapped_column(String(32))
    ts: Mapped[str] = mapped_column(String(32))
    is_primary: Mapped[bool] = mapped_column(Boolean, default=True)  # the thread lives here
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RevocationRow(Base):
    """A credential's revocation at its issuer (Vault, a broker...), retried until it succeeds.

    The database's revocation list takes effect at once (introspection says inactive); this
    row tracks the issuer's side, so a failure is retried with backoff, alerted after repeated
    failures, and stays visible until it succeeds.
    """

    __tablename__ = "revocations"
    __table_args__ = (Index("ix_revocations_due", "status", "next_attempt_at"),)

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(40), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | done
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    alerted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    issuer: Mapped[str | None] = mapped_column(String(100), nullable=True)  # NULL: built-in JWT
    handle: Mapped[str | None] = mapped_column(Text, nullable=True)
    issuer_config: Mapped[str | None] = mapped_column(Text, nullable=True)


class DigestRow(Base):
    """One row per digest day: the unique key makes replicas post each day's digest once."""

    __tablename__ = "digests"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD in STEPUP_TIMEZONE
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    head_seq: Mapped[int] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(String(64))


class TrustedIssuerRow(Base):
    """An issuer of workload tokens agents may authenticate with (docs/identity.md): an OIDC
    provider, or a SPIFFE trust domain's JWT-SVIDs."""

    __tablename__ = "trusted_issuers"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # oidc | spiffe
    issuer: Mapped[str] = mapped_column(String(512))  # the iss (OIDC) or spiffe://trust-domain
    jwks_uri: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    jwks: Mapped[str | None] = mapped_column(Text, nullable=True)  # a SPIFFE bundle's keys
    audience: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(320))


class AgentIdentityRow(Base):
    """A workload identity bound to an agent: tokens of ``trust_name`` whose subject is
    ``subject`` (an OIDC ``sub``, a SPIFFE ID) authenticate as ``agent_id``."""

    __tablename__ = "agent_identities"
    __table_args__ = (
        UniqueConstraint("trust_name", "subject", name="uq_agent_identities_trust_subject"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    trust_name: Mapped[str] = mapped_column(String(100))
    subject: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DpopProofRow(Base):
    """DPoP proofs already seen (RFC 9449 replay protection), kept until they would be stale."""

    __tablename__ = "dpop_proofs"

    jti: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class DelegationRow(Base):
    """Part of an active request handed to another agent (docs/delegation.md): which actions
    and targets (globs), for how long at most, at which depth of the chain."""

    __tablename__ = "delegations"
    __table_args__ = (Index("ix_delegations_parent", "parent_request_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    parent_request_id: Mapped[str] = mapped_column(ForeignKey("requests.id"))
    agent_id: Mapped[str] = mapped_column(String(128))
    actions: Mapped[str] = mapped_column(Text)  # JSON list of globs
    targets: Mapped[str] = mapped_column(Text)  # JSON list of globs
    max_ttl_seconds: Mapped[int] = mapped_column(Integer)
    depth: Mapped[int] = mapped_column(Integer)  # 1 for a delegation of a root request
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(128))


class AgentCallbackHostRow(Base):
    """A host an agent may name in a request's ``callback_url`` (docs/callbacks.md)."""

    __tablename__ = "agent_callback_hosts"

    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), primary_key=True)
    host: Mapped[str] = mapped_column(String(253), primary_key=True)
