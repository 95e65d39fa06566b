"""The policy file as written: pydantic models of the YAML, shape only.

Every model forbids unknown keys, so a typo such as ``aprovers`` is refused rather than
silently ignored. Cross references (groups, channels, quorum sizes) are checked when the
file is compiled, in ``build.py``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from core.model import Outcome, Tier
from core.policy.fields import (
    WEEKDAYS,
    Classes,
    Duration,
    Email,
    Globs,
    GroupId,
    GroupNames,
    Name,
    NotifyTarget,
    Size,
    SlackChannelId,
    SlackUsergroupId,
    SlackUserId,
    Text,
    TimeOfDay,
    TimeZoneName,
    Values,
    Weekday,
    distinct_groups,
    empty_list,
    empty_mapping,
)

SUPPORTED_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DefaultsSpec(_Strict):
    approval_timeout: Duration = timedelta(minutes=30)
    claim_window: Duration = timedelta(minutes=5)
    max_ttl: Duration = timedelta(minutes=15)
    timezone: TimeZoneName = "UTC"


class ApproverGroupSpec(_Strict):
    slack_users: tuple[SlackUserId, ...] = ()
    emails: tuple[Email, ...] = ()
    slack_usergroup: SlackUsergroupId | None = None

    @model_validator(mode="after")
    def _has_members(self) -> ApproverGroupSpec:
        if not (self.slack_users or self.emails or self.slack_usergroup):
            raise ValueError("an approver group needs slack_users, emails or a slack_usergroup")
        return self


class VolumeSpec(_Strict):
    """A threshold on ``data_volume_bytes``; several bounds form a range."""

    gt: Size | None = None
    gte: Size | None = None
    lt: Size | None = None
    lte: Size | None = None

    @model_validator(mode="after")
    def _coherent(self) -> VolumeSpec:
        if self.gt is None and self.gte is None and self.lt is None and self.lte is None:
            raise ValueError("give at least one of gt, gte, lt, lte")
        if self.gt is not None and self.gte is not None:
            raise ValueError("give gt or gte, not both")
        if self.lt is not None and self.lte is not None:
            raise ValueError("give lt or lte, not both")
        low = self.gt + 1 if self.gt is not None else self.gte
        high = self.lt - 1 if self.lt is not None else self.lte
        if low is not None and high is not None and low > high:
            raise ValueError("the range is empty: no volume can satisfy it")
        return self


class WindowSpec(_Strict):
    """Local hours on some days; ``end`` before ``start`` means the window runs overnight."""

    days: tuple[Weekday, ...] = WEEKDAYS
    start: TimeOfDay
    end: TimeOfDay
    timezone: TimeZoneName | None = None

    @field_validator("days", mode="before")
    @classmethod
    def _days_list(cls, value: object) -> object:
        if isinstance(value, list) and not value:
            raise ValueError("an empty list of days never matches: remove the key for every day")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> WindowSpec:
        if self.start == self.end:
            raise ValueError("start and end are equal: the window would be empty")
        return self


class MatchSpec(_Strict):
    action: Globs | None = None
    target: Globs | None = None
    agent: Globs | None = None
    action_class: Classes | None = None
    environment: Values | None = None
    data_volume_bytes: VolumeSpec | None = None
    within_hours: WindowSpec | None = None
    outside_hours: WindowSpec | None = None
    break_glass: StrictBool | None = None

    _written_order: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _remember_order(cls, data: Any, handler: ModelWrapValidatorHandler[MatchSpec]) -> MatchSpec:
        spec = handler(data)
        if isinstance(data, dict):
            spec._written_order = tuple(key for key in data if key in cls.model_fields)
        return spec

    def keys_in_order(self) -> tuple[str, ...]:
        """The keys given, as written in the file: ``explain`` reports the first that fails."""
        given = [key for key in self._written_order if getattr(self, key) is not None]
        rest = [key for key in type(self).model_fields if key not in given]
        return tuple(given + [key for key in rest if getattr(self, key) is not None])


class RuleSpec(_Strict):
    name: Name
    match: MatchSpec
    decision: Outcome
    reason: Text | None = None
    tier: Tier | None = None
    # allow and approve
    max_ttl: Duration | None = None
    claim_window: Duration | None = None
    # approve only (build.py refuses them elsewhere)
    approvers: GroupNames | None = None
    quorum: Annotated[StrictInt, Field(ge=1)] | None = None
    channel: Name | None = None
    notify: tuple[NotifyTarget, ...] | None = Field(default=None, min_length=1)
    approval_timeout: Duration | None = None
    step_up: StrictBool | None = None
    escalate_after: Duration | None = None
    escalate_to: GroupId | None = None
    break_glass: StrictBool | None = None
    break_glass_ttl: Duration | None = None
    # allow and approve: the credential (docs/issuers.md); without issuer, the built-in JWT
    issuer: Name | None = None
    grant: dict[str, Any] | None = None
    # allow and approve: a claim must carry a DPoP proof (docs/identity.md)
    require_dpop: StrictBool | None = None
    # allow and approve: the agent of an active request may delegate part of it
    # (docs/delegation.md), to chains of at most max_depth delegations (default 3)
    delegable: StrictBool | None = None
    max_depth: Annotated[StrictInt, Field(ge=1, le=10)] | None = None


APPROVE_ONLY_FIELDS: tuple[str, ...] = (
    "approvers",
    "quorum",
    "channel",
    "notify",
    "approval_timeout",
    "step_up",
    "escalate_after",
    "escalate_to",
    "break_glass",
    "break_glass_ttl",
)
GRANTING_FIELDS: tuple[str, ...] = (
    "max_ttl",
    "claim_window",
    "issuer",
    "grant",
    "require_dpop",
    "delegable",
    "max_depth",
)


class PolicySpec(_Strict):
    version: StrictInt
    defaults: DefaultsSpec = DefaultsSpec()
    approver_groups: Annotated[
        dict[GroupId, ApproverGroupSpec], BeforeValidator(distinct_groups)
    ] = Field(default_factory=dict)
    channels: Annotated[dict[Name, SlackChannelId], BeforeValidator(empty_mapping)] = Field(
        default_factory=dict
    )
    issuers: Annotated[dict[Name, dict[str, Any]], BeforeValidator(empty_mapping)] = Field(
        default_factory=dict
    )
    rules: Annotated[list[RuleSpec], BeforeValidator(empty_list)] = Field(default_factory=list)

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != SUPPORTED_VERSION:
            raise ValueError(
                f"unsupported policy version {value}: this build reads version {SUPPORTED_VERSION}"
            )
        return value


def known_keys() -> frozenset[str]:
    """Every key any model accepts: used to suggest a fix for an unknown key."""
    models: tuple[type[BaseModel], ...] = (
        DefaultsSpec,
        ApproverGroupSpec,
        VolumeSpec,
        WindowSpec,
        MatchSpec,
        RuleSpec,
        PolicySpec,
    )
    return frozenset(name for model in models for name in model.model_fields)
