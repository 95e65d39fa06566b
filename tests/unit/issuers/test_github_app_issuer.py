"""The github_app issuer against GitHub's documented REST shapes, mocked with ``responses``:
the App JWT, the narrowed installation token, its revocation with the sealed handle, and the
attacks (wider answer, tampered handle, redirect, token in logs)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from core.issuers.base import BuildContext, IssueRequest, IssuerUnavailable
from core.issuers.github_app import (
    GitHubAppGrant,
    GitHubAppIssuer,
    GitHubAppSettings,
    GitHubAppType,
)
from core.issuers.sealing import SealError, seal, unseal

API = "https://api.github.com"
NOW = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)
TOKEN = "ghs_16C7e42F292c6912E7710c838347Ae178B4a"
TOKENS_URL = f"{API}/app/installations/678/access_tokens"
REQUEST = IssueRequest(
    request_id="req_01JEXAMPLE",
    agent="deploy-bot",
    action="github.push",
    target="orders-api",
    environment="production",
    args_digest="sha256:00",
)


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = _pem(KEY)
OTHER_PEM = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def token_body(**overrides: Any) -> dict[str, Any]:
    """GitHub's 201 answer to ``POST /app/installations/{id}/access_tokens``."""
    return {
        "token": TOKEN,
        "expires_at": "2026-12-02T16:00:00Z",
        "permissions": {"contents": "read", "pull_requests": "write"},
        "repository_selection": "selected",
        "repositories": [
            {
                "id": 1296269,
                "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5",
                "name": "orders-api",
                "full_name": "octo-org/orders-api",
                "private": True,
            },
        ],
        **overrides,
    }


def settings(**overrides: Any) -> GitHubAppSettings:
    return GitHubAppSettings.model_validate(
        {"app_id": 12345, "installation_id": 678, "private_key_env": "GH_APP_KEY", **overrides}
    )


def issuer(
    name: str = "github", environ: dict[str, str] | None = None, **overrides: Any
) -> GitHubAppIssuer:
    env = {"GH_APP_KEY": PEM} if environ is None else environ
    return GitHubAppIssuer(name, settings(**overrides), env, clock=lambda: NOW)


def grant(**raw: Any) -> GitHubAppGrant:
    return GitHubAppGrant.model_validate(
        {
            "repositories": ["orders-api"],
            "permissions": {"contents": "read", "pull_requests": "write"},
            **raw,
        }
    )


# -- issuing -------------------------------------------------------------------------------


@responses.activate
def test_issue_signs_an_app_jwt_and_asks_for_exactly_the_grant() -> None:
    responses.post(TOKENS_URL, status=201, json=token_body())

    issued = issuer().issue(grant(), REQUEST, NOW + timedelta(minutes=10))

    sent = responses.calls[0].request
    assert sent.headers["Accept"] == "application/vnd.github+json"
    assert sent.headers["X-GitHub-Api-Version"] == "2022-11-28"
    scheme, app_jwt = sent.headers["Authorization"].split(" ")
    assert scheme == "Bearer"
    claims = jwt.decode(
        app_jwt, KEY.public_key(), algorithms=["RS256"], options={"verify_exp": False}
    )
    assert claims["iss"] == "12345"
    assert claims["iat"] == int(NOW.timestamp()) - 60
    assert 0 < claims["exp"] - claims["iat"] <= 600
    assert json.loads(sent.body or b"{}") == {
        "repositories": ["orders-api"],
        "permissions": {"contents": "read", "pull_requests": "write"},
    }
    assert issued.secret == {
        "token": TOKEN,
        "repositories": ["orders-api"],
        "permissions": {"contents": "read", "pull_requests": "write"},
    }
    assert issued.expires_at == NOW + timedelta(minutes=10)


@responses.activate
def test_the_handle_is_sealed_and_opens_only_with_the_app_key() -> None:
    responses.post(TOKENS_URL, status=201, json=token_body())

    handle = issuer().issue(grant(), REQUEST, NOW + timedelta(minutes=10)).handle

    assert TOKEN not in handle
    assert TOKEN[4:20] not in handle
    assert handle.startswith("v1.")
    assert len(handle) <= 4000
    purpose = b"stepup github_app handle v1"
    assert unseal(PEM.encode(), handle, "github", purpose=purpose) == TOKEN
    with pytest.raises(SealError):
        unseal(OTHER_PEM.encode(), handle, "github", purpose=purpose)


@responses.activate
def test_the_metadata_read_github_adds_is_not_a_widening() -> None:
    implied = {"contents": "read", "pull_requests": "write", "metadata": "read"}
    responses.post(TOKENS_URL, status=201, json=token_body(permissions=implied))

    issued = issuer().issue(grant(), REQUEST, NOW + timedelta(minutes=10))

    assert issued.secret["permissions"] == implied  # what the token really holds


@responses.activate
def test_expiry_is_githubs_hour_when_the_approval_is_longer() -> None:
    responses.post(TOKENS_URL, status=201, json=token_body(expires_at="2026-12-02T16:00:00Z"))

    issued = issuer().issue(grant(), REQUEST, NOW + timedelta(hours=3))

    assert issued.expires_at == datetime(2026, 12, 2, 16, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "wider",
    [
        {"permissions": {"contents": "write", "pull_requests": "write"}},
        {"permissions": {"contents": "read", "pull_requests": "write", "administration": "read"}},
        {"repository_selection": "all"},
        {"repositories": [{"name": "orders-api"}, {"name": "billing"}]},
        {"repositories": []},
        {"permissions": {"contents": "read", "pull_requests": "write", "metadata": "write"}},
        {"permissions": None},
        {"repositories": None},
    ],
)
@responses.activate
def test_a_wider_answer_is_revoked_at_once_and_refused(wider: dict[str, Any]) -> None:
    responses.post(TOKENS_URL, status=201, json=token_body(**wider))
    delete = responses.delete(f"{API}/installation/token", status=204)

    with pytest.raises(IssuerUnavailable, match="more than asked") as caught:
        issuer().issue(grant(), REQUEST, NOW + timedelta(minutes=10))

    assert delete.call_count == 1
    assert delete.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in str(caught.value)


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (422, "There is at least one repository that does not exist or is not accessible"),
        (404, "Not Found"),
        (401, "A JSON web token could not be decoded"),
        (500, "Server Error"),
    ],
)
@responses.activate
def test_githubs_refusal_is_unavailable(status: int, message: str) -> None:
    responses.post(TOKENS_URL, status=status, json={"message": message})

    with pytest.raises(IssuerUnavailable, match=f"HTTP {status}") as caught:
        issuer().issue(grant(), REQUEST, NOW + timedelta(minutes=10))

    assert message in str(caught.value)


@responses.activate
def test_a_redirect_is_refused_and_not_followed() -> None:
    evil = responses.post("https://evil.example/access_tokens", status=201, json=token_body())
    responses.post(
        TOKENS_URL, status=307, headers={"Location": "https://evil.example/access_tokens"}
    )

    with pytest.raises(IssuerUnavailable, match="HTTP 307"):
        issuer().issue(grant(), REQUEST, NOW + timedelta(minutes=10))

    assert evil.call_count == 0


def test_missing_private_key_is_named() -> None:
    with pytest.raises(IssuerUnavailable, match="GH_APP_KEY is not set"):
        issuer(environ={}).issue(grant(), REQUEST, NOW + timedelta(minutes=10))


def test_a_private_key_that_is_not_pem_is_refused_without_echoing_it() -> None:
    with pytest.raises(IssuerUnavailable, match="PEM") as caught:
        issuer(environ={"GH_APP_KEY": "not-a-key-s3cr3t"}).check()

    assert "s3cr3t" not in str(caught.value)


@responses.activate
def test_a_pem_with_escaped_newlines_works() -> None:
    responses.get(f"{API}/app/installations/678", json={"id": 678, "account": {"login": "o"}})

    escaped = PEM.strip().replace("\n", "\\n")
    assert issuer(environ={"GH_APP_KEY": escaped}).check().startswith("installation 678")


# -- revoking ------------------------------------------------------------------------------


def sealed(name: str = "github", pem: str = PEM) -> str:
    return seal(pem.encode(), TOKEN, name, purpose=b"stepup github_app handle v1")


@pytest.mark.parametrize("status", [204, 401])
@responses.activate
def test_revoke_deletes_with_the_unsealed_token(status: int) -> None:
    delete = responses.delete(f"{API}/installation/token", status=status)

    issuer().revoke(sealed())  # 401: already expired or revoked, which is success

    assert delete.call_count == 1
    assert delete.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"


@responses.activate
def test_revoke_5xx_raises_for_the_scheduler_to_retry() -> None:
    responses.delete(f"{API}/installation/token", status=502, json={"message": "Bad Gateway"})

    with pytest.raises(IssuerUnavailable, match="HTTP 502") as caught:
        issuer().revoke(sealed())

    assert TOKEN not in str(caught.value)


@pytest.mark.parametrize(
    "handle",
    [
        sealed()[:-2] + ("AA" if not sealed().endswith("AA") else "BB"),
        sealed(name="other-github"),  # bound to another issuer
        sealed(pem=OTHER_PEM),  # another App's key
        "v2." + sealed()[3:],
        TOKEN,
        "",
    ],
    ids=["tampered", "other-issuer", "other-app-key", "unknown-version", "bare-token", "empty"],
)
@responses.activate
def test_a_handle_that_does_not_open_is_unavailable(handle: str) -> None:
    delete = responses.delete(f"{API}/installation/token", status=204)

    with pytest.raises(IssuerUnavailable, match="cannot be opened"):
        issuer().revoke(handle)

    assert delete.call_count == 0


# -- check ---------------------------------------------------------------------------------


@responses.activate
def test_check_reads_the_installation_with_the_app_jwt() -> None:
    responses.get(
        f"{API}/app/installations/678",
        json={"id": 678, "account": {"login": "octo-org", "id": 1}, "app_id": 12345},
    )

    assert issuer().check() == "installation 678 on account octo-org reachable"
    auth = responses.calls[0].request.headers["Authorization"].split(" ")[1]
    assert jwt.decode(auth, KEY.public_key(), algorithms=["RS256"], options={"verify_exp": False})


@pytest.mark.parametrize("status", [401, 404])
@responses.activate
def test_check_unreachable_installation(status: int) -> None:
    responses.get(f"{API}/app/installations/678", status=status, json={"message": "Not Found"})

    with pytest.raises(IssuerUnavailable, match=f"HTTP {status}"):
        issuer().check()


@responses.activate
def test_github_enterprise_server_api_url() -> None:
    ghes = "https://ghe.example.com/api/v3"
    responses.get(f"{ghes}/app/installations/678", json={"account": {"login": "corp"}})

    assert issuer(api_url=ghes + "/").check() == "installation 678 on account corp reachable"


# -- no token in logs or errors -------------------------------------------------------------


@responses.activate
def test_the_token_never_reaches_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    responses.post(TOKENS_URL, status=201, json=token_body())
    responses.post(TOKENS_URL, status=201, json=token_body(repository_selection="all"))
    responses.delete(f"{API}/installation/token", status=500, json={"message": "oops"})
    github = issuer()

    issued = github.issue(grant(), REQUEST, NOW + timedelta(minutes=10))
    with pytest.raises(IssuerUnavailable) as refused:
        github.issue(grant(), REQUEST, NOW + timedelta(minutes=10))
    with pytest.raises(IssuerUnavailable) as failed:
        github.revoke(issued.handle)

    assert "github" in caplog.text
    for text in (caplog.text, str(refused.value), str(failed.value), repr(issued)):
        assert TOKEN not in text
        assert "PRIVATE KEY" not in text


# -- grants and settings -------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        {"repositories": []},
        {"permissions": {}},
        {"repositories": ["octo-org/orders-api"]},
        {"repositories": ["*"]},
        {"repositories": ["a" * 101]},
        {"permissions": {"contents": "maintain"}},
        {"permissions": {"Contents": "read"}},
        {"permissions": {"contents": "*"}},
        {"repository_ids": [1]},
    ],
)
def test_grant_refused(raw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        grant(**raw)


@pytest.mark.parametrize("value", ["octo/orders", "", "a b", "*", "x" * 101])
def test_safe_value_refuses(value: str) -> None:
    assert GitHubAppType.safe_value.fullmatch(value) is None


@pytest.mark.parametrize(
    "raw",
    [
        {"api_url": "http://api.github.com"},
        {"api_url": "https://api.github.com?x=1"},
        {"app_id": 0},
        {"private_key": "-----BEGIN"},
    ],
)
def test_settings_refused(raw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        settings(**raw)


def test_build_and_describe() -> None:
    built = GitHubAppType.build("github", settings(), BuildContext(environ={"GH_APP_KEY": PEM}))
    assert (built.name, built.type, built.min_ttl) == ("github", "github_app", timedelta(0))
    assert GitHubAppType.describe("github", settings(), grant()) == (
        "GitHub App token from github for orders-api (contents: read, pull_requests: write)"
    )


def test_seal_round_trip_and_context_binding() -> None:
    key = b"key material"
    handle = seal(key, "secret value", "issuer-a")
    assert handle.startswith("v1.")
    assert "secret value" not in handle
    assert seal(key, "secret value", "issuer-a") != handle  # a fresh nonce each time
    assert unseal(key, handle, "issuer-a") == "secret value"
    with pytest.raises(SealError):
        unseal(key, handle, "issuer-b")
    with pytest.raises(SealError):
        unseal(key, handle, "issuer-a", purpose=b"another purpose")


def test_a_long_token_still_fits_the_handle_column() -> None:
    assert len(seal(PEM.encode(), "ghs_" + "x" * 2900, "github")) <= 4000


def test_a_non_rsa_key_is_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(IssuerUnavailable, match="not an RSA key"):
        issuer(environ={"GH_APP_KEY": ec_pem.decode()}).check()


@responses.activate
def test_a_201_that_is_not_json_is_unavailable() -> None:
    responses.post(TOKENS_URL, status=201, body="<html>proxy</html>")

    with pytest.raises(IssuerUnavailable, match="holds no token"):
        issuer().issue(grant(), REQUEST, NOW + timedelta(minutes=10))


@responses.activate
def test_requests_carry_the_timeout() -> None:
    responses.get(f"{API}/app/installations/678", json={"account": {"login": "o"}})

    issuer(timeout_seconds=4).check()

    recorded: Any = responses.calls[0].request  # responses keeps the send() arguments
    assert recorded.req_kwargs["timeout"] == 4
