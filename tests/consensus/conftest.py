"""Keep the slow soak out of a plain ``pytest tests/consensus`` run.

The project's Makefile passes ``-m "not slow"``; this makes the same true when the consensus
tests are run directly without a marker expression. ``-m slow`` runs the soak.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("markexpr"):
        return
    skip = pytest.mark.skip(reason="slow soak: run with -m slow")
    for item in items:
        if "slow" in item.keywords and HERE in item.path.parents:
            item.add_marker(skip)
