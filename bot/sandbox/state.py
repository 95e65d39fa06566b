"""What one person sees in the sandbox workspace, rendered to HTML on the server.

The page asks for this every second or so and swaps in whatever changed; ``version`` is a hash
of the whole answer, so an unchanged workspace costs the page nothing to redraw.
"""

from __future__ import annotations

import hashlib
import html
import json
from typing import Any

from bot.sandbox.render import Renderer, request_id_of
from bot.sandbox.workspace import SandboxWorkspace
from bot.slack_emulator import Ephemeral, Message, View

MAX_MESSAGES = 200  # per conversation, newest kept: the answer stays bounded


def _article(
    kind: str, channel: str, ts: str, body: str, *, edited: bool, request_id: str | None
) -> str:
    label = "Only visible to you" if kind == "ephemeral" else "stepup"
    extra = f' data-request-id="{html.escape(request_id)}"' if request_id else ""
    mark = ' <span class="sk-edited">(edited)</span>' if edited else ""
    return (
        f'<article class="sk-message sk-{kind}" id="msg-{html.escape(channel)}-{html.escape(ts)}" '
        f'data-channel="{html.escape(channel)}" data-ts="{html.escape(ts)}"{extra}>'
        f'<div class="sk-author">{label}{mark}</div>{body}</article>'
    )


def _message(renderer: Renderer, message: Message) -> str:
    body = renderer.message(message.text, message.latest.blocks)
    return _article(
        "message",
        message.channel,
        message.ts,
        body,
        edited=message.edited,
        request_id=request_id_of(message.text, message.latest.blocks),
    )


def _ephemeral(renderer: Renderer, ephemeral: Ephemeral) -> str:
    body = renderer.message(ephemeral.text, ephemeral.blocks)
    return _article(
        "ephemeral", ephemeral.channel, ephemeral.message_ts, body, edited=False, request_id=None
    )


def conversation_html(
    renderer: Renderer, messages: list[Message], ephemerals: list[Ephemeral]
) -> str:
    tops = [m for m in messages if m.thread_ts in (None, m.ts)][-MAX_MESSAGES:]
    replies: dict[str, list[str]] = {}
    for message in messages:
        if message.thread_ts not in (None, message.ts):
            replies.setdefault(str(message.thread_ts), []).append(_message(renderer, message))
    own_ephemerals = [(e.message_ts, e) for e in ephemerals if not e.thread_ts]
    for e in ephemerals:
        if e.thread_ts:
            replies.setdefault(e.thread_ts, []).append(_ephemeral(renderer, e))
    items: list[tuple[float, str]] = []
    for message in tops:
        thread = replies.get(message.ts, [])
        under = (
            f'<div class="sk-thread" data-thread-ts="{html.escape(message.ts)}">'
            f'<div class="sk-thread-count">{len(thread)} '
            f"{'reply' if len(thread) == 1 else 'replies'}</div>{''.join(thread)}</div>"
            if thread
            else ""
        )
        items.append((float(message.ts), _message(renderer, message) + under))
    for ts, e in own_ephemerals[-MAX_MESSAGES:]:
        items.append((float(ts), _ephemeral(renderer, e)))
    items.sort(key=lambda item: item[0])
    if not items:
        return '<p class="sk-empty">No messages yet.</p>'
    return "".join(body for _, body in items)


def open_modal(workspace: SandboxWorkspace, user_id: str) -> View | None:
    """The modal on top of this person's stack: the newest one opened by their click."""
    mine = [
        v
        for v in workspace.emulator.views_opened()
        if workspace.user_of_trigger(v.trigger_id) == user_id and not workspace.is_closed(v.id)
    ]
    return mine[-1] if mine else None


def state_for(workspace: SandboxWorkspace, user_id: str) -> dict[str, Any]:
    renderer = Renderer(workspace.name_of)
    emulator = workspace.emulator
    ephemerals = emulator.ephemerals(user_id)
    conversations: list[dict[str, Any]] = []
    for channel_id, name in workspace.channels:
        conversations.append(
            {
                "id": channel_id,
                "name": f"#{name}",
                "kind": "channel",
                "html": conversation_html(
                    renderer,
                    emulator.messages(channel_id),
                    [e for e in ephemerals if e.channel == channel_id],
                ),
            }
        )
    dm = emulator.dms(user_id)
    dm_channel = dm[0].channel if dm else None
    conversations.append(
        {
            "id": "dm",
            "name": "stepup (DM)",
            "kind": "dm",
            "html": conversation_html(
                renderer, dm, [e for e in ephemerals if dm_channel and e.channel == dm_channel]
            ),
        }
    )
    home = emulator.home(user_id)
    conversations.append(
        {
            "id": "home",
            "name": "stepup Home",
            "kind": "home",
            "html": renderer.view(home.payload) if home else '<p class="sk-empty">Loading…</p>',
        }
    )
    modal = open_modal(workspace, user_id)
    answer: dict[str, Any] = {
        "user": user_id,
        "conversations": conversations,
        "modal": None
        if modal is None
        else {
            "id": modal.id,
            "callback_id": modal.callback_id,
            "html": renderer.view(modal.payload),
        },
    }
    digest = hashlib.sha256(json.dumps(answer, sort_keys=True).encode()).hexdigest()[:16]
    answer["version"] = digest
    return answer
