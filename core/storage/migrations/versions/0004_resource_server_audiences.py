"""Resource servers' audiences: introspection answers a server only for tokens meant for it."""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("resource_servers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("audiences", sa.Text(), nullable=True))

    # Each existing server's one audience is its name (what `resource-servers add` gives now).
    servers = sa.table("resource_servers", sa.column("name", sa.String), sa.column("audiences"))
    bind = op.get_bind()
    for (name,) in bind.execute(sa.select(servers.c.name)).all():
        bind.execute(
            servers.update().where(servers.c.name == name).values(audiences=json.dumps([name]))
        )

    with op.batch_alter_table("resource_servers", schema=None) as batch_op:
        batch_op.alter_column("audiences", existing_type=sa.Text(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("resource_servers", schema=None) as batch_op:
        batch_op.drop_column("audiences")
