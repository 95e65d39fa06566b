"""``stepup demo``: a demo agent that walks the whole approval flow against a running service.

The agent's key comes from ``--key`` (or ``STEPUP_AGENT_KEY``). Without one, the demo registers
the agent ``demo-agent`` in the database of this environment's settings (the one ``make run``
uses), or gives it a new key if it exists, as ``stepup agents add`` / ``rotate-key`` would, and
then checks that the server at ``--server`` knows that key.
"""

from __future__ import annotations

from typing import Annotated

import typer

from bot.cli.common import fail, settings_or_exit
from bot.clock import utc_now
from core.errors import StepupError
from stepup_client import ApiError, ConnectionFailed, StepupClient, StepupClientError

DEMO_AGENT = "demo-agent"
DEMO_OWNER = "demo-owner@example.com"  # no approver group has it: anyone listed may approve
NO_SUCH_REQUEST = "req_stepup_demo_probe"


def _local_key(agent_id: str, owner: str) -> str:
    """A key for ``agent_id`` in this environment's database: registered if new, else rotated
    (the old keys keep working for their grace period, so a demo still running is unharmed)."""
    from bot.wiring import build_service
    from core.agents import AgentRegistry

    try:
        registry = AgentRegistry(build_service(settings_or_exit()))
        now = utc_now()
        if any(agent.id == agent_id for agent in registry.list_agents(now=now)):
            typer.echo(f"agent {agent_id} exists in the local database: giving it a new key")
            return registry.rotate_key(agent_id, by="stepup demo", now=now).key
        typer.echo(f"registering agent {agent_id} (owner {owner}) in the local database")
        return registry.add(agent_id, owner, by="stepup demo", now=now)
    except StepupError as exc:
        raise fail(exc.detail) from None


def demo(
    server: Annotated[
        str, typer.Option("--server", help="Base URL of the running stepup service")
    ] = "http://127.0.0.1:8080",
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            envvar="STEPUP_AGENT_KEY",
            help="An agent key to use; without one the demo agent is registered locally",
            show_default=False,
        ),
    ] = None,
    agent: Annotated[
        str, typer.Option("--agent", help="Id of the agent registered when no key is given")
    ] = DEMO_AGENT,
    owner: Annotated[
        str, typer.Option("--owner", help="Owner email of a newly registered demo agent")
    ] = DEMO_OWNER,
    timeout: Annotated[
        float,
        typer.Option("--timeout", min=1, help="Seconds to wait for a decision on one request"),
    ] = 600.0,
    pause: Annotated[
        float,
        typer.Option(
            "--pause",
            min=0,
            help="Seconds the agent works with each credential before it completes",
        ),
    ] = 2.0,
) -> None:
    """Run a demo agent: a pre-authorised read, a denied action, a break-glass secret read and a
    production change that waits for two approvers (in Slack, or the sandbox page when no Slack
    is configured). Each status is printed as it changes; each approved request's credential is
    claimed, checked as a target system would, then completed. Ctrl-C cancels what is pending.
    """
    from bot.cli.demo_run import Demo, DemoTimeout, summary

    base = server.rstrip("/")
    agent_key = key or _local_key(agent, owner)
    with StepupClient(base, agent_key, poll_seconds=30) as client:
        _check_key(client, base, from_flag=bool(key))
        run = Demo(
            client,
            base,
            say=typer.echo,
            timeout=timeout,
            pause=pause,
            hint=f"approve it in Slack, or at {base}/sandbox when the service runs without Slack",
        )
        typer.echo(f"stepup demo: agent {agent if not key else '(from --key)'} at {base}")
        try:
            finals = run.run()
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            what = run.abandon()
            if what:
                typer.echo(what, err=True)
            raise typer.Exit(130) from None
        except DemoTimeout as exc:
            raise fail(f"gave up waiting for a decision on {exc}: it was cancelled") from None
        except ApiError as exc:
            run.abandon()
            raise fail(f"the service answered {exc.status}: {exc.detail or exc.title}") from None
        except StepupClientError as exc:
            run.abandon()
            raise fail(str(exc)) from None
    typer.echo(f"done: {summary(finals)}")


def _check_key(client: StepupClient, base: str, *, from_flag: bool) -> None:
    """Fails with one clear line unless the server is up and knows the key."""
    try:
        client.get(NO_SUCH_REQUEST)
    except ConnectionFailed:
        raise fail(f"cannot reach {base}: is the service running (make run)?") from None
    except ApiError as exc:
        if exc.status == 404:
            return
        if exc.status == 401 and not from_flag:
            raise fail(
                f"the service at {base} does not know the key registered in this environment's "
                "database: run the demo with the service's settings (STEPUP_DATABASE_URL), "
                "or pass --key"
            ) from None
        raise fail(f"the service at {base} refused the agent key ({exc.status})") from None
    raise fail(f"the service at {base} answered a probe it should not know")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
