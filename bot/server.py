"""`stepup serve`: the API, the scheduler and (when configured) the Slack app in one process."""

from __future__ import annotations

import logging
import os
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from prometheus_client import Gauge

from bot.api.admission import Admission
from bot.api.app import create_app
from bot.api.context import ApiContext
from bot.callbacks import CallbackWorker
from bot.clock import utc_now
from bot.digest_job import JOB_ID as DIGEST_JOB_ID
from bot.digest_job import schedule_digest
from bot.scheduler import CHECKPOINT_JOB, DeadlineScheduler, schedule_checkpoints
from bot.settings import Settings
from bot.slack.app import SlackRuntime, build_slack
from bot.slack.digest_blocks import digest_message
from bot.slack.events_route import slack_router
from bot.wiring import build_service
from core.agents import AgentRegistry
from core.errors import StepupError
from core.storage.audit_store import checkpoint_head
from core.storage.pg_changes import PgChangeRelay
from core.storage.pg_leader import PgLeadership
from core.storage.sqlite_changes import SqliteChangeWatch, sqlite_path
from core.usecases.digest import post_digest

logger = logging.getLogger("stepup")

# With the SQLite change watch, the long-polls' own re-read only guards against a watch gone
# wrong; every change is heard well before it.
SQLITE_SAFETY_RECHECK_SECONDS = 30.0
RECONCILE_SWEEP_JOB = "reconcile-sweep"  # bot/scheduler.py's periodic sweep


@dataclass
class Runtime:
    app: FastAPI
    scheduler: DeadlineScheduler
    context: ApiContext
    slack: SlackRuntime | None = None
    socket_mode: Any = field(default=None)
    relay: PgChangeRelay | None = None  # PostgreSQL: long-polls hear other replicas' changes
    sandbox: Any = field(default=None)  # bot.sandbox.mode.Sandbox, when sandbox mode is on
    callbacks: CallbackWorker | None = None  # signed callbacks: with or without Slack
    watch: SqliteChangeWatch | None = None  # SQLite: long-polls hear other processes' changes
    # PostgreSQL: one process among all replicas and workers runs the periodic jobs.
    leadership: PgLeadership | None = None

    def start(self) -> None:
        if self.relay is not None:
            self.relay.start()
        if self.watch is not None:
            self.watch.start()
        self.scheduler.start()
        if self.leadership is not None:
            lead_periodic_jobs(self.scheduler, leading=False)  # until elected
            self.leadership.start()
        if self.callbacks is not None:
            self.callbacks.start()
        if self.slack is not None:
            self.slack.start()
        if self.socket_mode is not None:
            self.socket_mode.connect()

    def stop(self) -> None:
        if self.socket_mode is not None:
            self.socket_mode.close()
        if self.slack is not None:
            self.slack.stop()
        if self.callbacks is not None:
            self.callbacks.stop()
        if self.leadership is not None:
            self.leadership.stop()
        self.scheduler.shutdown()
        if self.relay is not None:
            self.relay.stop()
        if self.watch is not None:
            self.watch.stop()
        if self.sandbox is not None:
            self.sandbox.stop()
        self.context.service.db.dispose()


def build_runtime(settings: Settings, *, worker: int | None = None) -> Runtime:
    service = build_service(settings)
    context = ApiContext(
        service=service, registry=AgentRegistry(service), threads=settings.api_threads
    )
    routers: list[APIRouter] = []
    slack = None
    socket_mode = None
    sandbox = None
    security_channel = settings.security_channel
    if settings.sandbox_off_because is None:
        # The one production path that loads the Slack emulator (docs/sandbox.md).
        from bot.sandbox.mode import build_sandbox

        sandbox = build_sandbox(service, security_channel=security_channel)
        slack = sandbox.slack
        routers.extend(sandbox.routers)
        security_channel = sandbox.security_channel
        service.security_channel = security_channel
    elif settings.slack_bot_token is not None and settings.slack_signing_secret is not None:
        slack = build_slack(
            service,
            bot_token=settings.slack_bot_token.get_secret_value(),
            signing_secret=settings.slack_signing_secret.get_secret_value(),
            api_url=settings.slack_api_url,
        )
        if settings.slack_app_token is not None:
            from slack_bolt.adapter.socket_mode import SocketModeHandler

            socket_mode = SocketModeHandler(slack.app, settings.slack_app_token.get_secret_value())
        else:
            routers.append(
                slack_router(
                    slack.app, signing_secret=settings.slack_signing_secret.get_secret_value()
                )
            )
    admission = Admission(
        max_in_flight=settings.max_in_flight, max_long_polls=settings.max_long_polls
    )
    app = create_app(context, extra_routers=routers, admission=admission)
    scheduler = DeadlineScheduler(service, sweep_interval_seconds=settings.sweep_interval_seconds)
    if settings.audit_checkpoint_minutes > 0:
        schedule_checkpoints(
            scheduler.scheduler,
            lambda: checkpoint_head(service.db, service.keyring, now=utc_now()),
            minutes=settings.audit_checkpoint_minutes,
        )
    if security_channel and settings.slack_delivers:
        channel = security_channel

        def post() -> bool:
            return post_digest(
                service.db,
                service.keyring,
                now=utc_now(),
                timezone=settings.timezone,
                channel=channel,
                render=digest_message,
            )

        schedule_digest(
            scheduler.scheduler,
            post=post,
            digest_time=settings.digest_time,
            timezone=settings.timezone,
            now=utc_now(),
        )
    elif settings.slack_delivers:
        logger.warning("STEPUP_SECURITY_CHANNEL is unset: no daily digest and no alerts in Slack")
    relay = None
    if not service.db.is_sqlite:
        relay = PgChangeRelay(service.db.url, context.hub.notify_id, context.hub.wake_all)
        service.subscribe(relay.publish)
    callbacks = CallbackWorker(service)
    watch = sqlite_change_watch(context)
    leadership = None
    leader_gauge = Gauge(
        "stepup_scheduler_leader",
        "1 while this process runs the periodic sweep, audit checkpoints and digest "
        "(on PostgreSQL, one process among all replicas and workers)",
        registry=app.state.metrics.registry,
    )
    who = f"pid {os.getpid()}" if worker is None else f"worker {worker}, pid {os.getpid()}"
    if not service.db.is_sqlite:

        def on_leadership(leading: bool) -> None:
            lead_periodic_jobs(scheduler, leading=leading)
            leader_gauge.set(1 if leading else 0)
            if leading:
                logger.info("scheduler leader: this process (%s) runs the periodic jobs", who)
            else:
                logger.info("this process (%s) no longer leads the scheduler", who)

        leadership = PgLeadership(service.db.url, on_leadership)
    else:
        leader_gauge.set(1)  # one SQLite file, one process
    if worker is not None:
        Gauge(
            "stepup_worker",
            "This process among the workers of stepup serve --workers N: its index and pid",
            ["index", "pid"],
            registry=app.state.metrics.registry,
        ).labels(str(worker), str(os.getpid())).set(1)
    return Runtime(
        app,
        scheduler,
        context,
        slack,
        socket_mode,
        relay,
        sandbox,
        callbacks,
        watch,
        leadership,
    )


# Jobs only the leader runs; every process keeps its precise deadline timers (each arms the
# deadlines of the requests it changed) and its start-up sweep, all idempotent.
LEADER_JOBS = (RECONCILE_SWEEP_JOB, CHECKPOINT_JOB, DIGEST_JOB_ID)


def lead_periodic_jobs(scheduler: DeadlineScheduler, *, leading: bool) -> None:
    """Resume (leader) or pause (follower) the periodic jobs of ``scheduler``."""
    for job_id in LEADER_JOBS:
        if scheduler.scheduler.get_job(job_id) is None:
            continue
        if leading:
            scheduler.scheduler.resume_job(job_id)
        else:
            scheduler.scheduler.pause_job(job_id)


def sqlite_change_watch(context: ApiContext) -> SqliteChangeWatch | None:
    """On a SQLite file, the watch that wakes long-polls on other processes' changes (``stepup
    revoke`` from the CLI, say) within ~50 ms; the periodic re-read stays as a safety net only.
    None on anything else."""
    path = sqlite_path(context.service.db.url)
    if path is None:
        return None
    hub = context.hub
    context.cross_replica_recheck_seconds = SQLITE_SAFETY_RECHECK_SECONDS
    return SqliteChangeWatch(path, hub.waited, hub.notify_id, hub.someone_waits)


def reload_policy(runtime: Runtime, path: Path) -> bool:
    """Swap in the policy at ``path``; on any error keep the one in force and say why."""
    holder = runtime.context.service.policy
    try:
        policy = holder.reload(path)
    except StepupError as exc:
        logger.error("policy reload refused, keeping %s: %s", holder.current.digest, exc.detail)
        return False
    logger.info(
        "policy reloaded from %s: %d rules (%s)", path, len(policy.rule_names), policy.digest
    )
    return True


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def serve(settings: Settings) -> None:
    """``stepup serve``: one process, or with ``settings.workers`` > 1 a supervisor of that
    many worker processes on one port (``bot.workers``)."""
    from bot.serving import listen_socket, started_line

    _configure_logging(settings)
    if settings.workers > 1:
        from bot.workers import serve_workers

        serve_workers(settings)
        return
    logger.info(started_line())
    sock = listen_socket(settings.host, settings.port)  # a busy port: ConfigError naming it
    serve_on(settings, sock)


def _configure_logging(settings: Settings, *, worker: int | None = None) -> None:
    who = "" if worker is None else f"[worker {worker}] "
    logging.basicConfig(
        level=settings.log_level, format=f"%(asctime)s %(levelname)s {who}%(name)s: %(message)s"
    )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def serve_on(settings: Settings, sock: socket.socket, *, worker: int | None = None) -> None:
    """Build the runtime and serve on the listening ``sock`` until SIGINT or SIGTERM; closes
    ``sock``. ``worker``: this process's index among ``stepup serve --workers N``."""
    from bot.serving import bound_url, run_on

    try:
        runtime = build_runtime(settings, worker=worker)
    except BaseException:
        sock.close()
        raise
    if worker is None or worker == 0:  # said once, not by every worker
        _log_configuration(settings, runtime)
    runtime.start()

    def on_hup(_sig: int, _frame: object) -> None:
        runtime.context.service.keyring.reload_soon()  # a rotation: used from the next signature
        reload_policy(runtime, settings.policy_file)

    signal.signal(signal.SIGHUP, on_hup)
    if worker is None:
        # The socket is bound and listening: connections queue from now on, so this is true.
        url = bound_url(sock)
        print(f"stepup listening on {url} (public URL {settings.public_url})", flush=True)
    try:
        run_on(runtime.app, sock, keep_alive_seconds=settings.keep_alive_seconds)
    finally:
        sock.close()
        runtime.stop()
        if worker is None:
            print("stepup stopped: workers drained, scheduler and watchers stopped", flush=True)


def _log_configuration(settings: Settings, runtime: Runtime) -> None:
    if runtime.sandbox is not None:
        logger.info(
            "Slack sandbox: http://%s:%s/sandbox (a stand-in workspace; no Slack token is set)",
            _url_host(settings.host),
            settings.port,
        )
    elif not settings.slack_enabled:
        logger.info("Slack sandbox off: %s", settings.sandbox_off_because)
    if runtime.slack is None:
        logger.warning(
            "Slack is not configured (SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET unset) and the "
            "sandbox is off: nothing is queued for Slack (no cards, DMs, alerts or digest); "
            "pre-authorised and denied requests still work"
        )
    elif runtime.sandbox is None:
        mode = "Socket Mode" if runtime.socket_mode is not None else "HTTP mode at /slack/events"
        logger.info("Slack enabled (%s), Web API at %s", mode, settings.slack_api_url)
    policy = runtime.context.service.policy.current
    logger.info(
        "policy %s loaded: %d rules (%s)",
        settings.policy_file,
        len(policy.rule_names),
        policy.digest,
    )
