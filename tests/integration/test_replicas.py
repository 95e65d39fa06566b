"""Two `stepup serve` replicas on one PostgreSQL database: every deadline processed once."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from core.storage.database import Database
from core.storage.tables import AuditRow, RevocationRow
from tests.conftest import _reset_postgres
from tests.integration.live import free_port
from tests.integration.test_serve import REPO, STAGING_READ, add_agent, serving
from tests.support import eventually

STEPUP = str(Path(sys.executable).parent / "stepup")

pytestmark = pytest.mark.postgres


def test_two_replicas_revoke_two_hundred_credentials_exactly_once(
    postgres_database: str, tmp_path: Path
) -> None:
    db = Database(postgres_database)
    _reset_postgres(db)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STEPUP_", "SLACK_"))}
    env.update(
        STEPUP_DATABASE_URL=postgres_database,
        STEPUP_POLICY_FILE=str(REPO / "manifests" / "policy.example.yaml"),
        STEPUP_KEYS_DIR=str(tmp_path / "keys"),
        STEPUP_SWEEP_INTERVAL_SECONDS="0.5",
        STEPUP_PUBLIC_URL="https://stepup.test",
    )
    headers = {"Authorization": f"Bearer {add_agent(env, tmp_path, 'batch-bot')}"}
    ports = [free_port(), free_port()]
    body = STAGING_READ | {"justification": "nightly batch", "requested_ttl_seconds": 12}
    with (
        serving(tmp_path, env | {"STEPUP_PORT": str(ports[0])}),
        serving(tmp_path, env | {"STEPUP_PORT": str(ports[1])}),
    ):

        def submit_and_claim(i: int) -> str:
            base = f"http://127.0.0.1:{ports[i % 2]}"  # alternate replicas
            with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
                req = c.post("/v1/requests", json=body | {"parameters": {"n": i}}).json()
                assert c.post(f"/v1/requests/{req['id']}/credential").status_code == 200
                return str(req["id"])

        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(submit_and_claim, range(200)))

        def revocations_done() -> int:
            with db.read() as session:
                return int(
                    session.execute(
                        select(func.count())
                        .select_from(RevocationRow)
                        .where(RevocationRow.status == "done")
                    ).scalar_one()
                )

        eventually(
            revocations_done,
            until=lambda done: done == 200,
            timeout=60,
            interval=0.25,
            message="not every credential was revoked",
        )
    with db.read() as session:
        revoked = dict(
            session.execute(
                select(AuditRow.request_id, func.count())
                .where(AuditRow.kind == "credential.revoked")
                .group_by(AuditRow.request_id)
            ).all()
        )
        attempts = list(session.execute(select(RevocationRow.attempts)).scalars())
        issuer_calls = session.execute(
            select(func.count())
            .select_from(AuditRow)
            .where(AuditRow.kind == "credential.issuer_revoked")
        ).scalar_one()
    assert set(revoked) == set(ids) and set(revoked.values()) == {1}
    assert len(attempts) == 200 and set(attempts) == {1}  # one issuer call per credential
    assert issuer_calls == 200
    verify = subprocess.run(
        [STEPUP, "audit", "verify"], env=env, capture_output=True, text=True, timeout=120
    )
    assert verify.returncode == 0, verify.stderr
    db.dispose()
