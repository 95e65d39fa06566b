"""`stepup keys rotate` reaches two running `stepup serve` replicas without a restart.

Both replicas share one PostgreSQL database and one STEPUP_KEYS_DIR. After the rotation (the
real CLI, another process) each replica signs new credentials with the new key within 10 s,
while a credential signed by the old key before the rotation still introspects as active on
both, and both JWKS list the new key first, then the old one, until that credential expires.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from core.storage.database import Database
from tests.conftest import _reset_postgres
from tests.integration.live import free_port
from tests.integration.test_serve import REPO, STAGING_READ, STEPUP, add_agent, serving
from tests.support import eventually

pytestmark = pytest.mark.postgres

OLD_TOKEN_TTL = 20  # seconds: outlives the rotation and the checks, then expires in the test


def kid_of(token: str) -> str:
    head = token.split(".")[0]
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    return str(header["kid"])


def stepup(env: dict[str, str], cwd: Path, *args: str) -> str:
    done = subprocess.run(
        [STEPUP, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_rotation_reaches_both_running_replicas_and_old_tokens_stay_valid(
    postgres_database: str, tmp_path: Path
) -> None:
    db = Database(postgres_database)
    _reset_postgres(db)
    db.dispose()
    keys_dir = tmp_path / "shared-keys"  # the volume both replicas mount
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STEPUP_", "SLACK_"))}
    env.update(
        STEPUP_DATABASE_URL=postgres_database,
        STEPUP_POLICY_FILE=str(REPO / "manifests" / "policy.example.yaml"),
        STEPUP_KEYS_DIR=str(keys_dir),
        STEPUP_SWEEP_INTERVAL_SECONDS="0.5",
        STEPUP_PUBLIC_URL="https://stepup.test",
        STEPUP_SUBMIT_RATE_PER_AGENT="0",
    )
    agent = {"Authorization": f"Bearer {add_agent(env, tmp_path, 'batch-bot')}"}
    target = STAGING_READ["target"]
    added = stepup(env, tmp_path, "resource-servers", "add", target)
    server = {"Authorization": f"Bearer {added.strip().splitlines()[-1]}"}
    bases = [f"http://127.0.0.1:{port}" for port in (free_port(), free_port())]

    def claim(base: str, ttl: int = 60) -> dict[str, Any]:
        body = STAGING_READ | {"requested_ttl_seconds": ttl}
        with httpx.Client(base_url=base, headers=agent, timeout=30) as client:
            req = client.post("/v1/requests", json=body).json()
            assert req["status"] == "approved", req
            answer = client.post(f"/v1/requests/{req['id']}/credential")
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

    def introspect(base: str, token: str) -> dict[str, Any]:
        answer = httpx.post(
            f"{base}/v1/introspect", data={"token": token}, headers=server, timeout=30
        )
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def jwks_kids(base: str) -> list[str]:
        return [k["kid"] for k in httpx.get(f"{base}/.well-known/jwks.json").json()["keys"]]

    with (
        serving(tmp_path, env | {"STEPUP_PORT": bases[0].rsplit(":", 1)[1]}),
        serving(tmp_path, env | {"STEPUP_PORT": bases[1].rsplit(":", 1)[1]}),
    ):
        old = claim(bases[0], ttl=OLD_TOKEN_TTL)
        old_kid = kid_of(old["token"])
        assert kid_of(claim(bases[1])["token"]) == old_kid  # one shared key before
        assert [jwks_kids(base) for base in bases] == [[old_kid], [old_kid]]

        rotated = stepup(env, tmp_path, "keys", "rotate")
        match = re.search(r"active key ([A-Za-z0-9_-]{43}) \(was ([A-Za-z0-9_-]{43})", rotated)
        assert match is not None, rotated
        new_kid = match.group(1)
        assert match.group(2) == old_kid != new_kid
        assert "within 2 seconds" in rotated

        fresh: dict[str, str] = {}

        def kid_signed_by(base: str) -> str:
            fresh[base] = claim(base)["token"]
            return kid_of(fresh[base])

        for base in bases:  # no restart: each running replica switches by itself
            eventually(
                lambda base=base: kid_signed_by(base),  # type: ignore[misc]
                until=lambda kid: kid == new_kid,
                timeout=10,
                interval=0.25,
                message=f"{base} still signs with the old key",
            )

        for base in bases:
            assert jwks_kids(base) == [new_kid, old_kid]
            # The old credential, still unexpired, is active on both replicas...
            assert introspect(base, old["token"])["active"] is True
            # ...and a new one minted by either replica is active on the other.
            for other in bases:
                assert introspect(base, fresh[other])["active"] is True
            # An offline verifier with only this replica's JWKS accepts both generations.
            keys = jwt.PyJWKSet.from_dict(httpx.get(f"{base}/.well-known/jwks.json").json())
            for token in (old["token"], fresh[base]):
                claims = jwt.decode(
                    token, keys[kid_of(token)], algorithms=["EdDSA"], audience=target
                )
                assert claims["iss"] == "https://stepup.test"

        # Until it expires; then it is inactive on both (the JWKS keeps the old key longer:
        # until the largest credential lifetime plus clock skew after the rotation).
        expires = datetime.fromisoformat(old["expires_at"].replace("Z", "+00:00"))
        left = (expires - datetime.now(UTC)).total_seconds()
        for base in bases:
            eventually(
                lambda base=base: introspect(base, old["token"])["active"],  # type: ignore[misc]
                until=lambda active: active is False,
                timeout=max(left, 0) + 10,
                interval=0.5,
                message="the old credential outlived its expiry",
            )
            assert datetime.now(UTC) >= expires
            assert jwks_kids(base) == [new_kid, old_kid]
