"""The aws_sts issuer against moto's STS (through boto3, as in production): the AssumeRole call
it makes, the session it hands out, and what it refuses."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core import set_initial_no_auth_action_count
from moto.sts.models import sts_backends
from pydantic import ValidationError

from core.issuers.aws_sts import (
    AwsStsGrant,
    AwsStsIssuer,
    AwsStsSettings,
    AwsStsType,
    _default_client,
)
from core.issuers.base import BuildContext, IssueRequest, IssuerUnavailable

ACCOUNT = "123456789012"  # moto's default account
ROLE = f"arn:aws:iam::{ACCOUNT}:role/agent-ops"
REQUEST = IssueRequest(
    request_id="req_0123456789abcdef0123456789abcdef",
    agent="agent:deploy-bot",
    action="s3.read",
    target="reports",
    environment="prod",
    args_digest="sha256:abc",
)
OWN_SECRET_KEY = "stepups-own-secret-access-key"
OWN_SESSION_TOKEN = "stepups-own-session-token"
NOW = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[None]:
    """Fake credentials for boto3's default chain, and no real AWS config read."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", OWN_SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", OWN_SESSION_TOKEN)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    with mock_aws():
        yield


def settings(**changes: Any) -> AwsStsSettings:
    return AwsStsSettings.model_validate({"role_arn": ROLE, "region": "eu-west-1", **changes})


def grant(**changes: Any) -> AwsStsGrant:
    return AwsStsGrant.model_validate(
        {
            "actions": ["s3:GetObject"],
            "resources": ["arn:aws:s3:::reports/prod/*"],
            **changes,
        }
    )


class Recorder:
    """A client factory that builds the real client and records the parameters boto3 sends
    (moto keeps Policy and DurationSeconds, not SourceIdentity or Tags)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, config: AwsStsSettings) -> Any:
        client = _default_client(config)
        client.meta.events.register("provide-client-params.sts.AssumeRole", self._record)
        return client

    def _record(self, params: dict[str, Any], **_: Any) -> None:
        self.calls.append(dict(params))


def issuer(
    recorder: Recorder | None = None, environ: dict[str, str] | None = None, **changes: Any
) -> AwsStsIssuer:
    return AwsStsIssuer(
        "aws-prod",
        settings(**changes),
        environ or {},
        client_factory=recorder or _default_client,
        clock=lambda: datetime.now(UTC),
    )


def test_issue_hands_out_a_session_of_the_role_named_after_the_request() -> None:
    issued = issuer().issue(grant(), REQUEST, datetime.now(UTC) + timedelta(minutes=30))

    assert set(issued.secret) == {
        "access_key_id",
        "secret_access_key",
        "session_token",
        "expiration",
    }
    session = boto3.client(
        "sts",
        region_name="eu-west-1",
        aws_access_key_id=issued.secret["access_key_id"],
        aws_secret_access_key=issued.secret["secret_access_key"],
        aws_session_token=issued.secret["session_token"],
    )
    arn = session.get_caller_identity()["Arn"]
    assert arn == f"arn:aws:sts::{ACCOUNT}:assumed-role/agent-ops/{REQUEST.request_id}"
    assert issued.handle == arn


def test_session_policy_holds_exactly_the_granted_actions_and_resources() -> None:
    recorder = Recorder()
    conditions = {"IpAddress": {"aws:SourceIp": ["10.0.0.0/8"]}}
    chosen = grant(
        actions=["s3:GetObject", "s3:ListBucket"],
        resources=["arn:aws:s3:::reports", "arn:aws:s3:::reports/prod/*"],
        conditions=conditions,
    )

    issuer(recorder).issue(chosen, REQUEST, datetime.now(UTC) + timedelta(minutes=30))

    (sent,) = recorder.calls
    assert json.loads(sent["Policy"]) == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:ListBucket"],
                "Resource": ["arn:aws:s3:::reports", "arn:aws:s3:::reports/prod/*"],
                "Condition": conditions,
            }
        ],
    }
    assert sts_backends[ACCOUNT]["aws"].assumed_roles[-1].policy == sent["Policy"]
    assert sent["RoleArn"] == ROLE
    assert sent["SourceIdentity"] == "agent-deploy-bot"  # ':' is not allowed by STS
    assert sent["Tags"] == [
        {"Key": "stepup:agent", "Value": "agent:deploy-bot"},
        {"Key": "stepup:request_id", "Value": REQUEST.request_id},
    ]
    assert "ExternalId" not in sent
    assert "TransitiveTagKeys" not in sent


def test_a_short_approval_gets_the_aws_minimum_and_reports_the_real_expiry() -> None:
    recorder = Recorder()
    before = datetime.now(UTC)
    asked = before + timedelta(minutes=5)

    issued = issuer(recorder).issue(grant(), REQUEST, asked)

    assert recorder.calls[0]["DurationSeconds"] == 900
    lived = issued.expires_at - before
    assert timedelta(seconds=899) <= lived <= timedelta(seconds=905)  # AWS's, not the asked 5 min
    assert issued.expires_at.tzinfo is not None
    assert issued.expires_at.utcoffset() == timedelta(0)
    assert issued.secret["expiration"] == issued.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_longer_approval_asks_for_its_own_duration() -> None:
    recorder = Recorder()
    fixed = AwsStsIssuer("aws-prod", settings(), {}, client_factory=recorder, clock=lambda: NOW)

    fixed.issue(grant(), REQUEST, NOW + timedelta(minutes=45, seconds=1))

    assert recorder.calls[0]["DurationSeconds"] == 45 * 60 + 1


def test_an_expired_approval_is_not_issued() -> None:
    recorder = Recorder()
    fixed = AwsStsIssuer("aws-prod", settings(), {}, client_factory=recorder, clock=lambda: NOW)

    with pytest.raises(IssuerUnavailable, match="already expired"):
        fixed.issue(grant(), REQUEST, NOW - timedelta(seconds=1))
    assert recorder.calls == []


def test_external_id_comes_from_the_named_environment_variable() -> None:
    recorder = Recorder()
    environ = {"AWS_PROD_EXTERNAL_ID": "ext-4242"}
    chosen = issuer(recorder, environ, external_id_env="AWS_PROD_EXTERNAL_ID")

    chosen.issue(grant(), REQUEST, datetime.now(UTC) + timedelta(minutes=30))

    assert recorder.calls[0]["ExternalId"] == "ext-4242"
    assert sts_backends[ACCOUNT]["aws"].assumed_roles[-1].external_id == "ext-4242"


def test_a_missing_external_id_variable_is_named_and_nothing_is_called() -> None:
    recorder = Recorder()
    chosen = issuer(recorder, {}, external_id_env="AWS_PROD_EXTERNAL_ID")

    with pytest.raises(IssuerUnavailable, match="AWS_PROD_EXTERNAL_ID is unset"):
        chosen.issue(grant(), REQUEST, datetime.now(UTC) + timedelta(minutes=30))
    with pytest.raises(IssuerUnavailable, match="AWS_PROD_EXTERNAL_ID"):
        chosen.check()
    assert recorder.calls == []


def test_session_names_are_cut_to_what_sts_accepts() -> None:
    recorder = Recorder()
    odd = IssueRequest(
        request_id="r" * 80 + "/x",
        agent="a",
        action="s3.read",
        target="reports",
        environment="prod",
        args_digest="d",
    )

    issuer(recorder).issue(grant(), odd, datetime.now(UTC) + timedelta(minutes=30))

    sent = recorder.calls[0]
    assert sent["RoleSessionName"] == "r" * 64
    assert sent["SourceIdentity"] == "a-"  # STS wants 2 characters at least


def test_access_denied_is_unavailable_without_any_secret(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """moto enforcing IAM: a user with no policy may not assume the role."""

    @set_initial_no_auth_action_count(2)
    def run() -> None:
        iam = boto3.client("iam", region_name="eu-west-1")
        iam.create_user(UserName="stepup")
        key = iam.create_access_key(UserName="stepup")["AccessKey"]
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        monkeypatch.delenv("AWS_SESSION_TOKEN")
        caplog.set_level(logging.DEBUG, logger="core.issuers")
        with pytest.raises(IssuerUnavailable) as raised:
            issuer().issue(grant(), REQUEST, datetime.now(UTC) + timedelta(minutes=30))
        message = str(raised.value)
        assert "AssumeRole failed: AccessDenied" in message
        assert key["SecretAccessKey"] not in message
        assert key["SecretAccessKey"] not in caplog.text
        assert raised.value.__cause__ is None

    run()


def test_no_aws_credentials_is_unavailable_and_says_where_they_come_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    with pytest.raises(IssuerUnavailable, match="no AWS credentials"):
        issuer().check()


def test_no_secret_reaches_the_log_even_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    """botocore itself logs response bodies and signed headers at DEBUG."""
    caplog.set_level(logging.DEBUG)

    issued = issuer().issue(grant(), REQUEST, datetime.now(UTC) + timedelta(minutes=30))
    issuer().check()

    assert issued.handle in caplog.text
    assert "botocore" in caplog.text  # botocore did log (hooks, credentials found, ...)
    for secret in (
        issued.secret["secret_access_key"],
        issued.secret["session_token"],
        OWN_SECRET_KEY,
        OWN_SESSION_TOKEN,
    ):
        assert secret not in caplog.text
    assert issued.secret["secret_access_key"] not in repr(issued)


def test_revoke_succeeds_and_says_the_session_lives_on(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="core.issuers")
    handle = f"arn:aws:sts::{ACCOUNT}:assumed-role/agent-ops/{REQUEST.request_id}"

    issuer().revoke(handle)
    issuer().revoke(handle)  # idempotent

    assert "stays valid until its expiry" in caplog.text
    assert handle in caplog.text


def test_check_names_the_identity_and_the_role() -> None:
    said = issuer().check()

    assert said.startswith(f"authenticated as arn:aws:sts::{ACCOUNT}:")
    assert ROLE in said


def test_build_and_describe() -> None:
    built = AwsStsType.build("aws-prod", settings(), BuildContext(environ={}))

    assert built.name == "aws-prod"
    assert built.type == "aws_sts"
    assert built.min_ttl == timedelta(seconds=900)
    assert AwsStsType.min_ttl == timedelta(seconds=900)
    described = AwsStsType.describe(
        "aws-prod", settings(), grant(resources=["arn:aws:s3:::bucket/*"])
    )
    assert described == "AWS STS session in role agent-ops (s3:GetObject on arn:aws:s3:::bucket/*)"


@pytest.mark.parametrize(
    "role_arn",
    [
        "arn:aws:iam::12345678901:role/agent-ops",  # 11 digits
        "arn:aws:iam::123456789012:user/agent-ops",  # a user, not a role
        "arn:aws:s3:::agent-ops",
        "arn:aws:iam::123456789012:role/agent ops",
        'arn:aws:iam::123456789012:role/x"',
        "arn:aws:iam::123456789012:role/",
    ],
)
def test_settings_refuse_what_is_not_a_role_arn(role_arn: str) -> None:
    with pytest.raises(ValidationError, match="role_arn"):
        settings(role_arn=role_arn)


def test_settings_accept_other_partitions_and_refuse_unknown_keys_and_plain_http() -> None:
    assert settings(role_arn="arn:aws-us-gov:iam::123456789012:role/a/b").role_name == "b"
    with pytest.raises(ValidationError, match="secret_access_key"):
        settings(secret_access_key="inline")
    with pytest.raises(ValidationError, match="endpoint_url"):
        settings(endpoint_url="http://sts.example.com")
    assert settings(endpoint_url="http://127.0.0.1:5000").endpoint_url == "http://127.0.0.1:5000"
    with pytest.raises(ValidationError, match="external_id_env"):
        settings(external_id_env="lower-case")


@pytest.mark.parametrize(
    "value",
    [
        "*",
        "reports*",
        "a?c",
        'x"],"Resource":["*',
        "bucket:extra",
        "a,b",
        "a b",
        "../other",
        "x" * 129,
        "",
    ],
)
def test_safe_value_refuses_what_could_widen_or_break_the_policy(value: str) -> None:
    assert AwsStsType.safe_value.fullmatch(value) is None


@pytest.mark.parametrize("value", ["reports", "prod/2026-12", "user@example.com", "a.b_c+d=e"])
def test_safe_value_accepts_plain_names(value: str) -> None:
    assert AwsStsType.safe_value.fullmatch(value) is not None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("actions", []),
        ("actions", ["*"]),
        ("actions", ["s3:Get Object"]),
        ("actions", ['s3:GetObject"']),
        ("resources", []),
        ("resources", ["*"]),
        ("resources", ["bucket/*"]),
        ("resources", ['arn:aws:s3:::reports/x","arn:aws:s3:::*']),
        ("resources", ["arn:aws:s3:::reports/${aws:username}"]),
        ("conditions", {"StringEquals OR 1": {"aws:SourceIp": "x"}}),
        ("conditions", {"StringEquals": {"no key": "x"}}),
    ],
)
def test_grant_refuses_malformed_actions_resources_and_conditions(field: str, value: Any) -> None:
    with pytest.raises(ValidationError, match=field):
        grant(**{field: value})


def test_grant_refuses_a_policy_aws_would_refuse_for_size() -> None:
    many = [f"arn:aws:s3:::reports/{index:04d}/*" for index in range(100)]
    with pytest.raises(ValidationError, match="2048"):
        grant(resources=many)


def test_the_policy_is_data_even_for_odd_condition_values() -> None:
    chosen = grant(conditions={"StringEquals": {"s3:prefix": 'a"b'}})

    document = json.loads(chosen.session_policy())

    assert document["Statement"][0]["Condition"] == {"StringEquals": {"s3:prefix": 'a"b'}}
    assert document["Statement"][0]["Resource"] == ["arn:aws:s3:::reports/prod/*"]


def test_an_unreachable_endpoint_is_unavailable() -> None:
    closed = issuer(endpoint_url="http://127.0.0.1:9", timeout_seconds=1)

    with pytest.raises(IssuerUnavailable, match="STS did not answer"):
        closed.issue(grant(), REQUEST, datetime.now(UTC) + timedelta(minutes=30))


def test_a_malformed_external_id_is_named_not_quoted() -> None:
    recorder = Recorder()
    environ = {"AWS_PROD_EXTERNAL_ID": "two words"}
    chosen = issuer(recorder, environ, external_id_env="AWS_PROD_EXTERNAL_ID")

    with pytest.raises(IssuerUnavailable, match="AWS_PROD_EXTERNAL_ID is not an external id") as e:
        chosen.issue(grant(), REQUEST, datetime.now(UTC) + timedelta(minutes=30))

    assert "two words" not in str(e.value)
    assert recorder.calls == []


def test_describe_mentions_conditions() -> None:
    chosen = grant(conditions={"Bool": {"aws:SecureTransport": "true"}})

    described = AwsStsType.describe("aws-prod", settings(), chosen)

    assert described.endswith("on arn:aws:s3:::reports/prod/*, with conditions)")
