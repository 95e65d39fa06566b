"""`stepup serve --workers N` as a real process tree on PostgreSQL: two worker processes answer
on one port (each names itself in /metrics), requests submitted on one are claimed and
cancelled on the other, a long-poll held by one worker is answered by a change made through
the other, SIGHUP reaches every worker, exactly one worker leads the scheduler and another takes over when it is killed,
a killed worker is started again, and SIGTERM to the supervisor stops them all. SQLite and the
sandbox are refused with a clear message and exit status 1."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from tests.integration.live import free_port
from tests.integration.test_serve import STAGING_READ, STEPUP, add_agent, env_for
from tests.support import eventually, submit_body

PROD_RESTART = submit_body()  # a production restart: approvers must decide
WORKER = re.compile(r'^stepup_worker\{index="(\d+)",pid="(\d+)"\} 1\.0$', re.M)
RELOADED = re.compile(r"\[worker (\d+)\] stepup: policy reloaded from ")
LEADER = re.compile(r"^stepup_scheduler_leader ([01])\.0$", re.M)


def whoami(client: httpx.Client) -> tuple[int, int, bool]:
    """(worker index, pid, leads the scheduler) of the worker that answers on this connection."""
    text = client.get("/metrics").text
    worker, leader = WORKER.search(text), LEADER.search(text)
    assert worker is not None and leader is not None, text[:500]
    return int(worker.group(1)), int(worker.group(2)), leader.group(1) == "1"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextmanager
def supervisor(tmp: Path, env: dict[str, str], workers: int) -> Iterator[subprocess.Popen[str]]:
    log = (tmp / "serve.log").open("w")
    proc = subprocess.Popen(
        [STEPUP, "serve", "--workers", str(workers)],
        cwd=tmp,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def pinned_client(url: str, headers: dict[str, str], *, not_on: set[int]) -> httpx.Client:
    """A keep-alive client whose connection a worker other than ``not_on`` holds."""

    def attempt() -> httpx.Client | None:
        client = httpx.Client(base_url=url, headers=headers, timeout=60)
        try:
            if whoami(client)[0] not in not_on:
                return client
        except httpx.TransportError:
            pass
        client.close()
        return None

    found = eventually(attempt, timeout=120, interval=0.05, message="no other worker answered")
    assert found is not None
    return found


@pytest.mark.postgres
def test_two_workers_share_the_port_the_work_and_one_scheduler(
    postgres_database: str, tmp_path: Path
) -> None:
    port = free_port()
    env = env_for(
        tmp_path,
        port,
        STEPUP_DATABASE_URL=postgres_database,
        STEPUP_SANDBOX="0",
        STEPUP_KEYS_DIR=str(tmp_path / "keys"),
    )
    key = add_agent(env, tmp_path, "worker-bot")
    headers = {"Authorization": f"Bearer {key}"}
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with supervisor(tmp_path, env, 2) as proc, ExitStack() as stack:

        def first() -> httpx.Client:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited early:\n{log.read_text()}")
            return pinned_client(url, headers, not_on=set())

        one = first()
        stack.callback(one.close)
        two = pinned_client(url, headers, not_on={whoami(one)[0]})
        stack.callback(two.close)
        (index_one, pid_one, _), (index_two, pid_two, _) = whoami(one), whoami(two)
        assert {index_one, index_two} == {0, 1} and pid_one != pid_two
        assert proc.pid not in (pid_one, pid_two)

        # Submitted through one worker, claimed through the other.
        submitted = one.post("/v1/requests", json=STAGING_READ)
        assert submitted.status_code == 201 and submitted.json()["status"] == "approved"
        claimed = two.post(f"/v1/requests/{submitted.json()['id']}/credential")
        assert claimed.status_code == 200 and claimed.json()["token"]

        # A long-poll held by one worker, answered by a cancel made through the other.
        pending = one.post("/v1/requests", json=PROD_RESTART).json()
        assert pending["status"] == "pending"
        with ThreadPoolExecutor(1) as pool:
            poll = pool.submit(one.get, f"/v1/requests/{pending['id']}", params={"wait": 30})
            cancelled = two.post(f"/v1/requests/{pending['id']}/cancel")
            assert cancelled.status_code == 200
            assert poll.result(timeout=60).json()["status"] == "cancelled"

        # SIGHUP to the supervisor: every worker reloads the policy.
        proc.send_signal(signal.SIGHUP)
        eventually(
            lambda: {m.group(1) for m in RELOADED.finditer(log.read_text())},
            until=lambda workers: workers == {"0", "1"},
            timeout=30,
            message="not every worker reloaded the policy",
        )

        # Exactly one of them leads the scheduler.
        leaders = eventually(
            lambda: [whoami(one)[2], whoami(two)[2]],
            until=lambda flags: sorted(flags) == [False, True],
            timeout=30,
            message="not exactly one scheduler leader",
        )
        leader, follower = (one, two) if leaders[0] else (two, one)
        leader_index, leader_pid, _ = whoami(leader)

        # The leader killed: the other worker takes over and the supervisor starts a new one.
        os.kill(leader_pid, signal.SIGKILL)
        eventually(
            lambda: whoami(follower)[2], timeout=30, message="no takeover by the other worker"
        )
        replacement = pinned_client(url, headers, not_on={whoami(follower)[0]})
        stack.callback(replacement.close)
        index_new, pid_new, leads_new = whoami(replacement)
        assert index_new == leader_index and pid_new != leader_pid and not leads_new

        pids = [whoami(follower)[1], pid_new]
        for client in (follower, replacement):
            client.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    output = log.read_text()
    assert "stopping the workers" in output and "all workers stopped" in output
    assert f"exited with status {-signal.SIGKILL}; starting it again" in output
    assert not any(alive(pid) for pid in pids)
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, "needs PostgreSQL"),
        ({"STEPUP_WORKERS": "2"}, "needs PostgreSQL"),
    ],
)
def test_sqlite_is_refused_with_a_clear_message(
    tmp_path: Path, extra: dict[str, str], expected: str
) -> None:
    env = env_for(tmp_path, free_port(), STEPUP_SANDBOX="0", **extra)
    argv = [STEPUP, "serve"] if extra else [STEPUP, "serve", "--workers", "2"]
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert "listening" not in done.stdout


@pytest.mark.postgres
def test_the_sandbox_is_refused_with_workers(postgres_database: str, tmp_path: Path) -> None:
    env = env_for(tmp_path, free_port(), STEPUP_DATABASE_URL=postgres_database)
    done = subprocess.run(
        [STEPUP, "serve", "--workers", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "STEPUP_SANDBOX=0" in done.stderr and "Traceback" not in done.stderr
