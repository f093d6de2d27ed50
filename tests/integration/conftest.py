"""Fixtures for the integration tests: real validator processes on 127.0.0.1.

Each test (or module) gets a ``TestNet`` in a temporary directory; teardown stops every process
it started (SIGTERM, then SIGKILL) and prints the tail of each log, which pytest shows only
when the test failed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.support import TestNet

NetFactory = Callable[..., TestNet]


def _factory(root: Path) -> Iterator[tuple[NetFactory, list[TestNet]]]:
    made: list[TestNet] = []

    def make(*args: Any, **kwargs: Any) -> TestNet:
        net = TestNet(root / f"net{len(made)}", *args, **kwargs)
        made.append(net)
        return net

    yield make, made
    for net in made:
        try:
            print(net.log_tails(40))
        finally:
            net.stop()


@pytest.fixture
def make_net(tmp_path: Path) -> Iterator[NetFactory]:
    for make, _ in _factory(tmp_path):
        yield make


@pytest.fixture(scope="module")
def make_module_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetFactory]:
    for make, _ in _factory(tmp_path_factory.mktemp("net")):
        yield make
