"""One index for "this agent's requests in a status" (the pending cap counted at each submit
that waits for a human): (agent_id, status) replaces the index on agent_id alone, which made
that count read every request the agent ever made (25 ms at 25,000; bench/growth_bench.py)."""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_requests_agent_status", "requests", ["agent_id", "status"])
    op.drop_index("ix_requests_agent_id", table_name="requests")


def downgrade() -> None:
    op.create_index("ix_requests_agent_id", "requests", ["agent_id"])
    op.drop_index("ix_requests_agent_status", table_name="requests")
