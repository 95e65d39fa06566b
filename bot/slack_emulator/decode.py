"""Turn a Web API request body into parameters, whichever way the client encoded it.

slack_sdk sends JSON for some methods, form fields for others (multipart when a file is
attached); in forms, structured fields such as ``blocks`` arrive as JSON strings.
"""

from __future__ import annotations

import json
from email.message import Message as MimeMessage
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qsl

JSON_FIELDS = frozenset({"blocks", "attachments", "view", "metadata"})


class BadRequestBody(ValueError):
    """The body does not parse as its content type says."""


def decode_params(content_type: str, body: bytes, query: str) -> dict[str, Any]:
    params: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/json":
        params.update(_json_object(body))
    elif kind == "multipart/form-data":
        params.update(_multipart(content_type, body))
    elif body:
        text = body.decode("utf-8", errors="replace")
        params.update(parse_qsl(text, keep_blank_values=True))
    for key in JSON_FIELDS & params.keys():
        params[key] = _maybe_json(params[key])
    return params


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body or b"{}")
    except ValueError:
        raise BadRequestBody("invalid_json") from None
    if not isinstance(parsed, dict):
        raise BadRequestBody("invalid_json")
    return parsed


def _multipart(content_type: str, body: bytes) -> dict[str, Any]:
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    mime = BytesParser(policy=HTTP).parsebytes(head + body)
    fields: dict[str, Any] = {}
    for part in mime.iter_parts() if mime.is_multipart() else ():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        fields[name] = _part_value(part)
    return fields


def _part_value(part: MimeMessage) -> Any:
    payload = part.get_payload(decode=True)
    raw = payload if isinstance(payload, bytes) else b""
    if part.get_filename():
        return {"filename": part.get_filename(), "size": len(raw)}
    return raw.decode("utf-8", errors="replace")


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
