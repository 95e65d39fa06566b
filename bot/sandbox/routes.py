"""``/sandbox``: the page, its script and style, and the JSON it talks to.

Clicks and modal submissions become Slack's own interaction payloads, signed with the
sandbox's signing secret and POSTed to this server's ``/slack/events`` over HTTP — the path a
real Slack request takes, so the bot cannot tell the difference. They go to the address the
page's request arrived on (the socket, not the ``Host`` header), which is loopback.

The JSON endpoints take JSON bodies only (a cross-site form cannot send one without a
preflight this app never answers) and a ``Host`` that names a loopback address (a DNS
rebinding page cannot reach them either).
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

import httpx
from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, Field

from bot.sandbox.state import open_modal, state_for
from bot.sandbox.workspace import SandboxWorkspace, is_loopback
from bot.slack_emulator import SignedSlackClient

STATIC = files("bot.sandbox") / "static"
ASSETS = {
    "sandbox.js": "text/javascript; charset=utf-8",
    "sandbox.css": "text/css; charset=utf-8",
}
NO_STORE = {"Cache-Control": "no-store"}


class Acting(BaseModel):
    user: str = Field(max_length=64)


class Click(Acting):
    action_id: str = Field(max_length=255)
    value: str = Field("", max_length=2000)
    channel: str | None = Field(None, max_length=64)
    ts: str | None = Field(None, max_length=64)
    view_id: str | None = Field(None, max_length=64)


class Submission(Acting):
    view_id: str = Field(max_length=64)
    values: dict[str, dict[str, str]] = Field(default_factory=dict, max_length=100)


def _asset(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def sandbox_router(workspace: SandboxWorkspace) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    http = httpx.Client(timeout=15.0)
    names = {p.user_id: p.name for p in workspace.people}

    def guard(request: Request, acting: Acting | None = None) -> None:
        raw = request.headers.get("host", "")
        host = raw[1 : raw.find("]")] if raw.startswith("[") else raw.rsplit(":", 1)[0]
        if not is_loopback(host):
            raise HTTPException(403, "the sandbox answers on loopback addresses only")
        if acting is not None and workspace.person(acting.user) is None:
            raise HTTPException(422, "unknown sandbox user")

    def slack(request: Request) -> SignedSlackClient:
        server = request.scope.get("server") or ("127.0.0.1", 80)
        host = f"[{server[0]}]" if ":" in str(server[0]) else str(server[0])
        return SignedSlackClient(
            f"http://{host}:{server[1]}/slack/events",
            workspace.signing_secret,
            http=http,
            response_urls=workspace.emulator.response_url,
            user_names=names,
        )

    @router.get("/sandbox")
    def page(request: Request) -> Response:
        guard(request)
        return Response(
            _asset("index.html"), media_type="text/html; charset=utf-8", headers=NO_STORE
        )

    @router.get("/sandbox/static/{name}")
    def asset(name: str, request: Request) -> Response:
        guard(request)
        if name not in ASSETS:
            raise HTTPException(404)
        return Response(_asset(name), media_type=ASSETS[name], headers=NO_STORE)

    @router.get("/sandbox/api/people")
    def people(request: Request) -> dict[str, Any]:
        guard(request)
        return {
            "people": [
                {
                    "id": p.user_id,
                    "name": p.name,
                    "email": p.email,
                    "groups": list(p.groups),
                    "outsider": p.outsider,
                }
                for p in workspace.people
            ]
        }

    @router.get("/sandbox/api/state")
    def state(request: Request, user: str, since: str = "") -> dict[str, Any]:
        guard(request, Acting(user=user))
        answer = state_for(workspace, user)
        if since and since == answer["version"]:
            return {"version": answer["version"], "unchanged": True}
        return answer

    @router.post("/sandbox/api/action")
    def action(click: Click, request: Request) -> dict[str, Any]:
        guard(request, click)
        client = slack(request)
        trigger = workspace.new_trigger(click.user)
        emulator = workspace.emulator
        if click.view_id:
            try:
                view = emulator.view(click.view_id)
            except KeyError:
                raise HTTPException(404, "no such view") from None
            sent = client.click(
                click.action_id, click.value, click.user, trigger_id=trigger, view=view.payload
            )
        else:
            if not (click.channel and click.ts):
                raise HTTPException(422, "a click on a message needs its channel and ts")
            try:
                message = emulator.message(click.channel, click.ts)
            except LookupError:
                raise HTTPException(404, "no such message") from None
            sent = client.click(
                click.action_id, click.value, click.user, message=message, trigger_id=trigger
            )
        return {"status": sent.status_code}

    @router.post("/sandbox/api/submit")
    def submit(form: Submission, request: Request) -> dict[str, Any]:
        guard(request, form)
        modal = open_modal(workspace, form.user)
        if modal is None or modal.id != form.view_id:
            raise HTTPException(409, "that modal is not open for this user")
        title = (modal.payload.get("title") or {}).get("text") or "stepup"
        sent = slack(request).submit_view(
            modal.callback_id,
            form.values,
            form.user,
            private_metadata=modal.private_metadata,
            view_id=modal.id,
            trigger_id=workspace.new_trigger(form.user),
            title=str(title),
        )
        answer = _json(sent)
        if sent.status_code == 200 and answer.get("response_action") == "errors":
            return {"status": 200, "errors": answer.get("errors") or {}}
        if sent.status_code == 200:
            workspace.close_view(modal.id)
        return {"status": sent.status_code, "closed": sent.status_code == 200}

    @router.post("/sandbox/api/close")
    def close(form: Submission, request: Request) -> dict[str, Any]:
        guard(request, form)
        workspace.close_view(form.view_id)
        return {"closed": True}

    @router.post("/sandbox/api/home")
    def home(acting: Acting, request: Request) -> dict[str, Any]:
        guard(request, acting)
        return {"status": slack(request).app_home_opened(acting.user).status_code}

    return router


def _json(response: httpx.Response) -> dict[str, Any]:
    if not response.content:
        return {}
    try:
        body = json.loads(response.content)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
