"""Bearer-key authentication for agents and for introspecting target systems."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from bot.api.context import ApiContext, context_of
from core.errors import Unauthenticated
from core.storage.agents_repo import AgentIdentity

_bearer = HTTPBearer(
    auto_error=False,
    description="An agent key from `stepup agents add`, or a workload token (a JWT) from a "
    "trusted issuer (docs/identity.md)",
)
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
        return ctx.registry.authenticate(str(self), now=ctx.clock())


async def agent_key(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> AgentKey:
    return AgentKey(_key(credentials))


class ResourceServerName(str):
    """The calling resource server's name, carrying the token audiences it may introspect."""

    audiences: frozenset[str]

    def __new__(cls, name: str, audiences: Iterable[str]) -> ResourceServerName:
        self = super().__new__(cls, name)
        self.audiences = frozenset(audiences)
        return self


async def current_resource_server(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_resource_bearer)],
) -> ResourceServerName:
    """The authenticated caller, with the audiences whose tokens it may introspect."""
    key = _key(credentials)
    server = await run_in_threadpool(context_of(request).registry.authenticate_resource_server, key)
    return ResourceServerName(server.name, server.audiences)
