"""Workload identity cost: a submit authenticated by a workload token (an OIDC JWT, RS256 or
ES256) against the same submit with a static agent key, on one stepup server, same run.

One stepup server process on loopback; one agent with both a static key and a workload
identity bound (``stepup agents add --oidc``), so the only difference between the two loads is
the ``Authorization`` header. The OIDC provider is served by this process on loopback (its
discovery document and JWKS, fetched once by the server). Static and JWT phases alternate,
``--rounds`` times; the verdict is the median of the per-round ratios JWT / static.

    .venv/bin/python bench/identity_bench.py                 # ~8 min on 2 cores
    .venv/bin/python bench/identity_bench.py --quick         # ~1 min
    .venv/bin/python bench/identity_bench.py --dbs sqlite --alg ES256
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from api_bench import (
    INTENT,
    Row,
    check_once,
    measure,
    postgres_unreachable,
    print_rows,
    scratch_database,
    server_env,
)
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from loadgen import encode_post
from procs import free_port, start, stop

GOAL = 0.9
AUDIENCE = "stepup-bench"
SUBJECT = "system:serviceaccount:bench:bench-bot"
FULL = {"requests": 3000, "warmup": 300, "rounds": 6}
QUICK = {"requests": 1000, "warmup": 200, "rounds": 2}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="JWT-authenticated submit vs a static key.")
    parser.add_argument("--dbs", default="sqlite,postgres", help="comma-separated list")
    parser.add_argument("--requests", type=int, help="timed requests per phase (3000)")
    parser.add_argument("--warmup", type=int, help="untimed requests per phase first (300)")
    parser.add_argument("--rounds", type=int, help="static/JWT pairs per database (6)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--alg", choices=("RS256", "ES256"), default="RS256")
    parser.add_argument(
        "--postgres-admin-url",
        default=os.environ.get(
            "STEPUP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--quick", action="store_true", help="sizes " + str(QUICK))
    args = parser.parse_args()
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if min(args.requests, args.warmup, args.concurrency, args.rounds) < 1:
        parser.error("sizes must be at least 1")
    args.dbs = [name.strip() for name in args.dbs.split(",") if name.strip()]
    return args


class Provider:
    """An OIDC provider on loopback: discovery document and JWKS; signs the bench's token."""

    def __init__(self, alg: str) -> None:
        self.alg = alg
        self.key: Any = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if alg == "RS256"
            else ec.generate_private_key(ec.SECP256R1())
        )
        algorithm: Any = RSAAlgorithm if alg == "RS256" else ECAlgorithm
        self.jwk = json.loads(algorithm.to_jwk(self.key.public_key())) | {"kid": "bench-1"}
        self.url = ""
        self.fetches = 0

    def token(self, lifetime: int = 3600) -> str:
        now = int(time.time())
        claims = {"iss": self.url, "sub": SUBJECT, "aud": AUDIENCE, "iat": now}
        claims["exp"] = now + lifetime
        return jwt.encode(claims, self.key, algorithm=self.alg, headers={"kid": "bench-1"})

    @contextmanager
    def serving(self) -> Iterator[Provider]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.fetches += 1
                if self.path == "/.well-known/openid-configuration":
                    body: dict[str, Any] = {
                        "issuer": provider.url,
                        "jwks_uri": provider.url + "/jwks",
                    }
                else:
                    body = {"keys": [provider.jwk]}
                payload = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)


def cli(stepup_cli: str, env: dict[str, str], workdir: Path, *args: str) -> str:
    done = subprocess.run(
        [stepup_cli, *args], env=env, cwd=workdir, capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"stepup {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def bench_database(kind: str, workdir: Path, args: argparse.Namespace) -> list[Row]:
    stepup_cli = str(Path(sys.executable).parent / "stepup")
    body = json.dumps(INTENT).encode()
    rows: list[Row] = []
    with ExitStack() as stack:
        provider = stack.enter_context(Provider(args.alg).serving())
        url = stack.enter_context(scratch_database(kind, workdir, args.postgres_admin_url))
        port = free_port()
        env = server_env(url, workdir, port)
        cli(stepup_cli, env, workdir, "db", "upgrade")
        cli(stepup_cli, env, workdir, "trust", "add-oidc", "bench", "--issuer", provider.url,
            "--audience", AUDIENCE)  # fmt: skip
        added = cli(stepup_cli, env, workdir, "agents", "add", "bench-bot", "--owner",
                    "bench@example.com", "--oidc", f"bench:{SUBJECT}")  # fmt: skip
        key = added.strip().splitlines()[-1]
        token = provider.token()
        server = start("stepup", [stepup_cli, "serve"], port=port, env=env, cwd=workdir)
        stack.callback(stop, server)
        phases = {}
        for name, credential in (("static", key), ("jwt", token)):
            headers = {"Authorization": f"Bearer {credential}"}
            check_once(port, "/v1/requests", body, headers)
            phases[name] = encode_post("/v1/requests", port=port, body=body, headers=headers)
        for round_no in range(1, args.rounds + 1):
            # ABBA: odd rounds measure the static key first, even rounds the token first, so
            # a drift of the machine's load (a shared 2-core box) weighs on both alike.
            order = ("static", "jwt") if round_no % 2 else ("jwt", "static")
            measured = {name: measure(server, phases[name], kind, round_no, args) for name in order}
            static, token_row = measured["static"], measured["jwt"]
            static.target = "static"
            token_row.target = f"jwt-{args.alg}"
            token_row.ratio = token_row.rate / static.rate
            rows += [static, token_row]
            print_rows([static, token_row], header=round_no == 1)
        print(f"  the server fetched the provider's documents {provider.fetches} times")
    return rows


def summarise(rows: list[Row]) -> None:
    print("\nSummary")
    for db in dict.fromkeys(r.db for r in rows):
        ratios = [r.ratio for r in rows if r.db == db and r.ratio is not None]
        ratio = statistics.median(ratios)
        verdict = "meets" if ratio >= GOAL else "is BELOW"
        print(
            f"  {db}: JWT-authenticated submit at {ratio:.0%} of the static key's throughput "
            f"(median of {len(ratios)} rounds: {', '.join(f'{r:.0%}' for r in ratios)}) "
            f"{verdict} the {GOAL:.0%} goal"
        )


def main() -> None:
    args = parse_args()
    rows: list[Row] = []
    print(
        f"stepup identity bench: {args.concurrency} clients, {args.requests} requests per phase "
        f"after {args.warmup} warm-up, {args.rounds} rounds, {args.alg}, {os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory(prefix="stepup-identity-bench-") as tmp:
        for kind in args.dbs:
            print(f"\n[{kind}]")
            reason = postgres_unreachable(args.postgres_admin_url) if kind == "postgres" else None
            if reason is not None:
                print(f"  skipped: {reason}")
                continue
            workdir = Path(tmp) / kind
            workdir.mkdir()
            rows += bench_database(kind, workdir, args)
    if rows:
        summarise(rows)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    main()
