"""A light HTTP/1.1 load generator: N keep-alive connections driven by one asyncio loop.

The machine has two cores shared by the server, the database and the generator, so the
generator sends one pre-encoded request and parses only the status line and Content-Length
(a few tens of microseconds per request, against a few hundred for httpx).

``run_phase`` is a closed loop: each connection sends its next request when the previous
answer is in. ``run_open_loop`` is an open loop: requests leave at a fixed rate whatever the
server does, and latency counts from each request's scheduled send time.
"""

from __future__ import annotations

import asyncio
import math
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


# ---------------------------------------------------------------------------------------------
# Open loop: requests leave on a fixed schedule, whatever the answers are doing.


@dataclass
class OpenLoopResult:
    offered_rate: float  # req/s asked for
    sent: int  # requests scheduled (each one is sent, late if no connection was free)
    duration: float  # seconds of the schedule
    elapsed: float  # first scheduled send to last answer (or failure)
    latencies: list[float] = field(repr=False)  # seconds from the *scheduled* send, 2xx only
    statuses: Counter[int]  # every answer, by HTTP status
    failures: Counter[str]  # no answer: by exception class (connection reset, timeout...)
    max_in_flight: int
    max_connections: int  # connections open at once at the peak
    late_sends: int  # sent more than 10 ms after their scheduled time (generator or pool)
    client_cpu: float

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def served_rate(self) -> float:
        """2xx answers per second of the run (schedule start to last answer)."""
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def not_ok(self) -> dict[int, int]:
        return {status: n for status, n in sorted(self.statuses.items()) if not 200 <= status < 300}

    def percentile_ms(self, q: float) -> float:
        """Nearest-rank percentile of the 2xx latencies, in milliseconds."""
        if not self.latencies:
            return float("nan")
        rank = max(1, math.ceil(q / 100 * len(self.latencies)))
        return self.latencies[min(rank, len(self.latencies)) - 1] * 1000


async def run_open_loop(
    port: int,
    request: bytes,
    *,
    rate: float,
    duration: float,
    timeout: float = 30.0,
    max_connections: int = 512,
    idle_close: float = 2.0,
) -> OpenLoopResult:
    """Offer ``rate`` requests a second for ``duration`` seconds, on a fixed schedule.

    Request i is due at start + i/rate. Its latency is measured from that due time, not from
    when it actually left, so a server that falls behind is charged for the wait it causes
    (no coordinated omission). Each request takes an idle keep-alive connection or opens
    one, up to ``max_connections``; beyond that it waits for one, and that wait counts too.
    Connections idle for ``idle_close`` s are dropped (servers close idle ones after a few
    seconds; a write on a connection closed under us would count as a failure).
    """
    count = max(1, round(rate * duration))
    interval = 1.0 / rate
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
    open_connections = 0
    slots = asyncio.Semaphore(max_connections)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    failures: Counter[str] = Counter()
    in_flight = max_in_flight = max_open = late = 0
    last_done = 0.0

    async def connection() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        nonlocal open_connections, max_open
        now = time.perf_counter()
        while idle:
            reader, writer, since = idle.pop()
            if now - since < idle_close and not writer.is_closing():
                return reader, writer
            writer.close()
            open_connections -= 1
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        open_connections += 1
        max_open = max(max_open, open_connections)
        return reader, writer

    async def one(due: float) -> None:
        nonlocal in_flight, max_in_flight, late, last_done, open_connections
        in_flight += 1
        max_in_flight = max(max_in_flight, in_flight)
        try:
            async with slots:
                conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
                try:
                    conn = await connection()
                    if time.perf_counter() - due > 0.010:
                        late += 1
                    status, _body, keep_alive = await asyncio.wait_for(
                        _exchange(*conn, request), timeout
                    )
                except _FAILURES as exc:
                    failures[exc.__class__.__name__] += 1
                    if conn is not None:
                        conn[1].close()
                        open_connections -= 1
                    return
                finally:
                    last_done = max(last_done, time.perf_counter())
                statuses[status] += 1
                if 200 <= status < 300:
                    latencies.append(time.perf_counter() - due)
                if keep_alive:
                    idle.append((conn[0], conn[1], time.perf_counter()))
                else:
                    conn[1].close()
                    open_connections -= 1
        finally:
            in_flight -= 1

    cpu_before = time.process_time()
    start = time.perf_counter() + 0.05
    tasks = []
    for i in range(count):
        due = start + i * interval
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    for _reader, writer, _since in idle:
        writer.close()
    latencies.sort()
    return OpenLoopResult(
        offered_rate=rate,
        sent=count,
        duration=count * interval,
        elapsed=max(last_done - start, count * interval),
        latencies=latencies,
        statuses=statuses,
        failures=failures,
        max_in_flight=max_in_flight,
        max_connections=max_open,
        late_sends=late,
        client_cpu=time.process_time() - cpu_before,
    )
