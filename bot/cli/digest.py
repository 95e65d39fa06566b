"""``stepup digest``: show the daily digest, or post it to the security channel now."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from bot.cli.common import fail, settings_or_exit
from bot.clock import utc_now
from core.errors import StepupError

if TYPE_CHECKING:
    from bot.settings import Settings
    from core.keys import KeyRing
    from core.storage.database import Database

MAX_DELIVERY_PASSES = 10


def digest(
    post_now: Annotated[
        bool,
        typer.Option(
            "--now",
            help="Post the digest to STEPUP_SECURITY_CHANNEL now (once per day, like the job)",
        ),
    ] = False,
    show: Annotated[
        bool, typer.Option("--print", help="Print the digest; alone, nothing is posted")
    ] = False,
) -> None:
    """The daily digest: print the last 24 hours, post the day's digest now, or both."""
    if not (post_now or show):
        raise fail("say --print to show the digest, --now to post it (or both)")
    settings = settings_or_exit()
    if post_now and settings.slack_delivers and not settings.security_channel:
        raise fail("--now needs STEPUP_SECURITY_CHANNEL, the channel the digest goes to")
    from bot.wiring import open_database, open_keyring
    from core.digest import render_text
    from core.storage.digest_repo import read_digest
    from core.usecases.digest import digest_day

    when = utc_now()
    db = open_database(settings)
    try:
        keyring = open_keyring(settings)
        if show:
            typer.echo(render_text(read_digest(db, keyring, now=when)), nl=False)
        if post_now and not settings.slack_delivers:
            # Nothing would ever deliver it: show it here instead of queueing it for no one.
            if not show:
                typer.echo(render_text(read_digest(db, keyring, now=when)), nl=False)
            typer.echo(
                f"digest for {digest_day(when, settings.timezone)} printed above, not posted: "
                "Slack is not configured (no SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET) and the "
                "sandbox is off"
            )
        elif post_now:
            _post(settings, db, keyring, when)
    except StepupError as exc:
        raise fail(exc.detail) from None
    finally:
        db.dispose()


def _post(settings: Settings, db: Database, keyring: KeyRing, when: datetime) -> None:
    from bot.slack.digest_blocks import digest_message
    from core.usecases.digest import digest_day, post_digest

    channel = str(settings.security_channel)
    day = digest_day(when, settings.timezone)
    posted = post_digest(
        db,
        keyring,
        now=when,
        timezone=settings.timezone,
        channel=channel,
        render=digest_message,
    )
    if not posted:
        typer.echo(f"the digest for {day} was already posted; not posted again")
        return
    if not settings.slack_enabled:
        typer.echo(
            f"digest for {day} queued for {channel} in the Slack sandbox; the running "
            "`stepup serve` shows it at /sandbox"
        )
        return
    error = _deliver(settings, db, when)
    if error is None:
        typer.echo(f"digest for {day} posted to {channel}")
    else:
        typer.echo(f"digest for {day} queued for {channel}; not delivered ({error})")


def _deliver(settings: Settings, db: Database, when: datetime) -> str | None:
    """Run the outbox until it is empty; None when the digest went out, else why not."""
    from bot.slack.app import web_client
    from bot.slack.delivery import OutboxWorker
    from bot.slack.directory import SlackDirectory
    from bot.wiring import build_service
    from core.notices import NoticeKind
    from core.storage.outbox_repo import unaddressed_delivery

    if settings.slack_bot_token is None:
        return "Slack is not configured"
    client = web_client(settings.slack_bot_token.get_secret_value(), settings.slack_api_url)
    worker = OutboxWorker(build_service(settings, db), client, SlackDirectory(client))
    try:
        for _ in range(MAX_DELIVERY_PASSES):
            if worker.run_once() == 0:
                break
    finally:
        worker.stop()
    entry = unaddressed_delivery(db, kind=NoticeKind.CHANNEL.value, created_at=when)
    if entry.status == "sent":
        return None
    if entry.status == "dead":
        return f"{entry.last_error}; Slack refused it: not retried"
    return entry.last_error or "the outbox is busy; the running service delivers it"


def register(app: typer.Typer) -> None:
    app.command("digest")(digest)
