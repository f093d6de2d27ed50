"""schemathesis against /v1/openapi.json: no 5xx, every response matches the documented schema."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from rpc.openapi import openapi_document  # noqa: E402
from rpc.service import IndexerService  # noqa: E402
from rpc.simchain import SimChain, sim_config  # noqa: E402
from tests.rpc.support import caught_up, start_indexer  # noqa: E402


class LiveIndexer:
    """An indexer over a 150-block SimChain, served from its own event loop in a thread."""

    def __init__(self, home: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.chain = SimChain(seed=71)
        self.chain.produce_many(150)
        self.service: IndexerService = self.call(start_indexer(self.chain, home))
        self.call(caught_up(self.service, self.chain))

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def close(self) -> None:
        self.call(self.service.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveIndexer]:
    server = LiveIndexer(tmp_path_factory.mktemp("openapi"))
    yield server
    server.close()


DOCUMENT = openapi_document(sim_config())
CASES = [
    (method.upper(), path, mode)
    for path, item in DOCUMENT["paths"].items()
    for method, operation in item.items()
    for mode in ("positive", "negative")
    # a request can only break the schema where it has parameters or a body
    if mode == "positive" or operation.get("parameters") or operation.get("requestBody")
]


@pytest.fixture(scope="module")
def api_schema(live: LiveIndexer) -> Any:
    return schemathesis.openapi.from_url(f"{live.service.url}/v1/openapi.json")


@pytest.mark.parametrize("method,path,mode", CASES, ids=[f"{m} {p} {mode}" for m, p, mode in CASES])
def test_api_conforms_to_its_openapi_document(api_schema: Any, method: str, path: str, mode: str) -> None:
    """Generated requests (valid ones, and for ``negative`` ones that break the schema) never get
    a 5xx, and every response (status, content type, body) matches the document."""
    operation = api_schema[path][method]
    strategy = operation.as_strategy(generation_mode=GenerationMode(mode))

    @given(case=strategy)
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Any) -> None:
        if path == "/v1/txs" and method == "POST" and mode == "positive":
            case.body = {"tx": base64.b64encode(b"not a signed tx").decode()}  # still a well-formed request
        case.call_and_validate()

    check()
