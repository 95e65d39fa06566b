"""Fixtures for tests that drive the real HTTP API."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bot.api.app import create_app
from bot.api.context import ApiContext
from core.storage.database import Database
from tests.integration.live import running
from tests.support import OWNER, Engine, build_engine


@dataclass
class LiveApi:
    url: str
    engine: Engine
    context: ApiContext
    agent_key: str
    server_key: str

    def client(self, key: str | None = None) -> httpx.Client:
        token = self.agent_key if key is None else key
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture
def live_api(db: Database, tmp_path: Path) -> Iterator[LiveApi]:
    engine = build_engine(db, tmp_path)
    from core.agents import AgentRegistry
    from tests.conftest import T0

    registry = AgentRegistry(engine.service)
    agent_key = registry.add("deploy-bot", OWNER, by="test", now=T0)
    server_key = registry.add_resource_server("payments-api", by="test", now=T0)
    context = ApiContext(service=engine.service, registry=registry)
    with running(create_app(context)) as url:
        yield LiveApi(url, engine, context, agent_key, server_key)
