"""Audit entries off the hot path (docs/audit.md, "Pending entries"): on PostgreSQL a state
change writes its entries into ``audit_pending``, and a single chainer moves them into the
hash chain (``audit_log``) in ``id`` order. An existing chained log is left as it is."""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_pending",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=48), nullable=False),
        sa.Column("request_id", sa.String(length=40), nullable=True),
        sa.Column("actor", sa.String(length=320), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("audit_pending", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audit_pending_request_id"), ["request_id"], unique=False
        )


def downgrade() -> None:
    # Entries still pending would be lost: chain them first (stop every replica, then
    # `stepup audit chain`), and refuse otherwise.
    bind = op.get_bind()
    left = bind.execute(sa.text("SELECT count(*) FROM audit_pending")).scalar_one()
    if left:
        raise RuntimeError(
            f"{left} audit entries are still pending (not chained): stop every replica and run "
            "stepup audit chain before downgrading"
        )
    with op.batch_alter_table("audit_pending", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_pending_request_id"))
    op.drop_table("audit_pending")
