"""``stepup serve --workers N``: N worker processes serving one port, on PostgreSQL.

The supervisor (the process started as ``stepup serve``) binds the port, migrates the database
and makes the signing keys once, then starts N workers (``python -m bot.workers``), each
inheriting the listening socket: the kernel hands each new connection to one of them. A worker
is a whole ``stepup serve`` (API, Slack events, scheduler, change relay), like a replica on the
same machine: long-polls are woken across workers by ``LISTEN``/``NOTIFY``, one worker among
all replicas and workers leads the periodic jobs (``core.storage.pg_leader``), and Slack's
events are handled by whichever worker takes the connection.

SIGTERM or SIGINT (Ctrl-C) to the supervisor stops every worker (each finishes the requests
in progress) and then the supervisor; SIGHUP is passed on (each worker reloads the policy and
the signing keys). A worker that dies is started again; one that dies at start-up, again and
again, stops the whole service with exit status 1. A worker whose supervisor is gone stops.

SQLite is refused: it admits one writer at a time, so more processes only queue on its lock.
The Slack sandbox is refused too: its stand-in workspace lives in one process's memory.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from bot.settings import Settings, load_settings
from core.errors import ConfigError

logger = logging.getLogger("stepup")

STOP_GRACE_SECONDS = 20.0  # a worker still running this long after SIGTERM is killed
QUICK_DEATH_SECONDS = 10.0  # a worker dying sooner than this after its start failed to start
MAX_QUICK_DEATHS = 3


def refusal(settings: Settings) -> str | None:
    """Why ``settings`` cannot run several workers (None: they can)."""
    from core.storage.database import is_sqlite_url

    if is_sqlite_url(settings.database_url):
        return (
            f"--workers {settings.workers} (STEPUP_WORKERS) needs PostgreSQL: SQLite admits "
            "one writer at a time, so more processes would only queue on its lock. Run one "
            "process, or set STEPUP_DATABASE_URL to a PostgreSQL database"
        )
    if settings.sandbox_off_because is None:
        return (
            f"--workers {settings.workers} (STEPUP_WORKERS) cannot run the Slack sandbox: its "
            "stand-in workspace lives in one process. Configure Slack, or set STEPUP_SANDBOX=0"
        )
    return None


@dataclass
class Worker:
    index: int
    process: subprocess.Popen[bytes]
    started: float


def serve_workers(settings: Settings) -> None:
    """The supervisor: returns once every worker has stopped. Raises ``ConfigError`` for a
    setup that cannot run workers, or when workers keep dying at start-up."""
    from bot.serving import bound_url, listen_socket
    from bot.wiring import build_service

    why_not = refusal(settings)
    if why_not is not None:
        raise ConfigError(why_not)
    pid = os.getpid()
    logger.info(
        "stepup starting %d workers, supervisor pid %d (kill -HUP %d reloads the policy and "
        "signing keys in every worker; kill %d stops them all)",
        settings.workers,
        pid,
        pid,
        pid,
    )
    sock = listen_socket(settings.host, settings.port)  # a busy port: ConfigError naming it
    try:
        # Once, before the workers race for it: migrate, make the signing keys, check the policy.
        build_service(settings).db.dispose()
        supervisor = Supervisor(settings.workers, sock)
        supervisor.start()
    except BaseException:
        sock.close()
        raise
    print(
        f"stepup listening on {bound_url(sock)} (public URL {settings.public_url}), "
        f"{settings.workers} workers",
        flush=True,
    )
    try:
        supervisor.run()
    finally:
        sock.close()
    if supervisor.failed is not None:
        raise ConfigError(supervisor.failed)


class Supervisor:
    def __init__(self, count: int, sock: socket.socket) -> None:
        self.count = count
        self.sock = sock
        self.workers: dict[int, Worker] = {}
        self.stopping = threading.Event()
        self.failed: str | None = None
        self._quick_deaths = 0

    def start(self) -> None:
        for index in range(self.count):
            self._spawn(index)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _spawn(self, index: int) -> None:
        fd = self.sock.fileno()
        process = subprocess.Popen(  # noqa: S603 (this interpreter, fixed arguments)
            [sys.executable, "-m", "bot.workers", "--fd", str(fd), "--index", str(index)],
            pass_fds=(fd,),
            # Its own process group: a Ctrl-C in the terminal reaches the supervisor alone,
            # which then stops each worker once, gracefully (a second signal would make
            # uvicorn drop the requests in progress).
            process_group=0,
        )
        self.workers[index] = Worker(index, process, time.monotonic())
        logger.info("worker %d started, pid %d", index, process.pid)

    def _on_stop(self, signum: int, _frame: object) -> None:
        if not self.stopping.is_set():
            logger.info("%s: stopping the workers", signal.Signals(signum).name)
        self.stopping.set()

    def _on_hup(self, _signum: int, _frame: object) -> None:
        for worker in list(self.workers.values()):
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGHUP)

    def run(self) -> None:
        """Until stopped: watch the workers, start again any that died."""
        while not self.stopping.wait(0.2):
            for worker in list(self.workers.values()):
                code = worker.process.poll()
                if code is None or self.stopping.is_set():
                    continue
                quick = time.monotonic() - worker.started < QUICK_DEATH_SECONDS
                self._quick_deaths = self._quick_deaths + 1 if quick else 0
                if self._quick_deaths >= MAX_QUICK_DEATHS:
                    self.failed = (
                        f"worker {worker.index} exited with status {code} at start-up "
                        f"{MAX_QUICK_DEATHS} times in a row; see the log above"
                    )
                    logger.error("%s: stopping", self.failed)
                    self.stopping.set()
                    break
                logger.warning(
                    "worker %d (pid %d) exited with status %s; starting it again",
                    worker.index,
                    worker.process.pid,
                    code,
                )
                self._spawn(worker.index)
        self._stop_all()

    def _stop_all(self) -> None:
        for worker in self.workers.values():
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for worker in self.workers.values():
            try:
                worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("worker %d did not stop in time: killed", worker.index)
                worker.process.kill()
                worker.process.wait()
        logger.info("all workers stopped")


def _stop_with_supervisor(supervisor_pid: int) -> None:
    """Stop this worker (SIGTERM to itself) once its supervisor is gone."""

    def watch() -> None:
        while os.getppid() == supervisor_pid:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stepup-supervisor-watch", daemon=True).start()


def worker_main(argv: list[str] | None = None) -> int:
    """One worker: serve on the inherited socket until SIGTERM/SIGINT."""
    from bot.server import _configure_logging, serve_on

    parser = argparse.ArgumentParser(prog="python -m bot.workers")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--index", type=int, required=True)
    args = parser.parse_args(argv)
    _stop_with_supervisor(os.getppid())
    try:
        settings = load_settings()
        _configure_logging(settings, worker=args.index)
        sock = socket.socket(fileno=args.fd)
        serve_on(settings, sock, worker=args.index)
    except ConfigError as exc:
        print(f"error: worker {args.index}: {exc.detail}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
