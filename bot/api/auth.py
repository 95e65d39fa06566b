"""Bearer-key authentication for agents and for introspecting target systems."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from bot.api.context import ApiContext, context_of
from core.errors import Unauthenticated
from core.storage.agents_repo import AgentIdentity

_bearer = HTTPBearer(auto_error=False, description="An agent key from `stepup agents add`")
_resource_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ResourceServerKey",
    description="A key from `stepup resource-servers add`",
)


def _key(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthenticated()
    return credentials.credentials


class AgentKey(str):
    """The bearer key as presented. Handlers authenticate it in the same worker thread as the
    work it guards, which spares a thread hop and a transaction per request."""

    __slots__ = ()

    def identity(self, request: Request) -> AgentIdentity:
        ctx: ApiContext = context_of(request)
        return ctx.registry.authenticate(str(self))


async def agent_key(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> AgentKey:
    return AgentKey(_key(credentials))


def current_resource_server(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_resource_bearer)],
) -> str:
    return context_of(request).registry.authenticate_resource_server(_key(credentials))
