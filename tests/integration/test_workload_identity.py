"""Workload identity through the real HTTP API: a local OIDC provider on loopback (its key
rotated mid-test, or trusted with an explicit ``--jwks-uri`` and no discovery) and SPIFFE
JWT-SVIDs; every refused token gets what a bad key gets."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from core.agents import WorkloadBinding
from core.identity.registry import TrustRegistry
from core.identity.workload import WorkloadVerifier
from core.storage import identity_repo
from core.storage.tables import AuditRow, RequestRow
from tests.integration.conftest import LiveApi
from tests.integration.workload_tokens import (
    LocalIssuer,
    SigningKey,
    jwt_svid,
    serving,
    spiffe_bundle,
)
from tests.support import OWNER, SPONSOR, submit_body

READ = submit_body(action="db.query", action_class="read", justification="look up order 42")
SUBJECT = "system:serviceaccount:ci:deployer"
DOMAIN = "prod.example.org"
SPIFFE_ID = f"spiffe://{DOMAIN}/ns/ci/sa/deployer"


class Monotonic:
    """The verifier's clock for refresh floors: moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Setup:
    api: LiveApi
    issuer: LocalIssuer
    bundle_key: SigningKey
    clock: Monotonic
    verifier: WorkloadVerifier

    def post(
        self, token: str, body: dict[str, object] | None = None, *, key: str | None = None
    ) -> httpx.Response:
        """Submit ``body`` (READ by default), with ``key`` as its Idempotency-Key if given."""
        headers = {} if key is None else {"Idempotency-Key": key}
        with self.api.client(token) as c:
            return c.post("/v1/requests", json=body or READ, headers=headers)


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def setup(live_api: LiveApi, tmp_path: Path) -> Iterator[Setup]:
    clock = Monotonic()
    db = live_api.engine.db
    verifier = WorkloadVerifier(identity_repo.trust_source(db), clock=clock, floor=30.0)
    live_api.engine.service.parts.identity = verifier
    bundle_key = SigningKey.ec()
    with serving() as issuer:
        trust = TrustRegistry(db, verifier)
        trust.add_oidc("k8s", issuer=issuer.url, audience="stepup", by="test", now=now())
        trust.add_spiffe(
            DOMAIN, audience="stepup", bundle=spiffe_bundle(bundle_key), by="t", now=now()
        )
        live_api.context.registry.add_keyless(
            "ci-bot",
            OWNER,
            by="test",
            now=now(),
            identities=[WorkloadBinding.oidc(f"k8s:{SUBJECT}"), WorkloadBinding.spiffe(SPIFFE_ID)],
        )
        yield Setup(live_api, issuer, bundle_key, clock, verifier)


def refusal(response: httpx.Response) -> tuple[int, str, bytes]:
    return response.status_code, response.headers["content-type"], response.content


def count(api: LiveApi, table: type) -> int:
    from sqlalchemy import func, select

    with api.engine.db.read() as session:
        return int(session.execute(select(func.count()).select_from(table)).scalar_one())


def test_an_oidc_token_authenticates_the_bound_agent(setup: Setup) -> None:
    token = setup.issuer.token(SUBJECT)
    created = setup.post(token)
    assert created.status_code == 201, created.text
    req = created.json()
    assert req["agent"] == "ci-bot" and req["sponsor_verified"] is False
    # Every route takes it: read, with an Idempotency-Key, claim.
    with setup.api.client(token) as c:
        assert c.get(f"/v1/requests/{req['id']}").json()["agent"] == "ci-bot"
        claimed = c.post(f"/v1/requests/{req['id']}/credential")
        assert (
            claimed.status_code == 200
            and jwt.decode(claimed.json()["token"], options={"verify_signature": False})["sub"]
            == "ci-bot"
        )
    again = setup.post(token, key="once")
    assert again.status_code == 201
    assert setup.post(token, key="once").json()["id"] == again.json()["id"]
    # The static key of another agent still works, and sees none of ci-bot's requests.
    with setup.api.client() as c:
        assert c.get(f"/v1/requests/{req['id']}").status_code == 404


def test_a_jwt_svid_authenticates_the_bound_agent(setup: Setup) -> None:
    created = setup.post(jwt_svid(setup.bundle_key, SPIFFE_ID))
    assert created.status_code == 201, created.text
    assert created.json()["agent"] == "ci-bot"


def test_every_bad_token_gets_what_a_bad_key_gets(setup: Setup) -> None:
    issuer, api = setup.issuer, setup.api
    bad_key = refusal(setup.post("stpa_" + "x" * 43))
    assert bad_key[0] == 401
    foreign = SigningKey.rsa(kid=issuer.key.kid)  # the provider's kid, another key
    public_pem = issuer.key.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"kid": issuer.key.kid}
    claims = {"iss": issuer.url, "sub": SUBJECT, "aud": "stepup", "exp": int(time.time()) + 300}
    other_bundle_key = SigningKey.ec(kid=setup.bundle_key.kid)
    tokens = {
        "wrong audience": issuer.token(SUBJECT, aud="someone-else"),
        "wrong issuer": issuer.token(SUBJECT, iss="https://evil.example.com"),
        "expired": issuer.token(SUBJECT, now=time.time() - 3600, lifetime=600),
        "not yet valid": issuer.token(SUBJECT, nbf=int(time.time()) + 600),
        "no exp": jwt.encode(
            {k: v for k, v in claims.items() if k != "exp"},
            issuer.key.key,
            algorithm="RS256",
            headers=header,
        ),
        "foreign key": issuer.token(SUBJECT, key=foreign),
        "unknown subject": issuer.token("system:serviceaccount:ci:intruder"),
        "alg none": jwt.encode(claims, "", algorithm="none", headers=header),
        "HS256 with the public key as secret": _hs256(claims, public_pem, issuer.key.kid),
        "unknown kid": issuer.token(SUBJECT, key=SigningKey.rsa()),
        "svid of another trust domain": jwt_svid(
            setup.bundle_key, "spiffe://evil.example.org/ns/ci/sa/deployer"
        ),
        "svid of an unbound ID in the trusted domain": jwt_svid(
            setup.bundle_key, f"spiffe://{DOMAIN}/ns/ci/sa/intruder"
        ),
        "svid with a foreign key": jwt_svid(other_bundle_key, SPIFFE_ID),
        "svid for another audience": jwt_svid(setup.bundle_key, SPIFFE_ID, aud="other"),
        "svid expired": jwt_svid(setup.bundle_key, SPIFFE_ID, lifetime=-120),
        "tampered": _tampered(issuer.token(SUBJECT)),
    }
    requests_before, entries_before = count(api, RequestRow), count(api, AuditRow)
    for name, token in tokens.items():
        for idempotency_key in (None, "k-1"):
            assert refusal(setup.post(token, key=idempotency_key)) == bad_key, name
        with api.client(token) as c:
            assert refusal(c.get("/v1/requests/req_x")) == bad_key, name
    assert count(api, RequestRow) == requests_before
    assert count(api, AuditRow) == entries_before
    # A disabled agent's token is refused too.
    assert setup.post(issuer.token(SUBJECT)).status_code == 201
    api.context.registry.disable("ci-bot", by="test", now=now())
    assert refusal(setup.post(issuer.token(SUBJECT))) == bad_key


def _hs256(claims: dict[str, object], secret: bytes, kid: str) -> str:
    """The classic confusion: HS256 keyed with the provider's public key (PyJWT refuses to
    make it with a PEM key, so it is made by hand)."""
    import base64
    import hashlib
    import hmac
    import json

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = part(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = part(json.dumps(claims).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{part(mac)}"


def _tampered(token: str) -> str:
    head, _, sig = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    import base64
    import json

    claims["sub"] = SUBJECT
    claims["exp"] = claims["exp"] + 3600
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{sig}"


def test_a_rotated_key_is_fetched_on_its_kid_no_sooner_than_the_floor(setup: Setup) -> None:
    issuer, clock = setup.issuer, setup.clock
    assert setup.post(issuer.token(SUBJECT)).status_code == 201
    assert issuer.fetches == {"/.well-known/openid-configuration": 1, "/jwks": 1}
    old = issuer.key
    new = issuer.rotate()
    # Within the floor, an unknown kid does not fetch again: refused.
    clock.now += 10
    assert setup.post(issuer.token(SUBJECT, key=new)).status_code == 401
    assert setup.post(issuer.token(SUBJECT, key=new)).status_code == 401
    assert issuer.fetches["/jwks"] == 1
    # The old key, still cached, still works until the keys are fetched again.
    assert setup.post(issuer.token(SUBJECT, key=old)).status_code == 201
    # Past the floor: one fetch, and the new key is accepted.
    clock.now += 25
    assert setup.post(issuer.token(SUBJECT, key=new)).status_code == 201
    assert setup.post(issuer.token(SUBJECT, key=new)).status_code == 201
    assert issuer.fetches["/jwks"] == 2
    assert issuer.fetches["/.well-known/openid-configuration"] == 1  # discovery is kept
    # The old key left the JWKS: refused now.
    assert setup.post(issuer.token(SUBJECT, key=old)).status_code == 401
    # A flood of forged kids within the floor costs no fetch.
    clock.now += 5
    for _ in range(20):
        assert setup.post(issuer.token(SUBJECT, key=SigningKey.ec())).status_code == 401
    assert issuer.fetches["/jwks"] == 2


def test_an_explicit_jwks_uri_verifies_without_fetching_discovery(
    setup: Setup, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``stepup trust add-oidc --jwks-uri``: the keys come from that URL alone; the provider's
    discovery document is never asked for."""
    from typer.testing import CliRunner

    from bot.cli import app
    from tests.integration.test_cli_admin import make_cli_env

    monkeypatch.chdir(tmp_path)  # no stray .env
    with serving() as direct:
        args = ["trust", "add-oidc", "direct", "--issuer", direct.url, "--audience", "stepup"]
        added = CliRunner().invoke(
            app,
            [*args, "--jwks-uri", direct.url + "/jwks"],
            env=make_cli_env(database_url, tmp_path),
            catch_exceptions=False,
        )
        assert added.exit_code == 0, added.stderr
        setup.clock.now += 2  # the service reads a trust added elsewhere on a miss, 1 s apart
        setup.api.context.registry.add_keyless(
            "direct-bot",
            OWNER,
            by="test",
            now=now(),
            identities=[WorkloadBinding.oidc(f"direct:{SUBJECT}")],
        )
        created = setup.post(direct.token(SUBJECT))
        assert created.status_code == 201, created.text
        assert created.json()["agent"] == "direct-bot"
        assert setup.post(direct.token(SUBJECT)).status_code == 201  # keys cached: no new fetch
        assert direct.fetches == {"/jwks": 1}


def test_a_redirected_jwks_is_not_followed(setup: Setup) -> None:
    with serving() as other:
        setup.issuer.redirect_jwks = other.url + "/jwks"
        assert setup.post(setup.issuer.token(SUBJECT)).status_code == 401
        assert other.fetches == {}


def test_removing_a_trust_stops_its_tokens_at_once(setup: Setup) -> None:
    token = setup.issuer.token(SUBJECT)
    assert setup.post(token).status_code == 201
    unbound = TrustRegistry(setup.api.engine.db).remove("k8s", by="test", now=now())
    assert unbound == 1
    # No reload needed: the binding went with it (another replica's verifier is no wiser).
    assert setup.post(token).status_code == 401
    assert setup.post(jwt_svid(setup.bundle_key, SPIFFE_ID)).status_code == 201


def test_the_sponsor_is_verified_only_when_the_token_names_it(setup: Setup) -> None:
    vouched = setup.issuer.token(SUBJECT, on_behalf_of=SPONSOR.upper())
    verified = setup.post(vouched, READ | {"on_behalf_of": SPONSOR}).json()
    assert verified["on_behalf_of"] == SPONSOR and verified["sponsor_verified"] is True
    other = setup.post(vouched, READ | {"on_behalf_of": "ceo@example.com"}).json()
    assert other["sponsor_verified"] is False
    plain = setup.post(setup.issuer.token(SUBJECT), READ | {"on_behalf_of": SPONSOR}).json()
    assert plain["sponsor_verified"] is False
    with setup.api.client() as c:  # a static key never verifies a sponsor
        assert (
            c.post("/v1/requests", json=READ | {"on_behalf_of": SPONSOR}).json()["sponsor_verified"]
            is False
        )
    snap = setup.api.engine.service.get(verified["id"])
    assert snap.sponsor_verified is True


def test_the_digest_counts_the_agents_still_on_static_keys(setup: Setup) -> None:
    from bot.slack.digest_blocks import digest_blocks
    from core.digest import render_text
    from core.storage.digest_repo import read_digest

    engine = setup.api.engine
    registry = setup.api.context.registry

    def digest_now() -> tuple[int, str, str]:
        digest = read_digest(engine.db, engine.keyring, now=now())
        return digest.static_key_agents, render_text(digest), json.dumps(digest_blocks(digest))

    # deploy-bot has a static key; ci-bot only its workload identities.
    count, text, blocks = digest_now()
    assert count == 1
    assert "Agent identity: 1 agent still uses a static key" in text
    assert "*Agent identity*: 1 agent still uses a static key" in blocks
    registry.add("dev-a", OWNER, by="test", now=now())
    registry.add("dev-b", OWNER, by="test", now=now())
    assert "3 agents still use static keys" in digest_now()[1]
    registry.disable("dev-b", by="test", now=now())  # a disabled agent's key works no more
    registry.disable("deploy-bot", by="test", now=now())
    assert digest_now()[0] == 1
    registry.disable("dev-a", by="test", now=now())
    assert "Agent identity: no agent uses a static key" in digest_now()[1]


def test_the_client_reads_a_refreshed_token_file_at_each_request(
    setup: Setup, tmp_path: Path
) -> None:
    """A projected service-account token is rewritten by the platform before it expires: the
    client given ``token_file`` sends whatever the file holds now, never a stale copy."""
    from stepup_client import ApiError, StepupClient, token_file

    path = tmp_path / "token"
    path.write_text(setup.issuer.token(SUBJECT) + "\n")
    with StepupClient(setup.api.url, token_file(path), retries=0) as client:
        first = client.submit(**READ)  # type: ignore[arg-type]
        path.write_text("not-a-token")  # the platform wrote something broken: refused
        with pytest.raises(ApiError) as refused:
            client.submit(**READ)  # type: ignore[arg-type]
        assert refused.value.status == 401
        path.write_text(setup.issuer.token(SUBJECT))  # refreshed again
        again = client.submit(**READ)  # type: ignore[arg-type]
    assert first.id != again.id
    assert setup.api.engine.service.get(again.id).agent_id == "ci-bot"
