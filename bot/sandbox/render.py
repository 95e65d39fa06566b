"""Block Kit to HTML, as Slack shows it, for the sandbox page.

Everything is escaped: block text is mostly agent-written. mrkdwn is read the way Slack reads
it — ``&amp;``, ``&lt;`` and ``&gt;`` are the literal characters, ``<…>`` is markup, code spans
and blocks are left as written — and then written out with ``html.escape``. Any block type,
element or text object this renderer does not know shows the visible ``UNSUPPORTED`` marker
(and its type), so a test can prove every surface the bot sends renders honestly.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

UNSUPPORTED_CLASS = "sk-unsupported"
Json = Mapping[str, Any]

EMOJI = {
    "arrow_up": "\u2b06\ufe0f",
    "bell": "\U0001f514",
    "checkered_flag": "\U0001f3c1",
    "heavy_multiplication_x": "\u2716\ufe0f",
    "hourglass": "\u231b",
    "hourglass_flowing_sand": "\u23f3",
    "key": "\U0001f511",
    "lock": "\U0001f512",
    "no_entry": "\u26d4",
    "octagonal_sign": "\U0001f6d1",
    "rotating_light": "\U0001f6a8",
    "warning": "\u26a0\ufe0f",
    "white_check_mark": "\u2705",
    "x": "\u274c",
}
_EMOJI = re.compile(r":([a-z0-9_+-]+):")
_CODE = re.compile(r"```(.*?)```|`([^`\n]*)`", re.DOTALL)
_ANGLE = re.compile(r"<([^<>]*)>")
_STYLES = (
    (re.compile(r"(?<![\w*])\*(?=\S)([^*\n]*?\S)\*(?![\w*])"), "b"),
    (re.compile(r"(?<![\w_])_(?=\S)([^_\n]*?\S)_(?![\w_])"), "i"),
    (re.compile(r"(?<![\w~])~(?=\S)([^~\n]*?\S)~(?![\w~])"), "s"),
)


def unsupported(kind: str, what: object) -> str:
    return (
        f'<div class="{UNSUPPORTED_CLASS}" data-unsupported="{_attr(kind)}">'
        f"UNSUPPORTED {html.escape(kind)}: {html.escape(str(what))}</div>"
    )


def _attr(value: object) -> str:
    return html.escape(str(value), quote=True)


def _unslack(text: str) -> str:
    """Slack's three entities back to the characters they stand for."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _emoji(escaped: str) -> str:
    return _EMOJI.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), escaped)


def _lines(escaped: str) -> str:
    return escaped.replace("\r\n", "\n").replace("\n", "<br>")


def plain_html(text: str, *, emoji: bool = False) -> str:
    escaped = html.escape(text)
    return _lines(_emoji(escaped) if emoji else escaped)


def _token(inner: str, names: Callable[[str], str]) -> str:
    """One ``<…>``: a date, a mention, a link; anything else shown as written."""
    if inner.startswith("!date^"):
        parts = inner.split("|", 1)
        fields = parts[0].split("^")
        fallback = parts[1] if len(parts) > 1 else ""
        try:
            at = datetime.fromtimestamp(int(fields[1]), UTC)
        except (IndexError, ValueError, OverflowError):
            return html.escape(_unslack(fallback))
        shown = at.strftime("%Y-%m-%d %H:%M:%S UTC")
        return f'<time datetime="{at.isoformat()}">{html.escape(shown)}</time>'
    if inner.startswith(("@U", "@W")):
        user = inner[1:].split("|", 1)[0]
        return f'<span class="sk-mention">@{html.escape(names(user))}</span>'
    if inner.startswith("#C"):
        channel = inner.split("|", 1)
        label = channel[1] if len(channel) > 1 else channel[0]
        return f'<span class="sk-mention">#{html.escape(_unslack(label))}</span>'
    if inner.startswith("!"):
        word = inner[1:].split("|", 1)[-1].split("^", 1)[0]
        return f'<span class="sk-mention">@{html.escape(_unslack(word))}</span>'
    url, _, label = inner.partition("|")
    url = _unslack(url)
    shown = _unslack(label or url)
    if url.startswith(("https://", "http://", "mailto:")):
        link = f'href="{_attr(url)}" rel="noreferrer noopener" target="_blank"'
        return f"<a {link}>{html.escape(shown)}</a>"
    return html.escape("<" + _unslack(inner) + ">")


def _styled(text: str, names: Callable[[str], str]) -> str:
    out: list[str] = []
    last = 0
    for match in _ANGLE.finditer(text):
        out.append(html.escape(_unslack(text[last : match.start()])))
        out.append(_token(match.group(1), names))
        last = match.end()
    out.append(html.escape(_unslack(text[last:])))
    joined = "".join(out)
    for pattern, tag in _STYLES:
        joined = pattern.sub(lambda m, t=tag: f"<{t}>{m.group(1)}</{t}>", joined)  # type: ignore[misc]
    return _lines(_emoji(joined))


def mrkdwn_html(text: str, names: Callable[[str], str] = lambda u: u) -> str:
    out: list[str] = []
    last = 0
    for match in _CODE.finditer(text):
        out.append(_styled(text[last : match.start()], names))
        if match.group(1) is not None:
            body = match.group(1).removeprefix("\n").removesuffix("\n")
            out.append(f'<pre class="sk-code">{html.escape(_unslack(body))}</pre>')
        else:
            out.append(f"<code>{html.escape(_unslack(match.group(2)))}</code>")
        last = match.end()
    out.append(_styled(text[last:], names))
    return "".join(out)


class Renderer:
    """Renders blocks; ``names`` maps a user id to the name shown for a mention."""

    def __init__(self, names: Callable[[str], str] = lambda u: u) -> None:
        self.names = names

    # -- text ------------------------------------------------------------------------------

    def text(self, obj: object) -> str:
        if not isinstance(obj, Mapping):
            return unsupported("text", type(obj).__name__)
        kind = obj.get("type")
        value = obj.get("text")
        if not isinstance(value, str):
            return unsupported("text", kind)
        if kind == "plain_text":
            return plain_html(value, emoji=bool(obj.get("emoji", True)))
        if kind == "mrkdwn":
            return mrkdwn_html(value, self.names)
        return unsupported("text", kind)

    # -- blocks ----------------------------------------------------------------------------

    def blocks(self, blocks: object) -> str:
        if not isinstance(blocks, list):
            return ""
        return "".join(self.block(block) for block in blocks)

    def block(self, block: object) -> str:
        if not isinstance(block, Mapping):
            return unsupported("block", type(block).__name__)
        kind = str(block.get("type"))
        render = _BLOCKS.get(kind)
        if render is None:
            return unsupported("block", kind)
        block_id = _attr(block.get("block_id") or "")
        body = render(self, block)
        attrs = f'class="sk-block sk-{kind}" data-block-type="{kind}" data-block-id="{block_id}"'
        return f"<div {attrs}>{body}</div>"

    def _header(self, block: Json) -> str:
        return f"<h3>{self.text(block.get('text'))}</h3>"

    def _section(self, block: Json) -> str:
        parts = []
        if block.get("text") is not None:
            parts.append(f'<div class="sk-text">{self.text(block["text"])}</div>')
        fields = block.get("fields")
        if isinstance(fields, list) and fields:
            cells = "".join(f'<div class="sk-field">{self.text(f)}</div>' for f in fields)
            parts.append(f'<div class="sk-fields">{cells}</div>')
        if block.get("accessory") is not None:
            parts.append(f'<div class="sk-accessory">{self.element(block["accessory"])}</div>')
        return "".join(parts)

    def _context(self, block: Json) -> str:
        items = []
        for element in block.get("elements") or []:
            if isinstance(element, Mapping) and element.get("type") == "image":
                alt = _attr(element.get("alt_text") or "")
                items.append(f'<span class="sk-image" title="{alt}">[{alt}]</span>')
            else:
                items.append(f"<span>{self.text(element)}</span>")
        return "".join(items)

    def _divider(self, block: Json) -> str:
        return "<hr>"

    def _actions(self, block: Json) -> str:
        return "".join(self.element(e) for e in block.get("elements") or [])

    def _input(self, block: Json) -> str:
        block_id = _attr(block.get("block_id") or "")
        label = self.text(block.get("label"))
        optional = " <small>(optional)</small>" if block.get("optional") else ""
        hint = block.get("hint")
        hint_html = f'<div class="sk-hint">{self.text(hint)}</div>' if hint else ""
        error = f'<div class="sk-input-error" data-error-for="{block_id}" hidden></div>'
        return (
            f"<label>{label}{optional}</label>{self.element(block.get('element'))}"
            f"{hint_html}{error}"
        )

    # -- elements --------------------------------------------------------------------------

    def element(self, element: object) -> str:
        if not isinstance(element, Mapping):
            return unsupported("element", type(element).__name__)
        kind = element.get("type")
        if kind == "button":
            return self._button(element)
        if kind == "plain_text_input":
            return self._text_input(element)
        return unsupported("element", kind)

    def _button(self, element: Json) -> str:
        style = str(element.get("style") or "default")
        if style not in ("primary", "danger", "default"):
            return unsupported("button style", style)
        label = element.get("text") or {}
        label_text = label.get("text") if isinstance(label, Mapping) else None
        if not isinstance(label_text, str):
            return unsupported("element", "button without text")
        shown = plain_html(label_text, emoji=bool(label.get("emoji", True)))
        attrs = (
            f'type="button" class="sk-button sk-{style}" '
            f'data-action-id="{_attr(element.get("action_id") or "")}" '
            f'data-value="{_attr(element.get("value") or "")}"'
        )
        if element.get("url"):
            return f'<a class="sk-button sk-{style}" href="{_attr(element["url"])}">{shown}</a>'
        confirm = element.get("confirm")
        if confirm is None:
            return f"<button {attrs}>{shown}</button>"
        dialog = self._confirm(confirm)
        button = f'<button {attrs} data-has-confirm="1">{shown}</button>'
        return f'<span class="sk-confirmable">{button}{dialog}</span>'

    def _confirm(self, confirm: object) -> str:
        if not isinstance(confirm, Mapping):
            return unsupported("confirm", type(confirm).__name__)
        yes = self.text(confirm.get("confirm") or {"type": "plain_text", "text": "Confirm"})
        no = self.text(confirm.get("deny") or {"type": "plain_text", "text": "Cancel"})
        style = str(confirm.get("style") or "primary")
        return (
            '<div class="sk-confirm-dialog" hidden role="dialog">'
            f"<h4>{self.text(confirm.get('title'))}</h4>"
            f"<div>{self.text(confirm.get('text'))}</div>"
            '<div class="sk-dialog-buttons">'
            f'<button type="button" class="sk-button" data-confirm="no">{no}</button>'
            f'<button type="button" class="sk-button sk-{_attr(style)}" data-confirm="yes">'
            f"{yes}</button></div></div>"
        )

    def _text_input(self, element: Json) -> str:
        action_id = _attr(element.get("action_id") or "")
        placeholder = element.get("placeholder")
        hint = _attr(placeholder.get("text", "")) if isinstance(placeholder, Mapping) else ""
        limits = ""
        if isinstance(element.get("max_length"), int):
            limits += f' maxlength="{element["max_length"]}"'
        initial = _attr(element.get("initial_value") or "")
        common = f'class="sk-input" data-action-id="{action_id}" placeholder="{hint}"{limits}'
        if element.get("multiline"):
            return f"<textarea {common}>{initial}</textarea>"
        return f'<input type="text" {common} value="{initial}">'

    # -- surfaces --------------------------------------------------------------------------

    def message(self, text: str, blocks: object) -> str:
        """A message's body: its blocks, or its text when it has none (as Slack does)."""
        if isinstance(blocks, list) and blocks:
            return self.blocks(blocks)
        return f'<div class="sk-text">{mrkdwn_html(text, self.names)}</div>'

    def view(self, payload: Json) -> str:
        """A modal or Home tab: title, blocks, and the modal's close and submit buttons."""
        kind = str(payload.get("type"))
        if kind not in ("modal", "home"):
            return unsupported("view", kind)
        title = payload.get("title")
        head = f'<h2 class="sk-view-title">{self.text(title)}</h2>' if title else ""
        body = self.blocks(payload.get("blocks"))
        foot = ""
        if kind == "modal":
            close = payload.get("close") or {"type": "plain_text", "text": "Cancel"}
            foot = (
                '<div class="sk-view-buttons">'
                f'<button type="button" class="sk-button sk-view-close">{self.text(close)}</button>'
            )
            if payload.get("submit"):
                foot += (
                    '<button type="button" class="sk-button sk-primary sk-view-submit">'
                    f"{self.text(payload['submit'])}</button>"
                )
            foot += "</div>"
        return f'{head}<div class="sk-view-body">{body}</div>{foot}'


_BLOCKS: dict[str, Callable[[Renderer, Json], str]] = {
    "header": Renderer._header,
    "section": Renderer._section,
    "context": Renderer._context,
    "divider": Renderer._divider,
    "actions": Renderer._actions,
    "input": Renderer._input,
}


def has_unsupported(rendered: str) -> bool:
    return UNSUPPORTED_CLASS in rendered


REQUEST_ID = re.compile(r"req_[0-9a-f]{32}")


def request_id_of(text: str, blocks: object) -> str | None:
    """The request a message is about (its buttons and footer carry the id)."""
    found = REQUEST_ID.search(text) or REQUEST_ID.search(json.dumps(blocks or []))
    return found.group() if found else None
