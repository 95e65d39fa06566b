"""The policy file as written: pydantic models of the YAML, shape only.

Every model forbids unknown keys, so a typo such as ``aprovers`` is refused rather than
silently ignored. Cross references (groups, channels, quorum sizes) are checked when the
file is compiled, in ``build.py``.
"""

from __future__ import annotations

import re
from datetime import time, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    StrictBool,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)

from core.durations import parse_duration, parse_size
from core.model import ActionClass, Outcome, Tier

SUPPORTED_VERSION = 1

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _one_or_many(value: object) -> object:
    """A lone value stands for a one-item list; anything but a value or a list is refused."""
    if isinstance(value, str | ActionClass):
        return (value,)
    if isinstance(value, list | tuple):
        if not value:
            raise ValueError("an empty list matches nothing: remove the key to match anything")
        return value
    raise ValueError(f"expected a string or a list of strings, got {_type_name(value)}")


def _duration(value: object) -> timedelta:
    if not isinstance(value, str | int):
        raise ValueError(f"expected a duration such as 30s, 10m or 2h, got {_type_name(value)}")
    return parse_duration(value)


def _size(value: object) -> int:
    if not isinstance(value, str | int):
        raise ValueError(f"expected a size such as 500MB or 2GiB, got {_type_name(value)}")
    return parse_size(value)


def _time_of_day(value: object) -> time:
    match = _HHMM.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f'expected a time of day as "HH:MM" (24h), got {value!r}')
    return time(int(match.group(1)), int(match.group(2)))


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from exc
    return value


def _lower(value: str) -> str:
    return value.lower()


Text = Annotated[str, StringConstraints(strict=True, min_length=1)]
Name = Annotated[
    str, StringConstraints(strict=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", max_length=100)
]
Duration = Annotated[timedelta, BeforeValidator(_duration)]
Size = Annotated[int, BeforeValidator(_size)]
TimeOfDay = Annotated[time, BeforeValidator(_time_of_day)]
TimeZoneName = Annotated[Text, AfterValidator(_timezone)]
Globs = Annotated[tuple[Text, ...], BeforeValidator(_one_or_many)]
Values = Annotated[tuple[Text, ...], BeforeValidator(_one_or_many)]
Classes = Annotated[tuple[ActionClass, ...], BeforeValidator(_one_or_many)]
GroupNames = Annotated[tuple[Name, ...], BeforeValidator(_one_or_many)]
SlackUserId = Annotated[str, StringConstraints(strict=True, pattern=r"^[UW][A-Z0-9]{2,}$")]
SlackUsergroupId = Annotated[str, StringConstraints(strict=True, pattern=r"^S[A-Z0-9]{2,}$")]
SlackChannelId = Annotated[str, StringConstraints(strict=True, pattern=r"^[CG][A-Z0-9]{2,}$")]
Email = Annotated[
    str,
    StringConstraints(strict=True, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"),
    AfterValidator(_lower),
]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
NotifyTarget = Literal["channel", "dm"]


def _empty_mapping(value: object) -> object:
    """``approver_groups:`` with nothing under it reads as null in YAML: treat it as empty."""
    return {} if value is None else value


def _empty_list(value: object) -> object:
    return [] if value is None else value


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
    escalate_to: Name | None = None
    break_glass: StrictBool | None = None
    break_glass_ttl: Duration | None = None


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
GRANTING_FIELDS: tuple[str, ...] = ("max_ttl", "claim_window")


class PolicySpec(_Strict):
    version: StrictInt
    defaults: DefaultsSpec = DefaultsSpec()
    approver_groups: Annotated[dict[Name, ApproverGroupSpec], BeforeValidator(_empty_mapping)] = (
        Field(default_factory=dict)
    )
    channels: Annotated[dict[Name, SlackChannelId], BeforeValidator(_empty_mapping)] = Field(
        default_factory=dict
    )
    rules: Annotated[list[RuleSpec], BeforeValidator(_empty_list)] = Field(default_factory=list)

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
