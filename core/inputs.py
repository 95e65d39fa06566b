"""What comes in: the submit body as a validated model (shared by the HTTP API and the CLI)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.canonical import json_depth
from core.errors import ValidationFailed
from core.model import ActionClass, Intent

MAX_PARAMETER_DEPTH = 32
MAX_BIGINT = 2**63 - 1  # the BIGINT column of both databases


class SubmitBody(BaseModel):
    """An agent's intent. Unknown fields are refused; the agent comes from its key."""

    model_config = ConfigDict(extra="forbid")

    action: str = Field(min_length=1, max_length=256, examples=["db.migrate"])
    action_class: ActionClass
    target: str = Field(min_length=1, max_length=512, examples=["orders-db"])
    environment: str = Field(min_length=1, max_length=64, examples=["production"])
    justification: str = Field(min_length=1, max_length=4000)
    parameters: dict[str, Any] = Field(default_factory=dict)
    requested_ttl_seconds: int | None = Field(default=None, ge=1, le=86400)
    data_volume_bytes: int | None = Field(default=None, ge=0, le=MAX_BIGINT)
    on_behalf_of: str | None = Field(default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    parent_request_id: str | None = Field(default=None, max_length=40)
    break_glass: bool = False

    @field_validator("parameters")
    @classmethod
    def _bounded_depth(cls, value: dict[str, Any]) -> dict[str, Any]:
        if json_depth(value) > MAX_PARAMETER_DEPTH:
            raise ValueError(f"nested deeper than {MAX_PARAMETER_DEPTH} levels")
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
        )


def intent_from_mapping(fields: dict[str, Any], *, agent: str) -> Intent:
    """Validate a plain mapping; ValidationFailed names each bad field."""
    try:
        return SubmitBody.model_validate(fields).to_intent(agent)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors(include_input=False)
        )
        raise ValidationFailed(problems) from None
