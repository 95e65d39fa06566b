"""CLI commands that run the service and administer agents, target systems and requests."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from bot.cli.common import JsonFlag, Table, fail, settings_or_exit
from bot.clock import utc_now
from core.errors import StepupError

if TYPE_CHECKING:
    from core.service import Stepup


def _service() -> Stepup:
    from bot.wiring import build_service

    try:
        return build_service(settings_or_exit())
    except StepupError as exc:
        raise fail(exc.detail) from None


@contextmanager
def _changes_published(service: Stepup) -> Iterator[None]:
    """On PostgreSQL, what the command changes wakes the servers' long-polls at once."""
    if service.db.is_sqlite:
        yield
        return
    from core.storage.pg_changes import PgChangeRelay

    relay = PgChangeRelay(service.db.url)
    service.subscribe(relay.publish)
    relay.start(listen=False)
    try:
        yield
    finally:
        relay.stop()


agents_app = typer.Typer(
    help="Register, list, rotate the keys of and disable agents.", no_args_is_help=True
)
servers_app = typer.Typer(
    help="Target systems allowed to call introspection.", no_args_is_help=True
)
requests_app = typer.Typer(help="Inspect requests.", no_args_is_help=True)


@agents_app.command("add")
def agents_add(
    agent_id: Annotated[str, typer.Argument(help="The agent's id, e.g. deploy-bot")],
    owner: Annotated[str, typer.Option("--owner", help="Email of the human who owns the agent")],
    oidc: Annotated[
        list[str] | None,
        typer.Option("--oidc", help="NAME:SUBJECT: tokens of trusted issuer NAME with this sub"),
    ] = None,
    spiffe_id: Annotated[
        list[str] | None,
        typer.Option("--spiffe-id", help="A SPIFFE ID of a trusted trust domain (JWT-SVIDs)"),
    ] = None,
    no_key: Annotated[
        bool, typer.Option("--no-key", help="No static key: only its workload identities")
    ] = False,
    callback_host: Annotated[
        list[str] | None,
        typer.Option(
            "--callback-host",
            help="HOST (any port) or HOST:PORT its callback_url may name (docs/callbacks.md)",
        ),
    ] = None,
) -> None:
    """Register an agent. Its key is printed once, alone on the last line (none with
    --no-key). --oidc and --spiffe-id bind workload identities (docs/identity.md);
    --callback-host (repeatable) allows a host for signed callbacks (docs/callbacks.md)."""
    from core.agents import MAX_AGENT_ID, AgentRegistry, WorkloadBinding, canonical_name

    if "@" not in owner:
        raise fail(f"--owner {owner!r} is not an email address")
    try:
        agent_id = canonical_name(agent_id, "agent id", max_length=MAX_AGENT_ID)
        bindings = [WorkloadBinding.oidc(v) for v in oidc or []]
        bindings += [WorkloadBinding.spiffe(v) for v in spiffe_id or []]
        registry = AgentRegistry(_service())
        if no_key:
            registry.add_keyless(
                agent_id,
                owner,
                by="cli",
                now=utc_now(),
                identities=bindings,
                callback_hosts=callback_host or (),
            )
        else:
            key = registry.add(
                agent_id,
                owner,
                by="cli",
                now=utc_now(),
                identities=bindings,
                callback_hosts=callback_host or (),
            )
    except StepupError as exc:
        raise fail(exc.detail) from None
    bound = f", {len(bindings)} workload identit{'y' if len(bindings) == 1 else 'ies'}"
    if no_key:
        typer.echo(f"agent {agent_id} registered (owner {owner}{bound}); no static key")
        return
    typer.echo(
        f"agent {agent_id} registered (owner {owner}{bound if bindings else ''}); "
        "its key, shown only now:"
    )
    typer.echo(key)


@agents_app.command("list")
def agents_list(as_json: JsonFlag = False) -> None:
    """Each agent: id, owner, state, when it was added, how many of its keys work now, and
    how it authenticates (a static key is for development; oidc:NAME, spiffe)."""
    from core.agents import AgentRegistry

    table = Table(("ID", "OWNER", "STATE", "ADDED", "LIVE KEYS", "AUTH"))
    for agent in AgentRegistry(_service()).list_agents(now=utc_now()):
        state = "disabled" if agent.disabled else "active"
        added = agent.created_at.isoformat()
        keys = f"{agent.live_keys} live key{'' if agent.live_keys == 1 else 's'}"
        auth = agent.auth
        table.add(
            (agent.id, agent.owner_email, state, added, keys, ", ".join(auth) or "none"),
            {
                "id": agent.id,
                "owner": agent.owner_email,
                "state": state,
                "added": added,
                "live_keys": agent.live_keys,
                "auth": auth,
                "identities": list(agent.identities),
            },
        )
    table.echo(as_json=as_json)


@agents_app.command("callback-hosts")
def agents_callback_hosts(
    agent_id: Annotated[str, typer.Argument(help="The agent's id")],
    add: Annotated[
        list[str] | None,
        typer.Option("--add", help="HOST (any port) or HOST:PORT ([IPV6]:PORT) to allow"),
    ] = None,
    remove: Annotated[
        list[str] | None, typer.Option("--remove", help="An entry to take off (as listed)")
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Take every entry off first")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object")] = False,
) -> None:
    """Show or change the hosts the agent's callback_url may name (docs/callbacks.md): --clear,
    then each --remove, then each --add (all repeatable). Prints the list after, one per line.
    A change is audited; requests already submitted are checked against it at delivery."""
    from core.agents import AgentRegistry

    try:
        registry = AgentRegistry(_service())
        if add or remove or clear:
            hosts = registry.change_callback_hosts(
                agent_id, by="cli", now=utc_now(), add=add or (), remove=remove or (), clear=clear
            )
        else:
            hosts = registry.callback_hosts(agent_id)
    except StepupError as exc:
        raise fail(exc.detail) from None
    if as_json:
        typer.echo(json.dumps({"agent": agent_id, "callback_hosts": hosts}))
        return
    for host in hosts:
        typer.echo(host)
    if not hosts:
        typer.echo(f"agent {agent_id} has no callback host", err=True)


def _grace(text: str) -> timedelta:
    """``10m``, ``90s``, ``1h``; ``0`` (any unit) for at once."""
    from core.durations import parse_duration

    if re.fullmatch(r"0+[smhd]?", text.strip()):
        return timedelta(0)
    try:
        return parse_duration(text.strip())
    except ValueError as exc:
        raise fail(f"--grace: {exc}") from None


@agents_app.command("rotate-key")
def agents_rotate_key(
    agent_id: Annotated[str, typer.Argument(help="The agent's id")],
    grace: Annotated[
        str,
        typer.Option(
            "--grace",
            help="How long its current keys keep working (at most 24h); 0: they stop now",
        ),
    ] = "10m",
) -> None:
    """Give the agent a new key, printed once, alone on the last line."""
    from core.agents import AgentRegistry
    from core.durations import format_duration

    period = _grace(grace)
    try:
        rotated = AgentRegistry(_service()).rotate_key(
            agent_id, by="cli", now=utc_now(), grace=period
        )
    except StepupError as exc:
        raise fail(exc.detail) from None
    if not rotated.old_keys:
        old = "it had no working key"
    elif period:
        until = rotated.old_keys_until.isoformat(timespec="seconds")
        old = f"its {rotated.old_keys} old key(s) work until {until} ({format_duration(period)})"
    else:
        old = f"its {rotated.old_keys} old key(s) stopped now"
    typer.echo(f"agent {agent_id}: new key; {old}; the new key, shown only now:")
    typer.echo(rotated.key)


@agents_app.command("disable")
def agents_disable(agent_id: Annotated[str, typer.Argument(help="The agent's id")]) -> None:
    """Stop the agent's keys and revoke its live credentials."""
    from core.agents import AgentRegistry

    service = _service()
    try:
        with _changes_published(service):
            revoked = AgentRegistry(service).disable(agent_id, by="cli", now=utc_now())
    except StepupError as exc:
        raise fail(exc.detail) from None
    typer.echo(f"agent {agent_id} disabled; {len(revoked)} live credential(s) revoked")


@servers_app.command("add")
def servers_add(
    name: Annotated[str, typer.Argument(help="Name of the target system")],
    audience: Annotated[
        list[str] | None,
        typer.Option(
            "--audience",
            help="A token audience (a request's target) it may introspect; repeat for more. "
            "Default: its name alone.",
        ),
    ] = None,
) -> None:
    """Register a target system; its introspection key is printed once, on the last line.

    Introspection answers it `active: true` only for tokens whose audience is one of its own.
    """
    from core.agents import AgentRegistry

    try:
        key = AgentRegistry(_service()).add_resource_server(
            name, by="cli", now=utc_now(), audiences=audience or ()
        )
    except StepupError as exc:
        raise fail(exc.detail) from None
    audiences = ", ".join(dict.fromkeys(audience or [name]))
    typer.echo(
        f"resource server {name} registered (audiences: {audiences}); its key, shown only now:"
    )
    typer.echo(key)


@servers_app.command("disable")
def servers_disable(
    name: Annotated[str, typer.Argument(help="Name of the target system")],
) -> None:
    """Stop the target system's key: its introspection calls get 401 from now on."""
    from core.agents import AgentRegistry

    try:
        changed = AgentRegistry(_service()).disable_resource_server(name, by="cli", now=utc_now())
    except StepupError as exc:
        raise fail(exc.detail) from None
    typer.echo(f"resource server {name} {'disabled' if changed else 'was already disabled'}")


@servers_app.command("rotate-key")
def servers_rotate_key(
    name: Annotated[str, typer.Argument(help="Name of the target system")],
) -> None:
    """Give the target system a new key, printed once, alone on the last line. The old key stops
    at once (for a leaked key). Without a gap: add a second server with the same audiences,
    deploy its key, then disable the first."""
    from core.agents import AgentRegistry

    try:
        key = AgentRegistry(_service()).rotate_resource_server_key(name, by="cli", now=utc_now())
    except StepupError as exc:
        raise fail(exc.detail) from None
    typer.echo(f"resource server {name}: new key (the old one stopped now); shown only now:")
    typer.echo(key)


@servers_app.command("list")
def servers_list(as_json: JsonFlag = False) -> None:
    """Each target system: name, audiences (comma-separated), state, when it was added."""
    from core.agents import AgentRegistry

    table = Table(("NAME", "AUDIENCES", "STATE", "ADDED"))
    for server in AgentRegistry(_service()).list_resource_servers():
        state = "disabled" if server.disabled else "active"
        added = server.created_at.isoformat() if server.created_at else None
        table.add(
            (server.name, ",".join(server.audiences), state, added or "-"),
            {
                "name": server.name,
                "audiences": list(server.audiences),
                "state": state,
                "added": added,
            },
        )
    table.echo(as_json=as_json)


@requests_app.command("list")
def requests_list(
    status: Annotated[str | None, typer.Option("--status", help="Only this status")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """The newest requests: id, status, agent, action, target, environment, rule, created."""
    from core.model import Status

    if status is not None and status not in {s.value for s in Status}:
        raise fail(f"--status must be one of {', '.join(s.value for s in Status)}")
    table = Table(("ID", "STATUS", "AGENT", "ACTION", "TARGET", "ENVIRONMENT", "RULE", "CREATED"))
    for snap in _service().list_requests(status=[status] if status else None, limit=limit):
        created = snap.created_at.isoformat()
        table.add(
            (
                snap.id,
                snap.status.value,
                snap.agent_id,
                snap.action,
                snap.target,
                snap.environment,
                snap.rule or "-",
                created,
            ),
            {
                "id": snap.id,
                "status": snap.status.value,
                "agent": snap.agent_id,
                "action": snap.action,
                "target": snap.target,
                "environment": snap.environment,
                "rule": snap.rule,
                "created": created,
            },
        )
    table.echo(as_json=as_json)


@requests_app.command("show")
def requests_show(
    request_id: Annotated[str, typer.Argument(help="The request's id, e.g. req_…")],
) -> None:
    """One request as JSON: what the agent API shows, plus its Slack messages and their state
    (slack_deliveries: sent, pending with the last error, or given up on)."""
    try:
        service = _service()
        snap = service.get(request_id)
    except StepupError as exc:
        raise fail(exc.detail) from None
    from bot.api.rendering import request_json
    from core.storage.outbox_repo import request_deliveries

    shown = request_json(snap)
    shown["slack_deliveries"] = request_deliveries(service.db, request_id)
    typer.echo(json.dumps(shown, indent=2, sort_keys=True))


def revoke(
    request_id: Annotated[str, typer.Argument(help="The request's id, e.g. req_…")],
    reason: Annotated[
        str, typer.Option("--reason", help="Why (recorded in the audit log)")
    ] = "revoked by admin",
) -> None:
    """Revoke an approved or active request's credential now."""
    service = _service()
    try:
        with _changes_published(service):
            snap = service.revoke(request_id, by="cli", reason=reason, now=utc_now())
    except StepupError as exc:
        raise fail(exc.detail) from None
    typer.echo(f"{snap.id} {snap.status.value}")


def serve(
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            max=64,
            help="Worker processes on the port (PostgreSQL only; default STEPUP_WORKERS or 1)",
        ),
    ] = None,
) -> None:
    """Run the API, the scheduler and the Slack app."""
    from bot.server import serve as run

    settings = settings_or_exit()
    if workers is not None:
        settings = settings.model_copy(update={"workers": workers})
    try:
        run(settings)
    except StepupError as exc:
        raise fail(exc.detail) from None


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("revoke")(revoke)
    app.add_typer(agents_app, name="agents")
    app.add_typer(servers_app, name="resource-servers")
    app.add_typer(requests_app, name="requests")
