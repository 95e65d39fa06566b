"""A light HTTP/1.1 load generator: N keep-alive connections driven by one asyncio loop.

The machine has two cores shared by the server, the database and the generator, so the
generator sends one pre-encoded request and parses only the status line and Content-Length
(a few tens of microseconds per request, against a few hundred for httpx). Closed loop:
each connection sends its next request when the previous answer is in.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field


class ProtocolError(Exception):
    """The answer is not an HTTP/1.1 response with a Content-Length."""


@dataclass
class PhaseResult:
    requests: int  # answered with the expected status
    errors: int
    elapsed: float  # wall-clock seconds, first send to last answer
    latencies: list[float] = field(repr=False)  # seconds, sorted, expected answers only
    statuses: Counter[int]
    client_cpu: float  # CPU seconds the generator used

    @property
    def rate(self) -> float:
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        """Nearest-rank percentile, in milliseconds."""
        if not self.latencies:
            return float("nan")
        rank = max(1, round(q / 100 * len(self.latencies)))
        return self.latencies[min(rank, len(self.latencies)) - 1] * 1000


def encode_post(path: str, *, port: int, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, keep_alive)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ProtocolError(f"bad status line {lines[0][:80]!r}")
    status = int(parts[1])
    length: int | None = None
    keep_alive = True
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            keep_alive = False
        elif name == b"transfer-encoding":
            raise ProtocolError("chunked answers are not supported")
    if length is None:
        raise ProtocolError("no Content-Length")
    body = await reader.readexactly(length)
    return status, body, keep_alive


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes, bool]:
    writer.write(request)
    await writer.drain()
    return await _read_response(reader)


_FAILURES = (OSError, TimeoutError, asyncio.IncompleteReadError, ProtocolError, ValueError)


async def run_phase(
    port: int,
    request: bytes,
    *,
    total: int,
    concurrency: int,
    expect: int,
    timeout: float = 60.0,
    max_errors: int = 100,
) -> PhaseResult:
    """Send ``total`` requests over ``concurrency`` connections; stop after ``max_errors``."""
    remaining = total
    errors = 0
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    first_error: list[str] = []

    async def connection() -> None:
        nonlocal remaining, errors
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while remaining > 0 and errors < max_errors:
                remaining -= 1
                try:
                    if conn is None:
                        conn = await asyncio.wait_for(
                            asyncio.open_connection("127.0.0.1", port), timeout
                        )
                    started = time.perf_counter()
                    status, body, keep_alive = await asyncio.wait_for(
                        _exchange(*conn, request), timeout
                    )
                    took = time.perf_counter() - started
                except _FAILURES as exc:
                    errors += 1
                    first_error[:] = first_error or [f"{exc.__class__.__name__}: {exc}"]
                    if conn is not None:
                        conn[1].close()
                    conn = None
                    continue
                statuses[status] += 1
                if status == expect:
                    latencies.append(took)
                else:
                    errors += 1
                    first_error[:] = first_error or [f"HTTP {status}: {body[:200]!r}"]
                if not keep_alive:
                    conn[1].close()
                    conn = None
        finally:
            if conn is not None:
                conn[1].close()

    cpu_before = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    if errors and first_error:
        print(f"    {errors} errors; first: {first_error[0]}")
    latencies.sort()
    return PhaseResult(
        requests=len(latencies),
        errors=errors,
        elapsed=elapsed,
        latencies=latencies,
        statuses=statuses,
        client_cpu=time.process_time() - cpu_before,
    )
