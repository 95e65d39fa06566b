"""The ``aws_sts`` issuer: an STS ``AssumeRole`` session per approval (docs/issuers/aws_sts.md).

The session policy built from the grant narrows the role to the approved actions and resources;
``SourceIdentity`` and session tags carry the agent and the request id into every CloudTrail
event. STS cannot end a session early: ``revoke`` can only say so.
"""

from __future__ import annotations

import builtins
import json
import logging
import math
import re
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from core.issuers.base import (
    BuildContext,
    Grant,
    Issued,
    IssueRequest,
    IssuerSettings,
    IssuerUnavailable,
)
from core.issuers.http_broker import ENV_NAME, excerpt, require_https_or_loopback

log = logging.getLogger(__name__)

MIN_DURATION_SECONDS = 900  # AWS's minimum for AssumeRole
MAX_DURATION_SECONDS = 43_200  # AWS's maximum (the role's MaxSessionDuration may be lower)
MAX_POLICY_CHARS = 2048  # AWS's limit on a session policy's plain text

ROLE_ARN = re.compile(r"arn:aws(?:-[a-z]+)*:iam::\d{12}:role/[A-Za-z0-9_+=,.@/-]{1,512}")
REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d{1,2}")
ACTION = re.compile(r"[a-z0-9-]+:[A-Za-z0-9*]+")
RESOURCE = re.compile(
    r"arn:aws(?:-[a-z]+)*:[a-z0-9-]+:(?:[a-z0-9-]*|\*):(?:\d{12}|aws|\*)?:"
    r"[A-Za-z0-9_+=,.@/:*?-]{1,1024}"
)
CONDITION_OPERATOR = re.compile(r"(?:ForAllValues:|ForAnyValue:)?[A-Za-z]{2,64}")
CONDITION_KEY = re.compile(r"[A-Za-z0-9-]+:[A-Za-z0-9_./:-]{1,128}")
EXTERNAL_ID = re.compile(r"[A-Za-z0-9_+=,.@:/-]{2,1224}")
_SESSION_UNSAFE = re.compile(r"[^A-Za-z0-9_+=,.@-]")

ConditionValue = str | bool | int | list[str]


class AwsStsSettings(IssuerSettings):
    """``issuers.NAME`` of ``type: aws_sts``. stepup's own AWS credentials come from boto3's
    default chain (environment, shared config, instance profile, IRSA), never the policy."""

    role_arn: str
    region: str
    external_id_env: str | None = None
    endpoint_url: str | None = None
    timeout_seconds: float = Field(default=10, gt=0, le=120)

    @field_validator("role_arn")
    @classmethod
    def _role_arn(cls, value: str) -> str:
        if not ROLE_ARN.fullmatch(value):
            raise ValueError("must be an IAM role ARN: arn:aws:iam::123456789012:role/NAME")
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not REGION.fullmatch(value):
            raise ValueError("must be an AWS region such as eu-west-1")
        return value

    @field_validator("external_id_env")
    @classmethod
    def _external_id_env(cls, value: str | None) -> str | None:
        if value is not None and not ENV_NAME.fullmatch(value):
            raise ValueError("must be an environment variable name (A-Z, 0-9, _)")
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else require_https_or_loopback(value)

    @property
    def role_name(self) -> str:
        return self.role_arn.rsplit("/", 1)[-1]


class AwsStsGrant(Grant):
    """A rule's ``grant:``: the API actions and resource ARNs of the session policy."""

    actions: tuple[str, ...] = Field(min_length=1, max_length=100)
    resources: tuple[str, ...] = Field(min_length=1, max_length=100)
    conditions: dict[str, dict[str, ConditionValue]] | None = None

    @field_validator("actions")
    @classmethod
    def _actions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for action in value:
            if not ACTION.fullmatch(action):
                raise ValueError(f"{action!r} is not an API action such as s3:GetObject")
        return value

    @field_validator("resources")
    @classmethod
    def _resources(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for resource in value:
            if not RESOURCE.fullmatch(resource):
                raise ValueError(f"{resource!r} is not a resource ARN such as arn:aws:s3:::bucket")
        return value

    @field_validator("conditions")
    @classmethod
    def _conditions(
        cls, value: dict[str, dict[str, ConditionValue]] | None
    ) -> dict[str, dict[str, ConditionValue]] | None:
        for operator, keys in (value or {}).items():
            if not CONDITION_OPERATOR.fullmatch(operator):
                raise ValueError(f"{operator!r} is not a condition operator such as StringEquals")
            for key in keys:
                if not CONDITION_KEY.fullmatch(key):
                    raise ValueError(f"{key!r} is not a condition key such as aws:SourceIp")
        return value

    @model_validator(mode="after")
    def _fits(self) -> AwsStsGrant:
        size = len(self.session_policy())
        if size > MAX_POLICY_CHARS:
            raise ValueError(
                f"the session policy is {size} characters; AWS accepts {MAX_POLICY_CHARS}"
            )
        return self

    def session_policy(self) -> str:
        """The inline session policy, built as data (json.dumps), never by string pasting."""
        statement: dict[str, Any] = {
            "Effect": "Allow",
            "Action": list(self.actions),
            "Resource": list(self.resources),
        }
        if self.conditions:
            statement["Condition"] = self.conditions
        document = {"Version": "2012-10-17", "Statement": [statement]}
        return json.dumps(document, separators=(",", ":"))


def session_name(value: str) -> str:
    """``value`` in the form STS accepts for RoleSessionName and SourceIdentity:
    2 to 64 of ``A-Z a-z 0-9 _ + = , . @ -``."""
    cleaned = _SESSION_UNSAFE.sub("-", value)[:64]
    return cleaned if len(cleaned) >= 2 else (cleaned + "--")[:2]


def tag_value(value: str) -> str:
    """A session tag value: at most 256 of letters, digits, spaces and ``_ . : / = + - @``."""
    return re.sub(r"[^A-Za-z0-9 _.:/=+@-]", "_", value)[:256]


class _NoWireDebug(logging.Filter):
    """botocore logs, at DEBUG, every request and its signing input (with stepup's own session
    token) and every response body (for AssumeRole: the issued secret key and token). Dropped,
    at whatever level the service runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


_WIRE_LOGGERS = ("botocore.auth", "botocore.endpoint", "botocore.parsers")


def _silence_wire_debug() -> None:
    for name in _WIRE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, _NoWireDebug) for existing in logger.filters):
            logger.addFilter(_NoWireDebug())


def _default_client(settings: AwsStsSettings) -> Any:
    import boto3
    from botocore.config import Config

    _silence_wire_debug()

    config = Config(
        connect_timeout=settings.timeout_seconds,
        read_timeout=settings.timeout_seconds,
        retries={"max_attempts": 3, "mode": "standard"},
    )
    return boto3.session.Session().client(
        "sts", region_name=settings.region, endpoint_url=settings.endpoint_url, config=config
    )


def _unavailable(name: str, operation: str, exc: Exception) -> IssuerUnavailable:
    """A message safe to log: AWS's error code and (capped) message, or what kind of failure;
    never request parameters (ParamValidationError would quote the ExternalId)."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "error")
        detail = excerpt(str(error.get("Message", "")))
        return IssuerUnavailable(f"issuer {name}: {operation} failed: {code}: {detail}")
    if isinstance(exc, NoCredentialsError):
        return IssuerUnavailable(
            f"issuer {name}: no AWS credentials for stepup (boto3's chain: environment, "
            "shared config, instance profile, IRSA)"
        )
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError):
        return IssuerUnavailable(f"issuer {name}: {operation}: STS did not answer in time")
    return IssuerUnavailable(f"issuer {name}: {operation} failed: {type(exc).__name__}")


class AwsStsIssuer:
    """One configured role."""

    def __init__(
        self,
        name: str,
        settings: AwsStsSettings,
        environ: Mapping[str, str],
        *,
        client_factory: Callable[[AwsStsSettings], Any] = _default_client,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.name = name
        self.type = AwsStsType.type
        self._settings = settings
        self._environ = environ
        self._client_factory = client_factory
        self._clock = clock
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def min_ttl(self) -> timedelta:
        return AwsStsType.min_ttl

    def issue(self, grant: Grant, request: IssueRequest, expires_at: datetime) -> Issued:
        if not isinstance(grant, AwsStsGrant):
            raise TypeError(f"issuer {self.name} takes an aws_sts grant, not {type(grant)}")
        params = self._assume_role_params(grant, request, expires_at)
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = self._sts().assume_role(**params)
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable(self.name, "AssumeRole", exc) from None
        credentials = answer["Credentials"]
        expiry = credentials["Expiration"].astimezone(UTC)
        handle = str(answer["AssumedRoleUser"]["Arn"])
        log.info(
            "issuer %s: assumed %s for request %s until %s",
            self.name,
            handle,
            request.request_id,
            expiry.isoformat(),
        )
        secret = {
            "access_key_id": credentials["AccessKeyId"],
            "secret_access_key": credentials["SecretAccessKey"],
            "session_token": credentials["SessionToken"],
            "expiration": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        return Issued(secret=secret, handle=handle, expires_at=expiry)

    def revoke(self, handle: str) -> None:
        """STS has no call that ends a session: it stays valid until its expiry."""
        log.info(
            "issuer %s: STS session %s cannot be cut short; it stays valid until its expiry",
            self.name,
            excerpt(handle),
        )

    def check(self) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        self._external_id()
        try:
            identity = self._sts().get_caller_identity()
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable(self.name, "GetCallerIdentity", exc) from None
        return (
            f"authenticated as {identity['Arn']}; role {self._settings.role_arn} "
            "(AssumeRole itself is tried at the first claim)"
        )

    def _assume_role_params(
        self, grant: AwsStsGrant, request: IssueRequest, expires_at: datetime
    ) -> dict[str, Any]:
        remaining = math.ceil((expires_at - self._clock()).total_seconds())
        if remaining <= 0:
            raise IssuerUnavailable(f"issuer {self.name}: the approval has already expired")
        params: dict[str, Any] = {
            "RoleArn": self._settings.role_arn,
            "RoleSessionName": session_name(request.request_id),
            "DurationSeconds": min(max(MIN_DURATION_SECONDS, remaining), MAX_DURATION_SECONDS),
            "Policy": grant.session_policy(),
            "SourceIdentity": session_name(request.agent),
            "Tags": [
                {"Key": "stepup:agent", "Value": tag_value(request.agent)},
                {"Key": "stepup:request_id", "Value": tag_value(request.request_id)},
            ],
        }
        external_id = self._external_id()
        if external_id is not None:
            params["ExternalId"] = external_id
        return params

    def _external_id(self) -> str | None:
        env = self._settings.external_id_env
        if env is None:
            return None
        value = self._environ.get(env)
        if not value:
            raise IssuerUnavailable(f"issuer {self.name}: environment variable {env} is unset")
        if not EXTERNAL_ID.fullmatch(value):
            raise IssuerUnavailable(
                f"issuer {self.name}: environment variable {env} is not an external id "
                "(2 to 1224 of A-Z a-z 0-9 _ + = , . @ : / -)"
            )
        return value

    def _sts(self) -> Any:
        """One client per issuer, made at first use (boto3 clients are thread-safe; making
        one is not)."""
        with self._lock:
            if self._client is None:
                self._client = self._client_factory(self._settings)
            return self._client


class AwsStsType:
    """``type: aws_sts``."""

    type: ClassVar[str] = "aws_sts"
    settings_model: ClassVar[builtins.type[IssuerSettings]] = AwsStsSettings
    grant_model: ClassVar[builtins.type[Grant]] = AwsStsGrant
    # No * or ? (a value cannot widen an ARN or action), no : (cannot add ARN fields), no
    # quotes, commas or spaces, no "..".
    safe_value: ClassVar[re.Pattern[str]] = re.compile(r"(?!.*\.\.)[A-Za-z0-9._+=@/-]{1,128}")
    safe_value_text: ClassVar[str] = (
        "1 to 128 ASCII letters, digits and . _ + = @ / - without '..' (no wildcards)"
    )
    min_ttl: ClassVar[timedelta] = timedelta(seconds=MIN_DURATION_SECONDS)

    @classmethod
    def build(cls, name: str, settings: IssuerSettings, context: BuildContext) -> AwsStsIssuer:
        if not isinstance(settings, AwsStsSettings):
            raise TypeError(f"issuer {name}: settings are not aws_sts settings")
        return AwsStsIssuer(name, settings, context.environ)

    @classmethod
    def describe(cls, name: str, settings: IssuerSettings, grant: Grant) -> str:
        role = settings.role_name if isinstance(settings, AwsStsSettings) else name
        if not isinstance(grant, AwsStsGrant):
            return f"AWS STS session in role {role}"
        scope = f"{', '.join(grant.actions)} on {', '.join(grant.resources)}"
        if grant.conditions:
            scope += ", with conditions"
        return f"AWS STS session in role {role} ({scope})"
