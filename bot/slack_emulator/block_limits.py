"""The Block Kit limits Slack enforces, so a card that Slack would refuse fails here too.

Only the limits a bot is likely to hit are checked: block counts, text lengths in sections,
headers and buttons, and button values (where parameters or digests tend to end up).
"""

from __future__ import annotations

from typing import Any

from bot.slack_emulator.workspace import ApiError

MESSAGE_BLOCKS = 50
VIEW_BLOCKS = 100
MESSAGE_TEXT = 40_000
SECTION_TEXT = 3_000
HEADER_TEXT = 150
BUTTON_TEXT = 75
BUTTON_VALUE = 2_000
ACTION_ID = 255


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


def _block_problem(block: dict[str, Any]) -> str | None:
    kind = block.get("type")
    if not isinstance(kind, str) or not kind:
        return "missing required field: type"
    if kind == "header" and len(_text(block.get("text"))) > HEADER_TEXT:
        return f"must be less than {HEADER_TEXT + 1} characters"
    if kind == "section":
        if len(_text(block.get("text"))) > SECTION_TEXT:
            return f"must be less than {SECTION_TEXT + 1} characters"
        for item in block.get("fields") or []:
            if len(_text(item)) > 2_000:
                return "must be less than 2001 characters"
    elements = list(block.get("elements") or [])
    if isinstance(block.get("accessory"), dict):
        elements.append(block["accessory"])
    for element in elements:
        if isinstance(element, dict):
            problem = _element_problem(element)
            if problem:
                return problem
    return None


def _element_problem(element: dict[str, Any]) -> str | None:
    if len(str(element.get("action_id", ""))) > ACTION_ID:
        return f"must be less than {ACTION_ID + 1} characters"
    if element.get("type") == "button":
        if len(_text(element.get("text"))) > BUTTON_TEXT:
            return f"must be less than {BUTTON_TEXT + 1} characters"
        if len(str(element.get("value", ""))) > BUTTON_VALUE:
            return f"must be less than {BUTTON_VALUE + 1} characters"
        style = element.get("style")
        if style is not None and style not in ("primary", "danger"):
            return "must be one of primary, danger"
    return None


def _text(obj: object) -> str:
    if isinstance(obj, dict):
        return str(obj.get("text", ""))
    return "" if obj is None else str(obj)
