"""Signed callbacks (docs/callbacks.md): the URL a request's status changes are POSTed to, and
the hosts each agent may name in one."""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agent_callback_hosts",
        sa.Column("agent_id", sa.String(length=128), sa.ForeignKey("agents.id"), primary_key=True),
        sa.Column("host", sa.String(length=253), primary_key=True),
    )
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("callback_url", sa.String(length=2048), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.drop_column("callback_url")
    op.drop_table("agent_callback_hosts")
