"""node/heap.py: the GC policy, and the premise it rests on (the STF makes no cyclic garbage)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from node.blocks import stf_header
from node.heap import HeapMetrics, HeapPolicy, HeapSettings
from rpc.reducer import IndexerState, apply_committed
from rpc.simchain import SimChain, sim_config
from stf.block import apply_block, genesis_state, skip_signature_check


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def gc_restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    gc.enable()


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def cyclic_garbage_of(run: object) -> int:
    """Objects the cycle collector finds unreachable after `run()` with automatic GC off."""
    gc.collect()
    gc.disable()
    try:
        run()  # type: ignore[operator]
        return gc.collect()
    finally:
        gc.enable()


def test_applying_blocks_makes_no_cyclic_garbage(gc_restored: None) -> None:
    # What freezing after each block relies on: the state and a block's transient objects die by
    # reference counting. SimChain trades every action (orders of every kind, batches, cancels,
    # transfers, oracle updates) with funding and liquidations on.
    chain = SimChain(
        sim_config(accounts=20, funding_interval_ms=5_000), seed=3, max_txs=30, snapshot_interval=0
    )
    chain.produce_many(60)
    state = genesis_state(chain.config)

    def replay() -> None:
        for committed in chain.blocks:
            h = committed.block.header
            apply_block(state, stf_header(h), list(committed.block.txs), skip_signature_check)

    assert cyclic_garbage_of(replay) == 0
    assert state.app_hash == chain.state.app_hash
    assert len(state.orders) > 0  # the replay built a book: the check above saw real work

    indexer = IndexerState(genesis_state(chain.config))

    def index() -> None:
        for committed in chain.blocks:
            apply_committed(indexer, committed)

    assert cyclic_garbage_of(index) == 0


def test_install_raises_the_young_threshold_and_uninstall_restores_it(gc_restored: None) -> None:
    gc.set_threshold(700, 10, 10)
    policy = HeapPolicy(HeapSettings(young_threshold=5_000))
    policy.install()
    assert gc.get_threshold() == (5_000, 10, 10)
    policy.uninstall()
    assert gc.get_threshold() == (700, 10, 10)


@contextlib.contextmanager
def installed(settings: HeapSettings) -> Iterator[tuple[HeapPolicy, FakeClock, CollectorRegistry]]:
    clock = FakeClock()
    registry = CollectorRegistry()
    policy = HeapPolicy(settings, HeapMetrics(registry), clock)
    policy.install()
    try:
        yield policy, clock, registry
    finally:
        policy.uninstall()


def test_after_block_freezes_survivors_at_most_every_freeze_interval(gc_restored: None) -> None:
    settings = HeapSettings(freeze_every_ms=100, full_collect_every_s=0)
    with installed(settings) as (policy, clock, registry):
        gc.unfreeze()
        policy.after_block()  # the first block freezes
        frozen = gc.get_freeze_count()
        assert frozen > 0
        assert sample(registry, "ita_gc_frozen_objects") == frozen
        assert sample(registry, "ita_gc_pause_seconds_count", generation="2") >= 1
        kept = [[i] for i in range(1_000)]  # survives: frozen by the next eligible block
        clock.now += 0.05
        policy.after_block()  # too soon: nothing happens
        assert gc.get_freeze_count() == frozen
        clock.now += 0.06
        policy.after_block()
        assert gc.get_freeze_count() >= frozen + len(kept)
    assert gc.get_freeze_count() == 0


def test_cyclic_garbage_freezing_kept_is_reclaimed_by_the_periodic_full_collection(gc_restored: None) -> None:
    settings = HeapSettings(freeze_every_ms=0, full_collect_every_s=60)
    with installed(settings) as (policy, clock, registry):
        cycles = []
        for _ in range(100):
            a: list[object] = []
            b: list[object] = [a]
            a.append(b)
            cycles.append(a)
        policy.after_block()  # the cycles are alive: frozen
        del cycles, a, b  # now garbage, but frozen: ordinary collections cannot see them
        clock.now += 1
        policy.after_block()
        assert sample(registry, "ita_gc_reclaimed_objects_total") == 0
        clock.now += 60
        policy.after_block()  # the full collection
        assert sample(registry, "ita_gc_reclaimed_objects_total") >= 200
        assert gc.get_freeze_count() > 0  # and everything alive is frozen again


def test_a_disabled_policy_never_freezes(gc_restored: None) -> None:
    gc.unfreeze()
    policy = HeapPolicy(HeapSettings(freeze_after_block=False))
    policy.install()
    try:
        policy.after_block()
        assert gc.get_freeze_count() == 0
    finally:
        policy.uninstall()
