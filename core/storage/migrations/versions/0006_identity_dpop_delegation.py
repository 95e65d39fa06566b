"""Agent identity, sender-constrained credentials and delegation (docs/identity.md,
docs/delegation.md): trusted workload-token issuers and the identities bound to each agent; a
credential's DPoP key thumbprint and the DPoP proofs already seen; delegations, and on each
request the delegation it was submitted under and whether its sponsor was verified."""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "trusted_issuers",
        sa.Column("name", sa.String(length=100), primary_key=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("issuer", sa.String(length=512), nullable=False),
        sa.Column("jwks_uri", sa.String(length=1024), nullable=True),
        sa.Column("jwks", sa.Text(), nullable=True),
        sa.Column("audience", sa.String(length=512), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=320), nullable=False),
    )
    op.create_table(
        "agent_identities",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("agent_id", sa.String(length=128), sa.ForeignKey("agents.id"), nullable=False),
        sa.Column("trust_name", sa.String(length=100), nullable=False),
        sa.Column("subject", sa.String(length=512), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("trust_name", "subject", name="uq_agent_identities_trust_subject"),
    )
    op.create_index("ix_agent_identities_agent_id", "agent_identities", ["agent_id"])
    op.create_table(
        "dpop_proofs",
        sa.Column("jti", sa.String(length=128), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
    )
    op.create_table(
        "delegations",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column(
            "parent_request_id", sa.String(length=40), sa.ForeignKey("requests.id"), nullable=False
        ),
        sa.Column("agent_id", sa.String(length=128), nullable=False),
        sa.Column("actions", sa.Text(), nullable=False),
        sa.Column("targets", sa.Text(), nullable=False),
        sa.Column("max_ttl_seconds", sa.Integer(), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
    )
    op.create_index("ix_delegations_parent", "delegations", ["parent_request_id"])
    with op.batch_alter_table("credentials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("jkt", sa.String(length=64), nullable=True))
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("delegation_id", sa.String(length=40), nullable=True))
        batch_op.add_column(
            sa.Column("sponsor_verified", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.drop_column("sponsor_verified")
        batch_op.drop_column("delegation_id")
    with op.batch_alter_table("credentials", schema=None) as batch_op:
        batch_op.drop_column("jkt")
    op.drop_index("ix_delegations_parent", table_name="delegations")
    op.drop_table("delegations")
    op.drop_table("dpop_proofs")
    op.drop_index("ix_agent_identities_agent_id", table_name="agent_identities")
    op.drop_table("agent_identities")
    op.drop_table("trusted_issuers")
