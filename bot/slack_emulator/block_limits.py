"""The Block Kit limits Slack enforces, so a payload that Slack would refuse fails here too.

From Slack's Block Kit reference: a message holds at most 50 blocks and a view 100; every text
object has 1 to 3,000 characters; a header's text at most 150, a section field's 2,000 and a
section at most 10 fields; a context at most 10 elements and an actions block 25; a button's
text 75 and value 2,000; action and block ids 255; a confirmation dialog's title 100, text
300 and buttons 30; an input's label 2,000 and a plain_text_input's lengths 3,000; a modal's
title, submit and close 24, its private_metadata 3,000, its callback and external ids 255.
A message's text is at most 40,000 characters.
"""

from __future__ import annotations

from typing import Any

from bot.slack_emulator.workspace import ApiError

MESSAGE_BLOCKS = 50
VIEW_BLOCKS = 100
MESSAGE_TEXT = 40_000
TEXT_OBJECT = 3_000
SECTION_TEXT = 3_000
HEADER_TEXT = 150
FIELD_TEXT = 2_000
MAX_FIELDS = 10
CONTEXT_ELEMENTS = 10
ACTIONS_ELEMENTS = 25
BUTTON_TEXT = 75
BUTTON_VALUE = 2_000
ACTION_ID = 255
BLOCK_ID = 255
CONFIRM_TITLE = 100
CONFIRM_TEXT = 300
CONFIRM_BUTTON = 30
INPUT_LABEL = 2_000
INPUT_HINT = 2_000
INPUT_LENGTH = 3_000
PLACEHOLDER = 150
MODAL_TITLE = 24
MODAL_BUTTON = 24
PRIVATE_METADATA = 3_000
VIEW_ID_FIELDS = 255  # callback_id, external_id
TEXT_TYPES = ("plain_text", "mrkdwn")


def check_text(text: str) -> None:
    if len(text) > MESSAGE_TEXT:
        raise ApiError("msg_too_long")


def check_blocks(blocks: object, *, limit: int, error: str) -> list[dict[str, Any]] | None:
    """``blocks`` as a list of block dicts, or ``error`` with Slack-like reasons."""
    if blocks is None or blocks == "":
        return None
    if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
        raise ApiError(error, "[ERROR] blocks must be a list of objects")
    if len(blocks) > limit:
        raise ApiError(error, f"[ERROR] no more than {limit} items allowed [json-pointer:/blocks]")
    for index, block in enumerate(blocks):
        problem = _block_problem(block)
        if problem:
            raise ApiError(error, f"[ERROR] {problem} [json-pointer:/blocks/{index}]")
    return blocks


def check_view(spec: dict[str, Any], *, error: str = "invalid_arguments") -> None:
    """A view's own fields (title, buttons, metadata, ids), then its blocks."""
    problem = None
    if spec.get("type") == "modal":
        for name in ("title", "submit", "close"):
            if name in spec:
                problem = problem or _text_problem(spec[name], MODAL_TITLE, plain_only=True)
    metadata = spec.get("private_metadata")
    if metadata is not None and len(str(metadata)) > PRIVATE_METADATA:
        problem = problem or f"must be less than {PRIVATE_METADATA + 1} characters"
    for name in ("callback_id", "external_id"):
        if len(str(spec.get(name) or "")) > VIEW_ID_FIELDS:
            problem = problem or f"must be less than {VIEW_ID_FIELDS + 1} characters"
    if problem:
        raise ApiError(error, f"[ERROR] {problem} [json-pointer:/view]")
    check_blocks(spec.get("blocks", []), limit=VIEW_BLOCKS, error=error)


def _too_long(limit: int) -> str:
    return f"must be less than {limit + 1} characters"


def _text_problem(obj: object, limit: int, *, plain_only: bool = False) -> str | None:
    """A text object: a known type, 1 to ``limit`` characters."""
    if not isinstance(obj, dict):
        return "must be a text object"
    kind = obj.get("type")
    if kind not in TEXT_TYPES or (plain_only and kind != "plain_text"):
        return "must be a plain_text object" if plain_only else "must be a text object"
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return "must be more than 0 characters"
    if len(text) > limit:
        return _too_long(limit)
    return None


def _block_problem(block: dict[str, Any]) -> str | None:
    kind = block.get("type")
    if not isinstance(kind, str) or not kind:
        return "missing required field: type"
    if len(str(block.get("block_id") or "")) > BLOCK_ID:
        return _too_long(BLOCK_ID)
    if kind == "header":
        return _text_problem(block.get("text"), HEADER_TEXT, plain_only=True)
    if kind == "section":
        problem = _section_problem(block)
        if problem:
            return problem
    if kind == "context":
        elements = block.get("elements") or []
        if len(elements) > CONTEXT_ELEMENTS:
            return f"no more than {CONTEXT_ELEMENTS} items allowed"
        for element in elements:
            if isinstance(element, dict) and element.get("type") in TEXT_TYPES:
                problem = _text_problem(element, TEXT_OBJECT)
                if problem:
                    return problem
        return None
    if kind == "actions" and len(block.get("elements") or []) > ACTIONS_ELEMENTS:
        return f"no more than {ACTIONS_ELEMENTS} items allowed"
    if kind == "input":
        problem = _text_problem(block.get("label"), INPUT_LABEL, plain_only=True)
        if problem is None and "hint" in block:
            problem = _text_problem(block["hint"], INPUT_HINT, plain_only=True)
        if problem:
            return problem
    elements = list(block.get("elements") or []) if kind != "context" else []
    for name in ("accessory", "element"):
        if isinstance(block.get(name), dict):
            elements.append(block[name])
    for element in elements:
        if isinstance(element, dict):
            problem = _element_problem(element)
            if problem:
                return problem
    return None


def _section_problem(block: dict[str, Any]) -> str | None:
    fields = block.get("fields")
    if "text" not in block and not fields:
        return "must provide either text or fields"
    if "text" in block:
        problem = _text_problem(block["text"], SECTION_TEXT)
        if problem:
            return problem
    if fields is not None:
        if not isinstance(fields, list) or len(fields) > MAX_FIELDS:
            return f"no more than {MAX_FIELDS} items allowed"
        for item in fields:
            problem = _text_problem(item, FIELD_TEXT)
            if problem:
                return problem
    return None


def _element_problem(element: dict[str, Any]) -> str | None:
    if len(str(element.get("action_id", ""))) > ACTION_ID:
        return _too_long(ACTION_ID)
    kind = element.get("type")
    if kind == "button":
        problem = _text_problem(element.get("text"), BUTTON_TEXT, plain_only=True)
        if problem:
            return problem
        if len(str(element.get("value", ""))) > BUTTON_VALUE:
            return _too_long(BUTTON_VALUE)
        style = element.get("style")
        if style is not None and style not in ("primary", "danger"):
            return "must be one of primary, danger"
    if isinstance(element.get("confirm"), dict):
        problem = _confirm_problem(element["confirm"])
        if problem:
            return problem
    if kind == "plain_text_input":
        for name in ("min_length", "max_length"):
            value = element.get(name)
            if value is not None and (not isinstance(value, int) or value > INPUT_LENGTH):
                return f"must be no more than {INPUT_LENGTH}"
        if "placeholder" in element:
            return _text_problem(element["placeholder"], PLACEHOLDER, plain_only=True)
    return None


def _confirm_problem(confirm: dict[str, Any]) -> str | None:
    return (
        _text_problem(confirm.get("title"), CONFIRM_TITLE, plain_only=True)
        or _text_problem(confirm.get("text"), CONFIRM_TEXT)
        or _text_problem(confirm.get("confirm"), CONFIRM_BUTTON, plain_only=True)
        or _text_problem(confirm.get("deny"), CONFIRM_BUTTON, plain_only=True)
    )
