"""HTTP calls with retries, and problem details turned into ``ApiError``."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import httpx

from stepup_client.errors import ApiError, ConnectionFailed, ProtocolError

logger = logging.getLogger("stepup_client")

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
# These never reached the server, so even a non-idempotent call may be sent again.
_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
MAX_RETRY_AFTER_SECONDS = 30.0
# The server's admission control (503 with this problem type) refuses a request before doing
# anything with it: no body read, no authentication, no database. So even a call that must not
# be repeated once it has run (a claim, a delegation) may be sent again after it.
OVERLOADED_TYPE = "https://stepup.dev/problems/overloaded"


class Retry(Enum):
    """When a call may be sent again."""

    SAFE = "safe"  # repeating it changes nothing: reads, keyed submits, reconciled completes
    UNSENT = "unsent"  # only when the first attempt never left the client (claim)


@dataclass(frozen=True, slots=True)
class Answer:
    status_code: int
    body: dict[str, Any]
    attempts: int


class Http:
    def __init__(
        self,
        client: httpx.Client,
        *,
        retries: int,
        backoff: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._retries = retries
        self._backoff = backoff
        self._sleep = sleep

    def call(
        self,
        method: str,
        path: str,
        *,
        retry: Retry,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Answer:
        attempt = 0
        while True:
            attempt += 1
            last = attempt > self._retries
            try:
                response = self._client.request(
                    method,
                    path,
                    json=json,
                    params=params,
                    headers=headers,
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TransportError as exc:
                if last or not (retry is Retry.SAFE or isinstance(exc, _UNSENT)):
                    raise ConnectionFailed(
                        f"{method} {path}: {exc.__class__.__name__}: {exc}"
                    ) from exc
                logger.warning(
                    "stepup %s %s failed (%s); retrying", method, path, exc.__class__.__name__
                )
                self._sleep(self._delay(attempt, None))
                continue
            repeatable = retry is Retry.SAFE or _refused_unread(response)
            if response.status_code in RETRYABLE_STATUS and repeatable and not last:
                logger.warning(
                    "stepup %s %s answered %s; retrying", method, path, response.status_code
                )
                self._sleep(self._delay(attempt, response.headers.get("Retry-After")))
                continue
            if response.status_code >= 400:
                raise problem_of(response, attempts=attempt)
            return Answer(response.status_code, _json_object(response), attempt)

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        jitter = random.uniform(0, self._backoff)  # spreads out agents refused at one moment
        if retry_after is not None and retry_after.strip().isdigit():
            return min(float(retry_after), MAX_RETRY_AFTER_SECONDS) + jitter
        return self._backoff * 2.0 ** (attempt - 1) + jitter


def _refused_unread(response: httpx.Response) -> bool:
    """A 503 from the server's admission control: nothing was done with the request."""
    if response.status_code != 503:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("type") == OVERLOADED_TYPE


def problem_of(response: httpx.Response, *, attempts: int = 1) -> ApiError:
    """An RFC 9457 problem as ``ApiError``; any other error body is summarised."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        title = body.get("title")
        detail = body.get("detail")
        kind = body.get("type")
        return ApiError(
            response.status_code,
            title if isinstance(title, str) else response.reason_phrase,
            detail if isinstance(detail, str) else "",
            type=kind if isinstance(kind, str) else "about:blank",
            body=body,
            attempts=attempts,
        )
    return ApiError(
        response.status_code, response.reason_phrase, response.text[:200], attempts=attempts
    )


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise ProtocolError(f"{response.request.url.path}: the answer is not JSON") from None
    if not isinstance(body, dict):
        raise ProtocolError(f"{response.request.url.path}: the answer is not a JSON object")
    return body
