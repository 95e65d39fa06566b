"""``stepup policy check`` and ``stepup policy explain``: a policy file, read without a service."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from bot.cli.common import fail
from bot.clock import utc_now
from core.errors import StepupError

policy_app = typer.Typer(help="Check and explain policy files.", no_args_is_help=True)


@policy_app.command("check")
def policy_check(file: Annotated[Path, typer.Argument(help="Policy YAML file")]) -> None:
    """Validate a policy file; exit 1 with the rule and field at fault."""
    from core.policy import load_policy

    try:
        policy = load_policy(file)
    except (StepupError, OSError) as exc:
        detail = exc.detail if isinstance(exc, StepupError) else str(exc)
        # Read errors already start with the path; say it once.
        raise fail(detail if detail.startswith(f"{file}:") else f"{file}: {detail}") from None
    typer.echo(
        f"{file}: OK — {len(policy.rule_names)} rules, "
        f"{len(policy.groups)} approver groups, {policy.digest}"
    )


def _read_intent(path: Path) -> tuple[dict[str, Any], datetime]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ValueError("the request file must hold a mapping of fields")
    when = raw.pop("now", None)
    now = datetime.fromisoformat(str(when).replace("Z", "+00:00")) if when else utc_now()
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return raw, now


@policy_app.command("explain")
def policy_explain(
    file: Annotated[Path, typer.Argument(help="Policy YAML file")],
    request: Annotated[
        Path,
        typer.Option(
            "--request",
            help="JSON or YAML file with the request fields (and optional `agent`, `now`)",
        ),
    ],
) -> None:
    """Show which rule decides a request and why every other rule did not."""
    from core.inputs import intent_from_mapping
    from core.policy import explain, load_policy

    try:
        policy = load_policy(file)
        fields, now = _read_intent(request)
        agent = str(fields.pop("agent", "cli"))
        intent = intent_from_mapping(fields, agent=agent)
        typer.echo(explain(policy, intent, now).render())
    except StepupError as exc:
        raise fail(exc.detail) from None
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise fail(f"{request}: {exc}") from None
