"""The vault issuer against Vault's documented HTTP API, mocked with ``responses`` (which
intercepts the requests session hvac's adapter uses): login, reading a dynamic secret, lease
revocation, token lookup, and the attacks (path injection, redirects, secrets in logs)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import responses
from pydantic import ValidationError

from core.issuers.base import BuildContext, IssueRequest, IssuerUnavailable
from core.issuers.vault import VaultGrant, VaultIssuer, VaultSettings, VaultType

VAULT = "https://vault.example.com:8200"
NOW = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)
TOKEN = "hvs.CAESIJ-root-like-token-value-0001"
APPROLE_TOKEN = "hvs.CAESIAppRoleIssuedToken0000000002"
APPROLE_TOKEN_2 = "hvs.CAESIAppRoleIssuedToken0000000003"
SECRET_ID = "6a174c20-f6de-a53c-74d2-6018fcceff64"
K8S_JWT = "eyJhbGciOiJSUzI1NiJ9.service-account-jwt.signature"
DB_PASSWORD = "A1a-Vh2sTmNq8xZpR4wY"
LEASE_ID = "database/creds/orders-reader/2f6a614c-4aa2-7b19-24b9-ad944a8d4de6"
REQUEST = IssueRequest(
    request_id="req_01JEXAMPLE",
    agent="deploy-bot",
    action="db.query",
    target="orders-db",
    environment="production",
    args_digest="sha256:00",
)
SECRETS = (TOKEN, APPROLE_TOKEN, APPROLE_TOKEN_2, SECRET_ID, K8S_JWT, DB_PASSWORD)


def creds_body(lease_id: str = LEASE_ID, duration: int = 300) -> dict[str, Any]:
    """Vault's answer to ``GET /v1/database/creds/:name`` (database secrets engine docs)."""
    return {
        "request_id": "75b2b1d5-2b4b-a8f3-fc94-7c5e10c3e8a2",
        "lease_id": lease_id,
        "renewable": True,
        "lease_duration": duration,
        "data": {"username": "v-token-orders-r-8Jdl3", "password": DB_PASSWORD},
        "wrap_info": None,
        "warnings": None,
        "auth": None,
    }


def login_body(token: str) -> dict[str, Any]:
    """Vault's answer to ``POST /v1/auth/approle/login`` and ``/auth/kubernetes/login``."""
    return {
        "auth": {
            "renewable": True,
            "lease_duration": 1200,
            "metadata": None,
            "token_policies": ["default", "stepup"],
            "accessor": "fd6c9a00-d2dc-3b11-0be5-af7ae0e1d374",
            "client_token": token,
        }
    }


def settings(**overrides: Any) -> VaultSettings:
    raw: dict[str, Any] = {"url": VAULT, "token_env": "VAULT_TOKEN", **overrides}
    if "auth" in overrides:
        raw.pop("token_env")
    return VaultSettings.model_validate(raw)


def issuer(
    config: VaultSettings | None = None, environ: dict[str, str] | None = None
) -> VaultIssuer:
    env = {"VAULT_TOKEN": TOKEN, "VAULT_SECRET_ID": SECRET_ID} if environ is None else environ
    return VaultIssuer("vault", config or settings(), env, clock=lambda: NOW)


def approle() -> VaultSettings:
    return settings(
        auth={"approle": {"role_id": "stepup-role", "secret_id_env": "VAULT_SECRET_ID"}}
    )


def grant(**raw: Any) -> VaultGrant:
    return VaultGrant.model_validate({"path": "database/creds/orders-reader", **raw})


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


# -- issuing -------------------------------------------------------------------------------


def renew_body(duration: int, lease_id: str = LEASE_ID) -> dict[str, Any]:
    """Vault's answer to ``PUT /v1/sys/leases/renew``: the lease and the duration it now has."""
    return {
        "request_id": "5c1d1b0a-8f2e-4f2c-9a8e-0b9a3c2d1e0f",
        "lease_id": lease_id,
        "renewable": True,
        "lease_duration": duration,
        "data": None,
        "wrap_info": None,
        "warnings": None,
        "auth": None,
    }


@responses.activate
def test_token_auth_reads_the_secret_within_the_approval() -> None:
    responses.get(f"{VAULT}/v1/database/creds/orders-reader", json=creds_body(duration=300))

    issued = issuer().issue(grant(), REQUEST, NOW + timedelta(minutes=5))

    sent = responses.calls[0].request
    assert sent.headers["X-Vault-Token"] == TOKEN
    assert sent.headers["X-Vault-Request"] == "true"
    assert issued.secret == {
        "lease_id": LEASE_ID,
        "lease_duration": 300,
        "data": {"username": "v-token-orders-r-8Jdl3", "password": DB_PASSWORD},
    }
    assert issued.handle == LEASE_ID
    assert issued.expires_at == NOW + timedelta(minutes=5)
    assert len(responses.calls) == 1  # the lease already ends in time: no renew


@responses.activate
def test_a_lease_shorter_than_the_approval_sets_the_real_expiry() -> None:
    responses.get(f"{VAULT}/v1/database/creds/orders-reader", json=creds_body(duration=60))

    issued = issuer().issue(grant(), REQUEST, NOW + timedelta(minutes=5))

    assert issued.secret["lease_duration"] == 60
    assert issued.expires_at == NOW + timedelta(seconds=60)
    assert [c.request.url for c in responses.calls] == [f"{VAULT}/v1/database/creds/orders-reader"]


@responses.activate
def test_a_lease_a_few_seconds_over_is_within_the_slack() -> None:
    responses.get(f"{VAULT}/v1/database/creds/orders-reader", json=creds_body(duration=302))

    issued = issuer().issue(grant(), REQUEST, NOW + timedelta(minutes=5))

    assert issued.secret["lease_duration"] == 302
    assert issued.expires_at == NOW + timedelta(minutes=5)
    assert len(responses.calls) == 1


# -- the lease held to the approval at Vault -----------------------------------------------


@responses.activate
def test_a_longer_lease_is_shortened_at_vault_with_a_renew() -> None:
    # the role's default TTL (768 h) would let the login outlive a 5-minute approval
    responses.get(f"{VAULT}/v1/database/creds/orders-reader", json=creds_body(duration=2764800))
    renew = responses.put(f"{VAULT}/v1/sys/leases/renew", json=renew_body(300))

    issued = issuer().issue(grant(), REQUEST, NOW + timedelta(minutes=5))

    assert renew.call_count == 1
    sent = responses.calls[1].request
    assert sent.method == "PUT"
    assert json.loads(sent.body or b"{}") == {"lease_id": LEASE_ID, "increment": 300}
    assert sent.headers["X-Vault-Token"] == TOKEN
    assert issued.secret["lease_duration"] == 300  # what Vault now says, not a local min()
    assert issued.expires_at == NOW + timedelta(minutes=5)
    assert issued.handle == LEASE_ID


@responses.activate
def test_the_renewed_duration_vault_answers_is_the_one_reported() -> None:
    # Vault may give less than asked (the role's max_ttl): that is the real lease
    responses.get(f"{VAULT}/v1/database/creds/orders-reader", json=creds_body(duration=3600))
    responses.put(f"{VAULT}/v1/sys/leases/renew", json=renew_body(120))

    issued = issuer().issue(grant(), REQUEST, NOW + timedelta(minutes=5))

    assert issued.secret["lease_duration"] == 120
    assert issued.expires_at == NOW + timedelta(seconds=120)


@responses.activate
def test_a_lease_without_a_duration_is_renewed_to_the_approval() -> None:
    body = creds_body()
    del body["lease_duration"]
    responses.get(f"{VAULT}/v1/database/creds/orders-reader", json=body)
    responses.put(f"{VAULT}/v1/sys/leases/renew", json=renew_body(300))

    issued = issuer().issue(grant(), REQUEST, NOW + timedelta(minutes=5))

    assert issued.secret["lease_duration"] == 300
    assert len(responses.calls) == 2


def refused_lease(caplog: pytest.LogCaptureFixture) -> tuple[str, list[Any]]:
    """Issue with a 5-minute approval; the claim must fail. The message and the calls made."""
    caplog.set_level(logging.DEBUG)
    with pytest.raises(IssuerUnavailable) as caught:
        issuer().issue(grant(), REQUEST, NOW + timedelta(minutes=5))
    message = str(caught.value)
    assert "default_ttl" in message and "max_ttl" in message
    assert_no_secret(message, caplog.text)
    return message, list(responses.calls)


@responses.activate
def test_a_lease_that_cannot_be_renewed_is_revoked_and_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = {**creds_body(duration=2764800), "renewable": False}
    responses.get(f"{VAULT}/v1/database/creds/orders-reader", json=body)
    renew = responses.put(f"{VAULT}/v1/sys/leases/renew", json=renew_body(300))
    revoke = responses.put(f"{VAULT}/v1/sys/leases/revoke", status=204)

    message, calls = refused_lease(caplog)

    assert "not renewable" in message and "it was revoked" in message
    assert renew.call_count == 0
    assert revoke.call_count == 1
    assert json.loads(calls[-1].request.body or b"{}") == {"lease_id": LEASE_ID}


@responses.activate
def test_a_renew_vault_refuses_revokes_the_lease_and_refuses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    responses.get(f"{VAULT}/v1/database/creds/orders-reader", json=creds_body(duration=2764800))
    responses.put(f"{VAULT}/v1/sys/leases/renew", status=500, json={"errors": ["internal error"]})
    revoke = responses.put(f"{VAULT}/v1/sys/leases/revoke", status=204)

    message, calls = refused_lease(caplog)

    assert "HTTP 500" in message and "it was revoked" in message
    assert revoke.call_count == 1
    assert [c.request.url.rsplit("/v1/", 1)[1] for c in calls] == [
        "database/creds/orders-reader",
        "sys/leases/renew",
        "sys/leases/revoke",
    ]


@responses.activate
def test_a_renew_without_permission_revokes_the_lease_and_refuses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    responses.get(f"{VAULT}/v1/database/creds/orders-reader", json=creds_body(duration=3600))
    responses.put(
        f"{VAULT}/v1/sys/leases/renew", status=403, json={"errors": ["permission denied"]}
    )
    revoke = responses.put(f"{VAULT}/v1/sys/leases/revoke", status=204)

    message, _ = refused_lease(caplog)

    assert "HTTP 403" in message
    assert revoke.call_count == 1


@responses.activate
def test_a_renew_vault_answers_still_too_long_revokes_the_lease_and_refuses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # an engine may ignore the increment: the lease would still outlive the approval
    responses.get(f"{VAULT}/v1/database/creds/orders-reader", json=creds_body(duration=2764800))
    responses.put(f"{VAULT}/v1/sys/leases/renew", json=renew_body(2764800))
    revoke = responses.put(f"{VAULT}/v1/sys/leases/revoke", status=204)

    message, _ = refused_lease(caplog)

    assert "kept it at 2764800 s" in message
    assert revoke.call_count == 1


@responses.activate
def test_a_refused_lease_vault_will_not_revoke_is_named_for_an_operator(
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = {**creds_body(duration=2764800), "renewable": False}
    responses.get(f"{VAULT}/v1/database/creds/orders-reader", json=body)
    responses.put(f"{VAULT}/v1/sys/leases/revoke", status=503, json={"errors": ["sealed"]})

    message, _ = refused_lease(caplog)

    assert f"revoke lease {LEASE_ID} by hand" in message
    assert LEASE_ID in caplog.text


@responses.activate
def test_post_with_a_ttl_asks_vault_for_no_more_than_the_approval() -> None:
    responses.post(f"{VAULT}/v1/aws/creds/deploy", json=creds_body("aws/creds/deploy/abc", 600))

    issuer().issue(
        grant(path="aws/creds/deploy", method="POST", data={"ttl": "1h", "role_session_name": "x"}),
        REQUEST,
        NOW + timedelta(minutes=10),
    )

    assert json.loads(responses.calls[0].request.body or b"{}") == {
        "ttl": "600s",
        "role_session_name": "x",
    }


@responses.activate
def test_namespace_is_sent_with_every_request() -> None:
    responses.get(f"{VAULT}/v1/database/creds/orders-reader", json=creds_body())

    issuer(settings(namespace="team-a")).issue(grant(), REQUEST, NOW + timedelta(minutes=5))

    assert responses.calls[0].request.headers["X-Vault-Namespace"] == "team-a"


@responses.activate
def test_approle_logs_in_then_reads_with_the_client_token() -> None:
    login = responses.post(f"{VAULT}/v1/auth/approle/login", json=login_body(APPROLE_TOKEN))
    responses.get(f"{VAULT}/v1/database/creds/orders-reader", json=creds_body())

    vault = issuer(approle())
    vault.issue(grant(), REQUEST, NOW + timedelta(minutes=5))
    vault.issue(grant(), REQUEST, NOW + timedelta(minutes=5))

    assert login.call_count == 1  # the login is kept
    login_request = responses.calls[0].request
    assert json.loads(login_request.body or b"{}") == {
        "role_id": "stepup-role",
        "secret_id": SECRET_ID,
    }
    assert "X-Vault-Token" not in login_request.headers
    assert responses.calls[1].request.headers["X-Vault-Token"] == APPROLE_TOKEN


@responses.activate
def test_kubernetes_logs_in_with_the_service_account_token_file(tmp_path: Path) -> None:
    jwt_file = tmp_path / "token"
    jwt_file.write_text(K8S_JWT + "\n")
    responses.post(f"{VAULT}/v1/auth/k8s-prod/login", json=login_body(APPROLE_TOKEN))
    responses.get(f"{VAULT}/v1/database/creds/orders-reader", json=creds_body())
    config = settings(
        auth={"kubernetes": {"role": "stepup", "jwt_path": str(jwt_file), "mount": "k8s-prod"}}
    )

    issuer(config, environ={}).issue(grant(), REQUEST, NOW + timedelta(minutes=5))

    assert json.loads(responses.calls[0].request.body or b"{}") == {
        "role": "stepup",
        "jwt": K8S_JWT,
    }
    assert responses.calls[1].request.headers["X-Vault-Token"] == APPROLE_TOKEN


def test_kubernetes_without_the_token_file_is_unavailable(tmp_path: Path) -> None:
    config = settings(auth={"kubernetes": {"role": "stepup", "jwt_path": str(tmp_path / "no")}})

    with pytest.raises(IssuerUnavailable, match="service-account token"):
        issuer(config, environ={}).check()


@responses.activate
def test_403_with_a_static_token_fails_without_showing_it() -> None:
    responses.get(
        f"{VAULT}/v1/database/creds/orders-reader",
        status=403,
        json={"errors": ["1 error occurred:\n\t* permission denied\n\n"]},
    )

    with pytest.raises(IssuerUnavailable) as caught:
        issuer().issue(grant(), REQUEST, NOW + timedelta(minutes=5))

    assert "HTTP 403" in str(caught.value)
    assert "permission denied" in str(caught.value)
    assert_no_secret(str(caught.value))
    assert len(responses.calls) == 1  # an environment token cannot be renewed: no retry


@responses.activate
def test_403_with_approle_logs_in_again_once() -> None:
    responses.post(f"{VAULT}/v1/auth/approle/login", json=login_body(APPROLE_TOKEN))
    responses.post(f"{VAULT}/v1/auth/approle/login", json=login_body(APPROLE_TOKEN_2))
    path = f"{VAULT}/v1/database/creds/orders-reader"
    responses.get(path, status=403, json={"errors": ["permission denied"]})
    responses.get(path, json=creds_body())

    issued = issuer(approle()).issue(grant(), REQUEST, NOW + timedelta(minutes=5))

    assert issued.handle == LEASE_ID
    tokens = [c.request.headers.get("X-Vault-Token") for c in responses.calls]
    assert tokens == [None, APPROLE_TOKEN, None, APPROLE_TOKEN_2]


@responses.activate
def test_a_static_secret_is_refused_because_it_cannot_be_revoked() -> None:
    responses.get(
        f"{VAULT}/v1/secret/orders",
        json={"lease_id": "", "lease_duration": 2764800, "renewable": False, "data": {"k": "v"}},
    )

    with pytest.raises(IssuerUnavailable, match="static secret"):
        issuer().issue(grant(path="secret/orders"), REQUEST, NOW + timedelta(minutes=5))


@responses.activate
def test_vault_down_is_unavailable() -> None:
    responses.get(
        f"{VAULT}/v1/database/creds/orders-reader", status=503, json={"errors": ["Vault is sealed"]}
    )

    with pytest.raises(IssuerUnavailable, match="HTTP 503"):
        issuer().issue(grant(), REQUEST, NOW + timedelta(minutes=5))


@responses.activate
def test_unreachable_vault_is_unavailable() -> None:
    # nothing registered: responses raises ConnectionError, like a refused connection
    with pytest.raises(IssuerUnavailable, match="unreachable"):
        issuer().issue(grant(), REQUEST, NOW + timedelta(minutes=5))


def test_a_missing_environment_variable_is_named() -> None:
    with pytest.raises(IssuerUnavailable, match="VAULT_TOKEN is not set"):
        issuer(environ={}).issue(grant(), REQUEST, NOW + timedelta(minutes=5))


def test_an_expired_approval_is_not_issued() -> None:
    with pytest.raises(IssuerUnavailable, match="expired"):
        issuer().issue(grant(), REQUEST, NOW - timedelta(seconds=1))


# -- redirects -----------------------------------------------------------------------------


@responses.activate
def test_a_redirect_is_refused_and_the_token_not_sent_there() -> None:
    evil = responses.get("https://evil.example/v1/database/creds/orders-reader", json={})
    responses.get(
        f"{VAULT}/v1/database/creds/orders-reader",
        status=307,
        headers={"Location": "https://evil.example/v1/database/creds/orders-reader"},
    )

    with pytest.raises(IssuerUnavailable, match="redirect") as caught:
        issuer().issue(grant(), REQUEST, NOW + timedelta(minutes=5))

    assert evil.call_count == 0
    assert len(responses.calls) == 1
    assert_no_secret(str(caught.value))


@responses.activate
def test_a_redirected_login_does_not_carry_the_secret_id_away() -> None:
    evil = responses.post("https://evil.example/v1/auth/approle/login", json={})
    responses.post(
        f"{VAULT}/v1/auth/approle/login",
        status=308,
        headers={"Location": "https://evil.example/v1/auth/approle/login"},
    )

    with pytest.raises(IssuerUnavailable, match="redirect"):
        issuer(approle()).issue(grant(), REQUEST, NOW + timedelta(minutes=5))

    assert evil.call_count == 0


# -- revoking ------------------------------------------------------------------------------


@responses.activate
def test_revoke_puts_the_lease_id_to_sys_leases_revoke() -> None:
    responses.put(f"{VAULT}/v1/sys/leases/revoke", status=204)

    issuer().revoke(LEASE_ID)

    sent = responses.calls[0].request
    assert sent.method == "PUT"
    assert json.loads(sent.body or b"{}") == {"lease_id": LEASE_ID}
    assert sent.headers["X-Vault-Token"] == TOKEN


@responses.activate
def test_revoke_5xx_raises_then_a_retry_succeeds() -> None:
    responses.put(f"{VAULT}/v1/sys/leases/revoke", status=500, json={"errors": ["internal error"]})
    responses.put(f"{VAULT}/v1/sys/leases/revoke", status=204)
    vault = issuer()

    with pytest.raises(IssuerUnavailable, match="HTTP 500"):
        vault.revoke(LEASE_ID)
    vault.revoke(LEASE_ID)  # the scheduler's retry

    assert len(responses.calls) == 2


@responses.activate
def test_revoke_of_a_lease_already_gone_succeeds() -> None:
    # current Vault answers 204 for an unknown lease; older versions said 400 invalid lease ID
    responses.put(f"{VAULT}/v1/sys/leases/revoke", status=204)
    responses.put(
        f"{VAULT}/v1/sys/leases/revoke", status=400, json={"errors": ["invalid lease ID"]}
    )
    responses.put(f"{VAULT}/v1/sys/leases/revoke", status=400, json={"errors": ["lease not found"]})
    vault = issuer()

    vault.revoke(LEASE_ID)
    vault.revoke(LEASE_ID)
    vault.revoke(LEASE_ID)

    assert len(responses.calls) == 3


@responses.activate
def test_revoke_other_400_is_a_failure() -> None:
    responses.put(
        f"{VAULT}/v1/sys/leases/revoke", status=400, json={"errors": ["missing lease_id"]}
    )

    with pytest.raises(IssuerUnavailable, match="missing lease_id"):
        issuer().revoke(LEASE_ID)


@responses.activate
def test_revoke_403_logs_in_again_once_then_fails() -> None:
    login = responses.post(f"{VAULT}/v1/auth/approle/login", json=login_body(APPROLE_TOKEN))
    revoke = responses.put(
        f"{VAULT}/v1/sys/leases/revoke", status=403, json={"errors": ["permission denied"]}
    )

    with pytest.raises(IssuerUnavailable, match="HTTP 403") as caught:
        issuer(approle()).revoke(LEASE_ID)

    assert login.call_count == 2
    assert revoke.call_count == 2
    assert_no_secret(str(caught.value))


# -- check ---------------------------------------------------------------------------------


@responses.activate
def test_check_looks_up_its_own_token() -> None:
    responses.get(
        f"{VAULT}/v1/auth/token/lookup-self",
        json={"data": {"policies": ["default", "stepup"], "ttl": 2764790, "renewable": True}},
    )

    assert issuer().check() == "token valid, policies [default, stepup], ttl 2764790 s"


@responses.activate
def test_check_with_a_bad_token_is_unavailable() -> None:
    responses.get(
        f"{VAULT}/v1/auth/token/lookup-self", status=403, json={"errors": ["permission denied"]}
    )

    with pytest.raises(IssuerUnavailable, match="token lookup failed") as caught:
        issuer().check()

    assert_no_secret(str(caught.value))


@responses.activate
def test_check_with_a_refused_approle_login_is_unavailable() -> None:
    responses.post(
        f"{VAULT}/v1/auth/approle/login", status=400, json={"errors": ["invalid role or secret ID"]}
    )

    with pytest.raises(IssuerUnavailable, match="AppRole login failed") as caught:
        issuer(approle()).check()

    assert_no_secret(str(caught.value))


# -- no secret in logs or errors -----------------------------------------------------------


@responses.activate
def test_no_secret_reaches_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    responses.post(f"{VAULT}/v1/auth/approle/login", json=login_body(APPROLE_TOKEN))
    responses.get(f"{VAULT}/v1/database/creds/orders-reader", json=creds_body())
    responses.put(f"{VAULT}/v1/sys/leases/revoke", status=502, json={"errors": [APPROLE_TOKEN]})
    vault = issuer(approle())

    issued = vault.issue(grant(), REQUEST, NOW + timedelta(minutes=5))
    with pytest.raises(IssuerUnavailable) as caught:
        vault.revoke(issued.handle)

    assert "vault" in caplog.text  # something was logged, and it holds no secret
    assert_no_secret(caplog.text, str(caught.value), repr(issued))


# -- settings and grants (what a policy may say) -------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "sys/leases/revoke-prefix/database",
        "auth/token/create",
        "identity/entity",
        "SYS/policies/acl/x",
        "/database/creds/x",
        "database/creds/../../sys/seal",
        "database/creds/./x",
        "database//creds",
        "database/creds/x/",
        "database/creds/x?list=true",
        "database/creds/x%2f..",
        "database/creds/*",
        "",
    ],
)
def test_grant_refuses_paths_outside_secrets_engines(path: str) -> None:
    with pytest.raises(ValidationError):
        grant(path=path)


def test_grant_refuses_data_on_get_and_bad_ttls() -> None:
    with pytest.raises(ValidationError, match="only with method: POST"):
        grant(data={"ttl": "5m"})
    with pytest.raises(ValidationError, match="ttl"):
        grant(method="POST", data={"ttl": "forever"})
    with pytest.raises(ValidationError):
        grant(method="POST", data={"nested": {"a": 1}})
    assert grant(method="POST", data={"ttl": 300}).data == {"ttl": 300}


@pytest.mark.parametrize("value", ["../sys", "a/b", "", "x" * 129, "role name", "r*"])
def test_safe_value_is_one_path_segment(value: str) -> None:
    assert VaultType.safe_value.fullmatch(value) is None


def test_safe_value_accepts_role_names() -> None:
    assert VaultType.safe_value.fullmatch("orders-reader_v2.1")


@pytest.mark.parametrize(
    "raw",
    [
        {"url": "http://vault.example.com", "token_env": "T"},
        {"url": "http://vault.example.com", "token_env": "T", "allow_http": True},
        {"url": "https://vault.example.com/v1", "token_env": "T"},
        {"url": VAULT},
        {
            "url": VAULT,
            "token_env": "T",
            "auth": {"approle": {"role_id": "r", "secret_id_env": "S"}},
        },
        {"url": VAULT, "auth": {}},
        {"url": VAULT, "token": "hvs.inline"},
        {"url": VAULT, "token_env": "not a name"},
    ],
)
def test_settings_refused(raw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        VaultSettings.model_validate(raw)


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("https://admin:s3cret@vault.example.com:8200", "user:password@"),
        ("https://s3cret@vault.example.com:8200", "user:password@"),
        ("https://:s3cret@vault.example.com:8200", "user:password@"),
        ("https://vault.example.com:8200?token=s3cret", "query"),
        ("https://vault.example.com:8200/?", "query"),
        ("https://vault.example.com:8200#s3cret", "fragment"),
    ],
)
def test_settings_refuse_credentials_and_extras_in_the_url(url: str, said: str) -> None:
    with pytest.raises(ValidationError, match=said) as caught:
        VaultSettings.model_validate({"url": url, "token_env": "T"})
    assert "s3cret" not in str(caught.value).split("input_value")[0]


def test_plain_http_only_to_a_loopback_dev_server() -> None:
    config = VaultSettings.model_validate(
        {"url": "http://127.0.0.1:8200", "allow_http": True, "token_env": "T"}
    )
    assert config.url == "http://127.0.0.1:8200"


def test_build_and_describe() -> None:
    built = VaultType.build("vault", settings(), BuildContext(environ={"VAULT_TOKEN": TOKEN}))
    assert (built.name, built.type, built.min_ttl) == ("vault", "vault", timedelta(0))
    assert (
        VaultType.describe("vault", settings(), grant())
        == "Vault secret from vault, database/creds/orders-reader"
    )


@responses.activate
def test_an_answer_that_is_not_json_is_unavailable() -> None:
    responses.get(f"{VAULT}/v1/database/creds/orders-reader", body="<html>proxy</html>")

    with pytest.raises(IssuerUnavailable, match="is not JSON"):
        issuer().issue(grant(), REQUEST, NOW + timedelta(minutes=5))


@responses.activate
def test_requests_carry_the_timeout_and_the_ca_bundle(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    responses.get(f"{VAULT}/v1/database/creds/orders-reader", json=creds_body())

    config = settings(ca_cert=str(ca), timeout_seconds=3)
    issuer(config).issue(grant(), REQUEST, NOW + timedelta(minutes=5))

    recorded: Any = responses.calls[0].request  # responses keeps the send() arguments
    sent = recorded.req_kwargs
    assert sent["timeout"] == 3
    assert sent["verify"] == str(ca)


def test_an_unreadable_ca_cert_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "missing-ca.pem"
    config = VaultSettings.model_validate(
        {"url": "https://vault.invalid:8200", "token_env": "VAULT_TOKEN", "ca_cert": str(missing)}
    )

    with pytest.raises(IssuerUnavailable, match=r"ca_cert .* cannot be read"):
        issuer(config).check()
