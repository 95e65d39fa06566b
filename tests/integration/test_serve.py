"""`stepup serve` as a real process: starts on its defaults, says where it listens, refuses a
bad policy, and its sweep at start-up catches deadlines that passed while it was down."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.integration.live import free_port
from tests.support import eventually, submit_body

# A read on staging: allowed at once by the example policy and by the tests' own.
STAGING_READ = submit_body(
    action="db.query",
    action_class="read",
    target="orders-db",
    environment="staging",
    justification="check",
)

STEPUP = str(Path(sys.executable).parent / "stepup")
REPO = Path(__file__).resolve().parents[2]


def env_for(tmp: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STEPUP_", "SLACK_"))}
    env.update(
        STEPUP_POLICY_FILE=str(REPO / "manifests" / "policy.example.yaml"),
        STEPUP_PORT=str(port),
        STEPUP_SWEEP_INTERVAL_SECONDS="0.5",
    )
    env.update(extra)
    return env


def add_agent(env: dict[str, str], cwd: Path, agent_id: str) -> str:
    """Register an agent through the real `stepup agents add`; its key (the last line)."""
    added = subprocess.run(
        [STEPUP, "agents", "add", agent_id, "--owner", "owner@example.com"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return added.stdout.strip().splitlines()[-1]


@contextmanager
def serving(tmp: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [STEPUP, "serve"],
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{env['STEPUP_PORT']}/healthz"

        def health() -> int:
            if proc.poll() is not None:
                raise AssertionError(
                    f"serve exited early: {proc.stdout.read() if proc.stdout else ''}"
                )
            return httpx.get(url, timeout=1).status_code

        eventually(
            health,
            until=lambda code: code == 200,
            timeout=30,
            interval=0.1,
            ignoring=(httpx.TransportError,),
            message="serve did not become healthy",
        )
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_serve_on_embedded_defaults(tmp_path: Path) -> None:
    port = free_port()
    with serving(tmp_path, env_for(tmp_path, port)) as proc:
        assert httpx.get(f"http://127.0.0.1:{port}/.well-known/jwks.json").json()["keys"]
        assert httpx.get(f"http://127.0.0.1:{port}/sandbox").status_code == 200
        proc.send_signal(signal.SIGTERM)
        output = proc.stdout.read() if proc.stdout else ""
        proc.wait(timeout=10)
    assert f"listening on http://127.0.0.1:{port}" in output
    # SIGTERM: uvicorn shuts down, then the clean-up runs (it re-raised the signal and the
    # process died before it) and the process exits 0.
    assert "stepup stopped" in output and proc.returncode == 0
    # No Slack token on loopback: the Slack sandbox (docs/sandbox.md).
    assert f"Slack sandbox: http://127.0.0.1:{port}/sandbox" in output
    assert (tmp_path / ".stepup" / "stepup.db").exists()
    assert (tmp_path / ".stepup" / "keys").stat().st_mode & 0o077 == 0


def test_serve_with_the_sandbox_switched_off(tmp_path: Path) -> None:
    port = free_port()
    with serving(tmp_path, env_for(tmp_path, port, STEPUP_SANDBOX="0")) as proc:
        assert httpx.get(f"http://127.0.0.1:{port}/sandbox").status_code == 404
        proc.send_signal(signal.SIGTERM)
        output = proc.stdout.read() if proc.stdout else ""
        proc.wait(timeout=10)
    assert "Slack sandbox off: STEPUP_SANDBOX is off" in output
    assert "Slack sandbox:" not in output


def test_serve_refuses_an_invalid_policy(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\nrules:\n  - name: oops\n    match: {}\n"
        "    decision: approve\n    aprovers: nobody\n"
    )
    result = subprocess.run(
        [STEPUP, "serve"],
        cwd=tmp_path,
        env=env_for(tmp_path, free_port(), STEPUP_POLICY_FILE=str(bad)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "oops" in result.stderr and "aprovers" in result.stderr
    # The error names the file: the operator may not know which one STEPUP_POLICY_FILE named.
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors[0].startswith(f"error: {bad}: rules[0] (oops)"), result.stderr


def test_restart_sweeps_what_fell_due_while_down(tmp_path: Path) -> None:
    """kill -9 with an active credential; restart after its TTL: revoked at once."""
    port = free_port()
    env = env_for(tmp_path, port)
    key = add_agent(env, tmp_path, "demo-bot")
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    body = STAGING_READ | {"requested_ttl_seconds": 1}
    with serving(tmp_path, env) as proc:
        req = httpx.post(f"{base}/v1/requests", json=body, headers=headers).json()
        assert req["status"] == "approved", req
        assert (
            httpx.post(f"{base}/v1/requests/{req['id']}/credential", headers=headers).status_code
            == 200
        )
        proc.kill()  # no clean shutdown: the deadline job dies with the process
        proc.wait()
    time.sleep(1.5)
    with serving(tmp_path, env):
        status = httpx.get(f"{base}/v1/requests/{req['id']}", headers=headers).json()["status"]
    assert status == "revoked"
    verify = subprocess.run(
        [STEPUP, "audit", "verify"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stderr


def test_sighup_reloads_the_policy_and_a_bad_reload_keeps_the_old_one(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    allow_reads = "version: 1\nrules:\n  - name: reads\n    match: { action_class: read }\n    decision: allow\n"
    policy.write_text(allow_reads)
    port = free_port()
    env = env_for(tmp_path, port, STEPUP_POLICY_FILE=str(policy))
    key = add_agent(env, tmp_path, "demo-bot")
    body = STAGING_READ
    base, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}

    def status() -> str:
        return str(httpx.post(f"{base}/v1/requests", json=body, headers=headers).json()["status"])

    lines: list[str] = []

    def read_output(proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    with serving(tmp_path, env) as proc:
        reader = threading.Thread(target=read_output, args=(proc,), daemon=True)
        reader.start()
        assert status() == "approved"
        policy.write_text("version: 1\nrules: []\n")  # deny everything
        proc.send_signal(signal.SIGHUP)
        eventually(status, until=lambda s: s == "denied", interval=0.1, message="not reloaded")
        policy.write_text(allow_reads.replace("decision: allow", "decision: alow"))  # broken
        proc.send_signal(signal.SIGHUP)
        # Wait for the refusal itself, so the check below runs after the bad reload was tried.
        eventually(
            lambda: "".join(lines),
            until=lambda out: "policy reload refused" in out,
            message="the bad reload was not refused",
        )
        assert status() == "denied"  # the policy in force was kept
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    reader.join(timeout=10)
    output = "".join(lines)
    assert "policy reload refused" in output and "policy reloaded" in output


def test_a_busy_port_exits_non_zero_naming_it(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = subprocess.run(
            [STEPUP, "serve"],
            cwd=tmp_path,
            env=env_for(tmp_path, port),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"error: cannot listen on 127.0.0.1:{port}: port {port} is already in use" in (
        result.stderr
    )
    assert "listening on" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_the_pid_comes_first_and_listening_only_once_bound(tmp_path: Path) -> None:
    port = free_port()
    env = env_for(tmp_path, port, STEPUP_SANDBOX="0", STEPUP_SECURITY_CHANNEL="C0SECURITY")
    with serving(tmp_path, env) as proc:
        key = add_agent(env, tmp_path, "probe-bot")
        headers = {"Authorization": f"Bearer {key}"}
        pending = submit_body(
            action="k8s.rollout_restart",
            action_class="destructive",
            target="payments-api",
            environment="production",
            justification="a card nobody would deliver",
        )
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/requests", json=pending, headers=headers, timeout=10
        )
        assert answer.json()["status"] == "pending"
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert "\nstepup_outbox_pending 0.0\n" in metrics  # no Slack: nothing queued for it
        proc.send_signal(signal.SIGTERM)
        output = proc.stdout.read() if proc.stdout else ""
        proc.wait(timeout=10)
    lines = output.splitlines()
    assert f"stepup starting, pid {proc.pid} (kill -HUP {proc.pid}" in lines[0]
    assert "nothing is queued for Slack" in output
    assert "no daily digest" not in output
    [listening] = [line for line in lines if "listening on" in line]
    assert listening.startswith(f"stepup listening on http://127.0.0.1:{port} ")
