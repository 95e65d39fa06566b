"""``stepup issuers list`` and ``stepup issuers check``: the policy's credential issuers
(docs/issuers.md), checked for reachability and permission without issuing anything."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bot.cli.common import JsonFlag, Table, fail, settings_or_exit
from bot.settings import Settings

if TYPE_CHECKING:  # imported where used: the CLI starts fast
    from core.keys import KeyRing
    from core.policy.engine import Policy

issuers_app = typer.Typer(
    help="The policy's credential issuers: list them, check they work.", no_args_is_help=True
)

PolicyOption = Annotated[
    Path | None,
    typer.Option("--policy", help="Policy file (default: STEPUP_POLICY_FILE)"),
]


def _policy(path: Path | None, settings: Settings | None) -> Policy:
    from core.errors import StepupError
    from core.policy import load_policy

    file = path or (settings or settings_or_exit()).policy_file
    try:
        return load_policy(file)
    except (StepupError, OSError) as exc:
        detail = exc.detail if isinstance(exc, StepupError) else str(exc)
        raise fail(detail if detail.startswith(f"{file}:") else f"{file}: {detail}") from None


@issuers_app.command("list")
def issuers_list(policy_file: PolicyOption = None, as_json: JsonFlag = False) -> None:
    """The issuers of the policy, their type and the rules that use them."""
    policy = _policy(policy_file, None)
    table = Table(("name", "type", "rules"))
    for name, config in sorted(policy.issuers.items()):
        rules = [
            rule.name
            for rule in policy.rules
            if rule.decision.issuer is not None and rule.decision.issuer.name == name
        ]
        table.add(
            (name, config.type, ", ".join(rules) or "-"),
            {"name": name, "type": config.type, "rules": rules},
        )
    table.echo(as_json=as_json)


@issuers_app.command("check")
def issuers_check(
    names: Annotated[
        list[str] | None, typer.Argument(help="Issuers to check (default: every one)")
    ] = None,
    policy_file: PolicyOption = None,
) -> None:
    """Reach each issuer and check its permission (PostgreSQL: may create roles; Vault: the
    token is valid...) without issuing anything. Exit 1 if any check fails."""
    from core.issuers.base import BuildContext, IssuerUnavailable
    from core.issuers.catalog import Issuers

    settings = settings_or_exit()
    policy = _policy(policy_file, settings)
    chosen = names or sorted(policy.issuers)
    unknown = [name for name in chosen if name not in policy.issuers]
    if unknown:
        known = ", ".join(sorted(policy.issuers)) or "none"
        raise fail(f"no issuer named {', '.join(unknown)} in the policy (issuers: {known})")
    if not chosen:
        typer.echo("the policy defines no issuers: every rule issues stepup's own JWT")
        return
    keyring = _keyring(settings)
    issuers = Issuers(
        lambda: policy.issuers,
        BuildContext(
            environ=os.environ,
            sign=lambda claims, typ: keyring.sign(claims, typ=typ),
            issuer_url=settings.public_url,
        ),
    )
    failed = 0
    for name in chosen:
        kind = policy.issuers[name].type
        try:
            account = issuers.get(name).check()
        except IssuerUnavailable as exc:
            failed += 1
            typer.echo(f"{name} ({kind}): FAILED — {exc}")
        except Exception as exc:  # an unexpected error is a failed check, named, not a trace
            failed += 1
            typer.echo(f"{name} ({kind}): FAILED — {type(exc).__name__}")
        else:
            typer.echo(f"{name} ({kind}): ok — {account}")
    if failed:
        raise fail(f"{failed} of {len(chosen)} issuers failed their check")


def _keyring(settings: Settings) -> KeyRing:
    from bot.wiring import open_keyring
    from core.errors import StepupError

    try:
        return open_keyring(settings)
    except StepupError as exc:
        raise fail(exc.detail) from None
