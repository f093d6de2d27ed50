"""Crash a validator under load (kill -9, and os._exit at each named crash point), restart it: the
other three keep committing, the restarted node block-syncs, rejoins consensus and has the same
block id and app hash as everyone else at every height.

Crash points (node/app.py ``crash_point``, env ``ITA_CRASH_AT=<point>:<height>``):
before_wal_write / after_wal_write (engine, around the WAL fsync of a consensus input),
after_finalize (the block is executed, nothing persisted), during_snapshot (the snapshot is
encoded, the store write has not happened), after_commit (persisted, WAL height not sealed).

The default test runs every point once, in sequence, on one network (each restart also recovers
from the previous crash); the slow variant gives each point its own network and crashes the node
several times in a row.
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import NetFactory
from tests.integration.support import CRASH_EXIT, TestNet

pytestmark = pytest.mark.integration

CRASH_POINTS = ("before_wal_write", "after_wal_write", "after_finalize", "during_snapshot", "after_commit")
LOAD_RATE = 40.0  # txs/s from the load generator


def crash_height(net: TestNet, point: str, ahead: int = 8) -> int:
    """A height a few blocks ahead of the network; for during_snapshot, one that takes a snapshot."""
    height = net.max_height(range(len(net.nodes))) + ahead
    if point == "during_snapshot":
        interval = net.plan.template.snapshot_interval
        height = -(-height // interval) * interval
    return height


def crash_and_recover(net: TestNet, victim: int, point: str | None) -> None:
    """Crash ``victim`` (at ``point``, or kill -9 when None), check the others go on, restart it,
    wait until it is back in step, and compare every height across all nodes."""
    others = [i for i in range(len(net.nodes)) if i != victim]
    proc = net.procs[victim]
    if point is None:
        net.wait_advance(2, range(len(net.nodes)))
        proc.kill()
        crashed_at = net.max_height(others)
    else:
        # restart it armed with the crash point (the clean stop is itself a restart test); the target
        # is above every node's height, so the victim passes through it (block sync or consensus)
        proc.stop()
        target = crash_height(net, point)
        net.restart(victim, {"ITA_CRASH_AT": f"{point}:{target}"})
        code = net.wait_exit(proc)
        assert code == CRASH_EXIT, (
            f"{point}:{target}: exit code {code}, expected the crash point's {CRASH_EXIT}"
        )
        crashed_at = target
    # the other three keep committing without it
    net.wait_height(crashed_at + 3, others)
    assert not proc.alive()
    # restart: block sync, then consensus again; hashes agree at every height
    net.restart(victim)
    target = net.max_height(others) + 2
    net.wait_height(target, range(len(net.nodes)))
    net.wait_advance(2, range(len(net.nodes)))  # and it keeps up once in step
    net.assert_same_chain()


def test_crash_points_under_load_then_restart_rejoins(make_net: NetFactory) -> None:
    net = make_net(4).start()
    net.wait_height(2)
    load = net.start_load(LOAD_RATE, accounts="0-19")
    net.wait_advance(2, range(4))
    crash_and_recover(net, 3, None)  # kill -9
    for k, point in enumerate(CRASH_POINTS):
        crash_and_recover(net, 1 + k % 3, point)
    assert load.alive()
    top = net.assert_same_chain()
    # the load was really committed: blocks carry transactions from the generator's accounts
    committed_txs = sum(len(net.client(0).block(h).block.txs) for h in range(1, top + 1))
    assert committed_txs > top  # more than the oracle updates alone


@pytest.mark.slow
@pytest.mark.parametrize("point", [None, *CRASH_POINTS])
def test_repeated_crashes_at_one_point(make_net: NetFactory, point: str | None) -> None:
    net = make_net(4).start()
    net.wait_height(2)
    net.start_load(LOAD_RATE * 2, accounts="0-19")
    for round_ in range(3):
        crash_and_recover(net, 3 - round_ % 2, point)
    net.assert_same_chain()
