"""Validators running different STF builds (pure Python and the mypyc build) agree on every block.

Nodes run the compiled STF when a fresh build exists (stf/__init__.py), so a real network mixes
the two builds whenever operators build differently. Two validators run ITA_STF=compiled and two
ITA_STF=pure under random order flow (trades, cancels, oracle updates, funding); every height must
have the same block id and app hash on all four.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stf import stale_reason
from tests.integration.conftest import NetFactory

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(bool(stale_reason()), reason="no fresh mypyc build in build/fast: run `make fast`"),
]

BUILDS = {0: "compiled", 1: "compiled", 2: "pure", 3: "pure"}


def started_build(log: Path) -> str:
    """The stf_build field of the node's "node started" JSON log line."""
    for line in log.read_text(encoding="utf-8").splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("msg") == "node started":
                return str(record["stf_build"])
    raise AssertionError(f"no 'node started' line in {log}")


def test_pure_and_compiled_validators_agree_under_load(make_net: NetFactory) -> None:
    net = make_net(4).start({i: {"ITA_STF": build} for i, build in BUILDS.items()})
    net.wait_height(2)
    assert {i: started_build(net.nodes[i].log) for i in BUILDS} == BUILDS

    load = net.start_load(rate=60, accounts="0-9", seed=5)
    net.wait_advance(25, range(4))
    load.stop(grace=5)
    top = net.assert_same_chain()

    txs = 0
    for height in range(1, top + 1):
        committed = net.client(2).block(height)
        txs += sum(1 for r in committed.results if r.code == 0)
    assert txs >= 50, f"only {txs} successful txs in {top} blocks: the load did not reach the chain"
