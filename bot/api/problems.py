"""RFC 9457 problem details for every error the API returns."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.constants import REF_PREFIX
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import (
    Conflict,
    IllegalTransition,
    InvalidToken,
    IssuerFailed,
    LostRace,
    NotEligible,
    NotFound,
    PolicyError,
    StepupError,
    TooManyRequests,
    Unauthenticated,
    ValidationFailed,
)
from core.storage.database import UNAVAILABLE, unavailable_reason

logger = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"

_STATUS: dict[type[StepupError], int] = {
    ValidationFailed: 422,
    NotFound: 404,
    IllegalTransition: 409,
    Conflict: 409,
    NotEligible: 403,
    Unauthenticated: 401,
    InvalidToken: 401,
    PolicyError: 422,
    TooManyRequests: 429,
    IssuerFailed: 502,
}

_TYPES = {
    400: "bad-request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "invalid-input",
    429: "too-many-requests",
    502: "issuer-unavailable",
    500: "internal-error",
    503: "database-unavailable",
}


def problem(
    status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {
        "type": f"https://stepup.dev/problems/{_TYPES.get(status, 'error')}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    body.update(extra)
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="stepup"'}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "header", "path")]
    return ".".join(parts) or "body"


def _document_as_problems(app: FastAPI) -> None:
    """Every error answer is a problem: FastAPI files a route's error models under the route's
    media type (``application/json``) and adds its own ``HTTPValidationError`` 422 to routes
    that declare none, though the handlers below answer every one as ``application/problem+json``
    (``bot.api.schemas.Problem``)."""
    plain = app.openapi
    fastapi_422 = f"{REF_PREFIX}HTTPValidationError"

    def openapi() -> dict[str, Any]:
        built = app.openapi_schema is not None
        document = plain()
        if built:
            return document
        for operation in (op for item in document["paths"].values() for op in item.values()):
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if status[:1] in ("4", "5") and "application/json" in content:
                    media = content[PROBLEM_JSON] = content.pop("application/json")
                    if media.get("schema", {}).get("$ref") == fastapi_422:
                        media["schema"] = {"$ref": f"{REF_PREFIX}Problem"}
        schemas = document.get("components", {}).get("schemas", {})
        if fastapi_422 not in json.dumps(document["paths"]):
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    _document_as_problems(app)

    @app.exception_handler(StepupError)
    async def _stepup_error(request: Request, exc: StepupError) -> JSONResponse:
        status = next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 400)
        extra: dict[str, Any] = {}
        if isinstance(exc, IllegalTransition) and exc.status:
            extra["current_status"] = exc.status
        if isinstance(exc, TooManyRequests):
            metrics = getattr(request.app.state, "metrics", None)
            if metrics is not None:
                metrics.refused.labels(exc.reason).inc()
            extra.update(reason=exc.reason, retry_after=exc.retry_after)
            headers = {"Retry-After": str(exc.retry_after)}
            return problem(status, exc.title, exc.detail, headers, **extra)
        if isinstance(exc, LostRace):  # the database broke a deadlock: the same call succeeds
            return problem(status, exc.title, exc.detail, {"Retry-After": "1"}, **extra)
        return problem(status, exc.title, exc.detail, **extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": "body", "message": f"not valid JSON: {e.get('ctx', {}).get('error', '')}"}
            if e.get("type") == "json_invalid"
            else {"field": _field(tuple(e.get("loc", ()))), "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(422, "Invalid input", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(
            exc.status_code,
            str(exc.detail) if exc.status_code != 404 else "Not found",
            str(exc.detail),
        )

    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        """Down, out of connections, busy: a retry may well succeed. A driver error of the
        same class that says the statement itself is wrong (no such table) is a bug: 500.
        (Handled here, not as an unexpected error, so the connection stays open for the
        client's next call.)"""
        reason = unavailable_reason(exc)
        if reason is None:
            return _internal_error(request)
        logger.warning(
            "database unavailable on %s %s: %s", request.method, request.url.path, reason
        )
        return problem(
            503,
            "Database unavailable",
            "the server could not reach its database; retry after 1 s (a submit with an "
            "Idempotency-Key is safe to send again)",
            {"Retry-After": "1"},
        )

    for unavailable in UNAVAILABLE:
        app.add_exception_handler(unavailable, _unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _internal_error(request)


def _internal_error(request: Request) -> JSONResponse:
    """Logged with its traceback (called while the exception is being handled)."""
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(500, "Internal error", "the server failed to process the request")
