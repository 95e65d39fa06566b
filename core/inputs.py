"""What comes in: the submit body as a validated model (shared by the HTTP API and the CLI)."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError

from core import names
from core.errors import ValidationFailed
from core.model import ActionClass, Intent

MAX_PARAMETER_DEPTH = 32
MAX_BIGINT = 2**63 - 1  # the BIGINT column of both databases
MIN_INT64 = -(2**63)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL, C1
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # all but \t and \n


def _refuse(pattern: re.Pattern[str]) -> BeforeValidator:
    def check(value: Any) -> Any:
        if isinstance(value, str) and (found := pattern.search(value)):
            raise ValueError(f"control character U+{ord(found.group()):04X} is not allowed")
        return value

    return BeforeValidator(check)


# Names and ids: no control character at all (a NUL is refused by PostgreSQL, an escape
# sequence reaches an admin's terminal). Free text: none but newline and tab.
Identifier = Annotated[str, _refuse(_CONTROL)]
FreeText = Annotated[str, _refuse(_CONTROL_IN_TEXT)]


def _canonical(value: Any) -> Any:
    if not isinstance(value, str):
        return value  # the str check that follows names the type
    try:
        return names.canonical(value)
    except ValueError as exc:
        raise PydanticCustomError("unsafe_name", str(exc)) from None


# What the policy decides on: NFKC, then only the safe set of core/names.py (no look-alikes);
# the length limits apply to the canonical form, which is what is stored.
Name = Annotated[str, BeforeValidator(_canonical)]
_NAME_RULE = "Unicode NFKC-normalised, then only ASCII letters, digits and . _ - : / @ + ="


def _check_parameters(value: Any) -> None:
    """One walk: nested at most MAX_PARAMETER_DEPTH levels, every integer within 64 bits (the
    API's parser already refused longer ones, NaN and Infinity; this holds for the CLI too)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif isinstance(item, list):
            pass
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int):
            if not MIN_INT64 <= item <= MAX_BIGINT:
                raise ValueError(f"integer {item} is beyond the 64-bit range (±2**63)")
            continue
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError(f"{item} is not a JSON number")
            continue
        else:
            continue
        if depth == MAX_PARAMETER_DEPTH:
            raise ValueError(f"nested deeper than {MAX_PARAMETER_DEPTH} levels")
        stack.extend((v, depth + 1) for v in item)


class SubmitBody(BaseModel):
    """An agent's intent. Unknown fields are refused; the agent comes from its key."""

    model_config = ConfigDict(extra="forbid")

    action: Name = Field(
        min_length=1, max_length=256, examples=["db.migrate"], description=_NAME_RULE
    )
    action_class: ActionClass
    target: Name = Field(
        min_length=1, max_length=512, examples=["orders-db"], description=_NAME_RULE
    )
    environment: Name = Field(
        min_length=1, max_length=64, examples=["production"], description=_NAME_RULE
    )
    justification: FreeText = Field(min_length=1, max_length=4000)
    parameters: dict[str, Any] = Field(default_factory=dict)
    requested_ttl_seconds: int | None = Field(default=None, ge=1, le=86400)
    data_volume_bytes: int | None = Field(default=None, ge=0, le=MAX_BIGINT)
    on_behalf_of: Identifier | None = Field(
        default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$"
    )
    parent_request_id: Identifier | None = Field(default=None, max_length=40)
    break_glass: bool = False
    # Checked against the agent's callback allow-list at submit (docs/callbacks.md).
    callback_url: Identifier | None = Field(default=None, min_length=1, max_length=2048)
    # Not part of the intent: how the agent wants the answer (docs/api.md, one round trip).
    claim: bool = Field(
        default=False,
        description="When the policy pre-authorises the request, claim its credential in this "
        "answer (`credential` then carries the token, once); pending or denied: as without",
    )

    @field_validator("parameters")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_parameters(value)
        return value

    def to_intent(self, agent: str) -> Intent:
        return Intent(
            agent=agent,
            action=self.action,
            action_class=self.action_class,
            target=self.target,
            environment=self.environment,
            justification=self.justification,
            parameters=self.parameters,
            requested_ttl_seconds=self.requested_ttl_seconds,
            data_volume_bytes=self.data_volume_bytes,
            on_behalf_of=self.on_behalf_of,
            parent_request_id=self.parent_request_id,
            break_glass=self.break_glass,
            callback_url=self.callback_url,
        )


def intent_from_mapping(fields: dict[str, Any], *, agent: str) -> Intent:
    """Validate a plain mapping (and the agent id, canonical as a registered one is);
    ValidationFailed names each bad field."""
    try:
        agent = names.canonical(agent)
    except ValueError as exc:
        raise ValidationFailed(f"agent: {exc}") from None
    try:
        return SubmitBody.model_validate(fields).to_intent(agent)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors(include_input=False)
        )
        raise ValidationFailed(problems) from None
