"""The http issuer against a broker played by ``responses``: every request is checked as a broker
would (the JWS verified with stepup's public key), and every answer shape is tried."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
import requests
import responses
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from core.issuers.base import BuildContext, IssueRequest, IssuerUnavailable
from core.issuers.http_broker import HttpGrant, HttpIssuer, HttpSettings, HttpType

URL = "https://broker.example.com/stepup"
STEPUP = "https://stepup.example.com"
KEY = Ed25519PrivateKey.generate()
PUBLIC = KEY.public_key()
SECRET = {"username": "tmp-4711", "password": "broker-secret-pa55"}
NOW = 1_796_200_000  # the clock of every issuer here (2026-12-02)
ASKED = datetime.fromtimestamp(NOW + 600, UTC)
REQUEST = IssueRequest(
    request_id="req_0123456789abcdef0123456789abcdef",
    agent="agent:deploy-bot",
    action="db.query",
    target="orders-db",
    environment="prod",
    args_digest="sha256:abc",
)


def sign(claims: dict[str, Any], typ: str) -> str:
    """What stepup's key ring does: EdDSA, with kid and typ in the header."""
    return jwt.encode(claims, KEY, algorithm="EdDSA", headers={"kid": "k1", "typ": typ})


def verified(request: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The broker's side: the body is a JWS by stepup's key, for this broker, still fresh."""
    assert request.headers["Content-Type"] == "application/jwt"
    body = request.body.decode() if isinstance(request.body, bytes) else request.body
    header = jwt.get_unverified_header(body)
    claims = jwt.decode(
        body,
        PUBLIC,
        algorithms=["EdDSA"],
        audience=URL,
        issuer=STEPUP,
        options={"verify_exp": False, "verify_iat": False},  # the issuer's clock is fixed
    )
    assert claims["exp"] - claims["iat"] == 60
    assert claims["iat"] == NOW
    return header, claims


class Broker:
    """Answers from a list in order (the last one repeats), recording what it was sent."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.seen: list[tuple[dict[str, Any], dict[str, Any], dict[str, str]]] = []

    def __call__(self, request: Any) -> tuple[int, dict[str, str], str]:
        header, claims = verified(request)
        self.seen.append((header, claims, dict(request.headers)))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        status, body = answer
        if status == 204:
            return status, {}, ""
        return status, {"Content-Type": "application/json"}, json.dumps(body)


def issued_answer(**changes: Any) -> tuple[int, dict[str, Any]]:
    return 201, {"handle": "lease/4711", "secret": SECRET, **changes}


def make(
    environ: dict[str, str] | None = None,
    sleeps: list[float] | None = None,
    **changes: Any,
) -> HttpIssuer:
    settings = HttpSettings.model_validate({"url": URL, **changes})
    context = BuildContext(environ=environ or {}, sign=sign, issuer_url=STEPUP)
    record: Callable[[float], None] = (sleeps if sleeps is not None else []).append
    return HttpIssuer("broker", settings, context, sleep=record, clock=lambda: float(NOW))


def grant() -> HttpGrant:
    return HttpGrant.model_validate({"role": "reader", "schemas": ["orders"], "ttl_hint": 600})


@responses.activate
def test_issue_sends_a_signed_request_and_returns_the_brokers_credential() -> None:
    broker = Broker(issued_answer(expires_at=NOW + 300))
    responses.add_callback(responses.POST, URL, callback=broker)

    issued = make().issue(grant(), REQUEST, ASKED)

    assert issued.secret == SECRET
    assert issued.handle == "lease/4711"
    assert issued.expires_at == datetime.fromtimestamp(NOW + 300, UTC)
    ((header, claims, headers),) = broker.seen
    assert header == {"alg": "EdDSA", "kid": "k1", "typ": "stepup-issue+jwt"}
    assert claims["op"] == "issue"
    assert claims["request_id"] == REQUEST.request_id
    assert claims["agent"] == REQUEST.agent
    assert claims["action"] == REQUEST.action
    assert claims["target"] == REQUEST.target
    assert claims["environment"] == "prod"
    assert claims["args_digest"] == "sha256:abc"
    assert claims["grant"] == {"role": "reader", "schemas": ["orders"], "ttl_hint": 600}
    assert claims["expires_at"] == NOW + 600
    assert len(claims["jti"]) >= 16
    assert re.fullmatch(rf"{REQUEST.request_id}:[0-9a-f]{{16}}:issue", headers["Idempotency-Key"])


class ReplayingBroker:
    """A broker that de-duplicates on the Idempotency-Key, as docs/issuers/http.md asks: a
    repeated key is answered the credential already minted for it."""

    def __init__(self) -> None:
        self.answered: dict[str, dict[str, Any]] = {}
        self.live: set[str] = set()

    def __call__(self, request: Any) -> tuple[int, dict[str, str], str]:
        _, claims = verified(request)
        key = request.headers["Idempotency-Key"]
        if claims["op"] == "revoke":
            self.live.discard(claims["handle"])
            return 204, {}, ""
        if key not in self.answered:
            handle = f"login-{len(self.answered) + 1}"
            self.live.add(handle)
            self.answered[key] = {"handle": handle, "secret": {"password": f"pw-{handle}"}}
        return 201, {"Content-Type": "application/json"}, json.dumps(self.answered[key])


@responses.activate
def test_two_claims_of_one_request_get_two_credentials_and_revoking_one_spares_the_other() -> None:
    # Two claims at once (or a claim again after stepup discarded an answer): stepup keeps one
    # and revokes the other. Under one key per request the broker answered both with the same
    # handle, and that revoke ended the credential the winner holds.
    broker = ReplayingBroker()
    responses.add_callback(responses.POST, URL, callback=broker)
    issuer = make()

    winner = issuer.issue(grant(), REQUEST, ASKED)
    loser = issuer.issue(grant(), REQUEST, ASKED)
    issuer.revoke(loser.handle)

    assert winner.handle != loser.handle
    assert broker.live == {winner.handle}
    keys = [call.request.headers["Idempotency-Key"] for call in responses.calls[:2]]
    assert keys[0] != keys[1]
    assert all(key.startswith(f"{REQUEST.request_id}:") for key in keys)


@responses.activate
def test_a_retry_within_one_claim_gets_the_credential_already_minted() -> None:
    # The broker minted, but its answer was lost (a 503 from a proxy after it): the retry
    # carries the same key, so the broker answers that credential rather than a second one.
    broker = ReplayingBroker()
    lost: list[bool] = []

    def flaky(request: Any) -> tuple[int, dict[str, str], str]:
        answer = broker(request)
        if not lost:
            lost.append(True)
            return 503, {}, ""
        return answer

    responses.add_callback(responses.POST, URL, callback=flaky)

    issued = make().issue(grant(), REQUEST, ASKED)

    assert len(responses.calls) == 2
    assert issued.handle == "login-1"
    assert broker.live == {"login-1"}


@responses.activate
def test_an_answer_without_expiry_means_the_asked_one_and_iso_is_understood() -> None:
    responses.add_callback(responses.POST, URL, callback=Broker(issued_answer()))
    assert make().issue(grant(), REQUEST, ASKED).expires_at == ASKED

    responses.replace(
        responses.POST,
        URL,
        json={"handle": "h", "secret": {}, "expires_at": "2026-12-02T08:30:00+00:00"},
        status=200,
    )
    expected = datetime(2026, 12, 2, 8, 30, tzinfo=UTC)
    assert make().issue(grant(), REQUEST, ASKED).expires_at == expected


@responses.activate
def test_a_503_is_retried_with_the_same_idempotency_key_and_a_fresh_jws() -> None:
    broker = Broker((503, {"error": "busy"}), issued_answer())
    responses.add_callback(responses.POST, URL, callback=broker)
    sleeps: list[float] = []

    issued = make(sleeps=sleeps).issue(grant(), REQUEST, ASKED)

    assert issued.handle == "lease/4711"
    assert len(responses.calls) == 2
    first, second = broker.seen
    assert first[2]["Idempotency-Key"] == second[2]["Idempotency-Key"]
    assert first[1]["jti"] != second[1]["jti"]
    assert sleeps == [0.2]


@responses.activate
def test_a_timeout_is_retried_then_success() -> None:
    broker = Broker(requests.exceptions.ConnectTimeout("slow"), issued_answer())
    responses.add_callback(responses.POST, URL, callback=broker)

    issued = make().issue(grant(), REQUEST, ASKED)

    assert issued.secret == SECRET
    assert len(responses.calls) == 2


@responses.activate
def test_retries_end_with_unavailable_after_backoff() -> None:
    responses.add_callback(responses.POST, URL, callback=Broker((502, {})))
    sleeps: list[float] = []

    with pytest.raises(IssuerUnavailable, match=r"after 3 attempt\(s\): HTTP 502"):
        make(sleeps=sleeps).issue(grant(), REQUEST, ASKED)

    assert len(responses.calls) == 3
    assert sleeps == [0.2, 0.4]


@responses.activate
def test_a_4xx_is_not_retried_and_its_excerpt_is_cleaned_and_capped() -> None:
    text = "no such role\x1b[31m\n" + "x" * 500
    responses.add(responses.POST, URL, body=text, status=403)

    with pytest.raises(IssuerUnavailable) as raised:
        make().issue(grant(), REQUEST, ASKED)

    message = str(raised.value)
    assert "HTTP 403" in message
    assert "no such role" in message
    assert "\x1b" not in message
    assert "\n" not in message
    assert "x" * 201 not in message
    assert len(responses.calls) == 1


@responses.activate
def test_a_redirect_is_not_followed() -> None:
    elsewhere = "https://attacker.example.com/collect"
    responses.add(responses.POST, URL, status=307, headers={"Location": elsewhere})
    responses.add(responses.POST, elsewhere, json={"handle": "x", "secret": {}})

    with pytest.raises(IssuerUnavailable, match="redirect"):
        make().issue(grant(), REQUEST, ASKED)

    assert [call.request.url for call in responses.calls] == [URL]


@responses.activate
def test_a_later_expiry_than_asked_is_refused_and_the_credential_revoked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    broker = Broker(issued_answer(expires_at=NOW + 3600), (204, {}))
    responses.add_callback(responses.POST, URL, callback=broker)

    with pytest.raises(IssuerUnavailable, match="later than asked") as raised:
        make().issue(grant(), REQUEST, ASKED)

    (_, revoke, headers) = broker.seen[1]
    assert revoke["op"] == "revoke"
    assert revoke["handle"] == "lease/4711"
    assert broker.seen[1][0]["typ"] == "stepup-revoke+jwt"
    assert headers["Idempotency-Key"].endswith(":revoke")
    assert SECRET["password"] not in str(raised.value)
    assert SECRET["password"] not in caplog.text


@pytest.mark.parametrize(
    ("answer", "revoked"),
    [
        ({"secret": SECRET}, False),  # no handle: nothing to revoke with
        ({"handle": "", "secret": SECRET}, False),
        ({"handle": "h\nx", "secret": SECRET}, False),
        ({"handle": "h" * 1001, "secret": SECRET}, False),
        ({"handle": "lease/1", "secret": "broker-secret-pa55"}, True),
        ({"handle": "lease/1", "secret": SECRET, "expires_at": "tomorrow"}, True),
        ({"handle": "lease/1", "secret": SECRET, "expires_at": True}, True),
    ],
)
@responses.activate
def test_malformed_answers_are_refused_without_quoting_the_body(
    answer: dict[str, Any], revoked: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    broker = Broker((200, answer), (200, {}))
    responses.add_callback(responses.POST, URL, callback=broker)

    with pytest.raises(IssuerUnavailable) as raised:
        make().issue(grant(), REQUEST, ASKED)

    assert "broker-secret-pa55" not in str(raised.value)
    assert "broker-secret-pa55" not in caplog.text
    ops = [claims["op"] for _, claims, _ in broker.seen]
    assert ops == (["issue", "revoke"] if revoked else ["issue"])


@responses.activate
def test_a_body_that_is_not_json_is_refused_without_quoting_it() -> None:
    responses.add(responses.POST, URL, body="password=broker-secret-pa55", status=200)

    with pytest.raises(IssuerUnavailable, match="not JSON") as raised:
        make().issue(grant(), REQUEST, ASKED)

    assert "broker-secret-pa55" not in str(raised.value)


@responses.activate
def test_the_secret_never_reaches_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    responses.add_callback(responses.POST, URL, callback=Broker(issued_answer()))

    issued = make().issue(grant(), REQUEST, ASKED)

    assert "lease/4711" in caplog.text
    assert SECRET["password"] not in caplog.text
    assert SECRET["password"] not in repr(issued)


@pytest.mark.parametrize("status", [200, 204, 404, 410])
@responses.activate
def test_revoke_succeeds_when_done_or_already_gone(status: int) -> None:
    broker = Broker((status, {}))
    responses.add_callback(responses.POST, URL, callback=broker)

    make().revoke("lease/4711")

    ((header, claims, _),) = broker.seen
    assert header["typ"] == "stepup-revoke+jwt"
    assert claims["op"] == "revoke"
    assert claims["handle"] == "lease/4711"
    assert "request_id" not in claims


@responses.activate
def test_revoke_retries_5xx_and_timeouts_then_gives_up() -> None:
    broker = Broker(requests.exceptions.ReadTimeout("slow"), (500, {}), (503, {}))
    responses.add_callback(responses.POST, URL, callback=broker)

    with pytest.raises(IssuerUnavailable, match="did not answer revoke"):
        make().revoke("lease/4711")

    assert len(broker.seen) == 3
    assert len({headers["Idempotency-Key"] for _, _, headers in broker.seen}) == 1


@responses.activate
def test_revoke_is_retried_into_success() -> None:
    responses.add_callback(responses.POST, URL, callback=Broker((503, {}), (204, {})))

    make().revoke("lease/4711")

    assert len(responses.calls) == 2


@responses.activate
def test_revoke_refused_with_4xx_is_unavailable() -> None:
    responses.add(responses.POST, URL, body="bad signature", status=401)

    with pytest.raises(IssuerUnavailable, match=r"HTTP 401.*bad signature"):
        make().revoke("lease/4711")


@responses.activate
def test_check_posts_a_signed_check() -> None:
    broker = Broker((200, {}))
    responses.add_callback(responses.POST, URL, callback=broker)

    said = make().check()

    assert "HTTP 200" in said
    assert broker.seen[0][0]["typ"] == "stepup-check+jwt"
    assert broker.seen[0][1]["op"] == "check"


@responses.activate
def test_headers_env_adds_the_brokers_own_auth_header_from_the_environment() -> None:
    broker = Broker((200, {}))
    responses.add_callback(responses.POST, URL, callback=broker)

    make({"BROKER_TOKEN": "Bearer t0k"}, headers_env={"Authorization": "BROKER_TOKEN"}).check()

    assert broker.seen[0][2]["Authorization"] == "Bearer t0k"


@responses.activate
def test_a_missing_or_bad_header_variable_is_named_not_quoted() -> None:
    with pytest.raises(IssuerUnavailable, match="BROKER_TOKEN is unset"):
        make({}, headers_env={"Authorization": "BROKER_TOKEN"}).check()
    with pytest.raises(IssuerUnavailable, match="BROKER_TOKEN") as raised:
        make(
            {"BROKER_TOKEN": "t0k\r\nX-Evil: 1"}, headers_env={"Authorization": "BROKER_TOKEN"}
        ).check()
    assert "t0k" not in str(raised.value)
    assert len(responses.calls) == 0


def test_without_a_signing_key_nothing_is_sent() -> None:
    settings = HttpSettings(url=URL)
    unsigned = HttpIssuer("broker", settings, BuildContext(environ={}))

    with pytest.raises(IssuerUnavailable, match="signing key"):
        unsigned.check()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"url": "http://broker.example.com/x"}, "url"),
        ({"url": "https://user:pw@broker.example.com/x"}, "url"),
        ({"url": "ftp://broker.example.com/x"}, "url"),
        ({"url": "https://broker.example.com/x?token=s3cret"}, "query"),
        ({"url": "https://broker.example.com/x?"}, "query"),
        ({"url": "https://broker.example.com/x#s3cret"}, "fragment"),
        ({"url": "https://broker.example.com/x#"}, "fragment"),
        ({"url": "https://s3cret@broker.example.com/x"}, "user or password"),
        ({"headers_env": {"Idempotency-Key": "X"}}, "headers_env"),
        ({"headers_env": {"Content-Type": "X"}}, "headers_env"),
        ({"headers_env": {"Bad Header": "X"}}, "headers_env"),
        ({"headers_env": {"Authorization": "not-an-env"}}, "headers_env"),
        ({"retries": -1}, "retries"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"token": "inline-secret"}, "token"),
    ],
)
def test_settings_refuse(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        HttpSettings.model_validate({"url": URL, **changes})


@pytest.mark.parametrize("url", ["http://127.0.0.1:8200/x", "http://localhost/x", "http://[::1]/"])
def test_plain_http_is_allowed_to_loopback_only(url: str) -> None:
    assert HttpSettings(url=url).url == url


@pytest.mark.parametrize(
    "grant_value",
    [
        {"role": None},
        {"role": 1.5},
        {"bad key": "x"},
        {"nested": {"a b": 1}},
        {"deep": [[[[[["x"]]]]]]},
        {"big": "x" * 20_000},
    ],
)
def test_grant_refuses_what_is_not_plain_data(grant_value: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        HttpGrant.model_validate(grant_value)


@pytest.mark.parametrize(
    "value", ["*", "a b", 'x"', "../etc", "a/../b", "-rf", ".hidden", "/abs", "a;b", "$(x)", ""]
)
def test_safe_value_refuses(value: str) -> None:
    assert HttpType.safe_value.fullmatch(value) is None


@pytest.mark.parametrize("value", ["orders", "orders-db", "team/app", "user@example.com", "v1.2"])
def test_safe_value_accepts(value: str) -> None:
    assert HttpType.safe_value.fullmatch(value) is not None


def test_build_and_describe() -> None:
    built = HttpType.build("broker", HttpSettings(url=URL), BuildContext(environ={}))

    assert (built.name, built.type, built.min_ttl) == ("broker", "http", timedelta(0))
    described = HttpType.describe("broker", HttpSettings(url=URL), grant())
    assert (
        described == "Credential from broker broker (role=reader, schemas=[orders], ttl_hint=600)"
    )
    assert HttpType.describe("b", HttpSettings(url=URL), HttpGrant()) == "Credential from broker b"


def test_describe_shows_a_long_value_an_agent_chose_instead_of_hiding_it() -> None:
    chosen = "readonly-orders-but-actually-admin-everything"  # 45 characters, fits safe_value
    assert HttpType.safe_value.fullmatch(chosen)
    described = HttpType.describe(
        "broker", HttpSettings(url=URL), HttpGrant.model_validate({"role": chosen})
    )
    assert described == f"Credential from broker broker (role={chosen})"

    longer = "readonly-" + "x" * 200 + "-admin"
    described = HttpType.describe(
        "broker", HttpSettings(url=URL), HttpGrant.model_validate({"role": longer, "db": "o"})
    )
    role = re.search(r"role=([^,)]*)", described)
    assert role is not None and role[1].endswith("…")
    assert longer.startswith(role[1][:-1])
    assert "db=o" in described


def test_describe_shows_every_key_and_value_within_a_bound() -> None:
    fields: dict[str, Any] = {f"key{n}": f"value-{n}-" + "v" * 50 for n in range(8)}
    fields["nested"] = {"mode": "admin", "flags": [True, 3]}
    described = HttpType.describe("broker", HttpSettings(url=URL), HttpGrant.model_validate(fields))
    shown = described.removeprefix("Credential from broker broker (").removesuffix(")")
    assert len(shown) <= 200
    for n in range(8):
        assert f"key{n}=value-{n}-" in shown
    assert "nested={mode=admin" in shown  # a map is shown too, cut like the rest
    short = HttpGrant.model_validate({"nested": {"mode": "admin", "flags": [True, 3]}})
    assert "(nested={mode=admin flags=[true 3]})" in HttpType.describe(
        "b", HttpSettings(url=URL), short
    )

    many: dict[str, Any] = {f"k{n:02}": "x" * 40 for n in range(40)}
    described = HttpType.describe("b", HttpSettings(url=URL), HttpGrant.model_validate(many))
    assert len(described) <= len("Credential from broker b ()") + 200
    assert described.endswith("…)")


class _DocsJwks:
    """Stands in for PyJWKClient (which fetches with urllib): stepup's JWKS holds one key."""

    def __init__(self, url: str) -> None:
        assert url == "https://stepup.example.com/.well-known/jwks.json"

    def get_signing_key_from_jwt(self, token: str) -> Any:
        assert jwt.get_unverified_header(token)["kid"] == "k1"
        return jwt.PyJWK.from_dict(
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "kid": "k1",
                "x": json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(PUBLIC))["x"],
            }
        )


def docs_broker(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The broker sketched in docs/issuers/http.md, run as written."""
    from tests.test_docs_snippets import REPO, fenced_blocks

    (sketch,) = [
        block
        for block in fenced_blocks(REPO / "docs" / "issuers" / "http.md")
        if block.language == "python"
    ]
    monkeypatch.setattr(jwt, "PyJWKClient", _DocsJwks)
    minted: dict[str, Any] = {}

    def mint_credential(grant: Any, expires_at: int, agent: str) -> tuple[str, dict[str, Any]]:
        handle = f"login-{len(minted) + 1}"
        minted[handle] = grant
        return handle, {"password": "docs-broker-pa55", "grant": grant}

    def delete_credential(handle: str) -> bool:
        return minted.pop(handle, None) is not None

    namespace: dict[str, Any] = {
        "mint_credential": mint_credential,
        "delete_credential": delete_credential,
        "minted": minted,
    }
    exec(compile(sketch.text, str(sketch.path), "exec"), namespace)  # noqa: S102 - our own docs
    return namespace


@responses.activate
def test_the_broker_sketched_in_the_docs_works_with_this_issuer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = docs_broker(monkeypatch)
    bodies: list[bytes] = []

    def serve(request: Any) -> tuple[int, dict[str, str], str]:
        bodies.append(request.body)
        status, answer = broker["handle"](request.body, request.headers["Idempotency-Key"])
        return status, {"Content-Type": "application/json"}, json.dumps(answer)

    responses.add(responses.POST, broker["ME"], status=503)  # the first attempt is lost
    responses.add_callback(responses.POST, broker["ME"], callback=serve)
    settings = HttpSettings(url=broker["ME"])
    context = BuildContext(environ={}, sign=sign, issuer_url=broker["STEPUP"])
    live = HttpIssuer("broker", settings, context, sleep=lambda _: None)
    asked = datetime.now(UTC) + timedelta(minutes=10)

    issued = live.issue(grant(), REQUEST, asked)

    assert issued.secret["password"] == "docs-broker-pa55"
    assert issued.secret["grant"] == grant().as_dict()
    assert issued.handle == "login-1"
    assert issued.expires_at <= asked
    second = live.issue(grant(), REQUEST, asked)  # another claim of the same request
    assert second.handle == "login-2"
    live.revoke(second.handle)
    assert list(broker["minted"]) == ["login-1"]
    assert live.check().endswith("(HTTP 200)")
    live.revoke(issued.handle)
    assert broker["minted"] == {}
    live.revoke(issued.handle)  # 404 from the sketch: already gone
    replayed = broker["handle"](bodies[0], "any")
    assert replayed == (401, {"error": "replayed request"})
    forged = jwt.encode(
        {"iss": broker["STEPUP"], "aud": broker["ME"], "op": "check"},
        Ed25519PrivateKey.generate(),
        algorithm="EdDSA",
        headers={"kid": "k1", "typ": "stepup-check+jwt"},
    )
    assert broker["handle"](forged.encode(), "x")[0] == 401
