"""Credential issuers: which issuer minted a credential, its handle there (a role name, a
lease id) and the issuer's settings it was minted under, on the credential and on its queued
revocation. NULL: the built-in JWT."""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("credentials", "revocations"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("issuer", sa.String(length=100), nullable=True))
            batch_op.add_column(sa.Column("handle", sa.Text(), nullable=True))
            batch_op.add_column(sa.Column("issuer_config", sa.Text(), nullable=True))


def downgrade() -> None:
    for table in ("credentials", "revocations"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("issuer_config")
            batch_op.drop_column("handle")
            batch_op.drop_column("issuer")
