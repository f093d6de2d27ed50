"""Properties of the consensus over many seeded simulated networks, and negative controls.

Each scenario runs N validators, f of them Byzantine, over a network that drops, delays,
reorders and partitions messages until GST, with honest validators crashing and restarting
from their WAL before GST. The checker must find no violation of agreement, validity or
liveness (all target heights decided; heights begun after GST decided by round f+1).
The negative controls step outside the fault model and require the checker to fail.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from consensus import CommitCertificate, ValidatorSet, verify_commit_certificate
from consensus.inout import Decide
from consensus.sim import Scenario, SimResult, run_scenario
from consensus.sim.byzantine import Kind
from consensus.sim.checker import Checker
from consensus.sim.fakecrypto import fake_public_key, fake_verify
from consensus.sim.network import NetworkConfig
from consensus.sim.scenario import build_world

SILENT, EQUIVOCATE, DOUBLE_VOTE, INVALID = Kind.SILENT, Kind.EQUIVOCATE, Kind.DOUBLE_VOTE, Kind.INVALID


def adversarial(
    n: int, kinds: tuple[Kind, ...], crashes: int = 2, heights: int = 4, **kw: object
) -> Scenario:
    f = (n - 1) // 3
    assert len(kinds) <= f
    halves = (tuple(range(n // 2)), tuple(range(n // 2, n)))
    net = NetworkConfig(
        gst_ms=2000, drop_per_mille=150, pre_gst_max_delay_ms=300, max_delay_ms=20, partition=halves
    )
    return Scenario(n=n, byzantine=kinds, heights=heights, crashes=crashes, network=net, round_bound=n - 1,
                    **kw)  # type: ignore[arg-type]


def run_many(scenario: Scenario, seeds: Iterable[int]) -> list[SimResult]:
    results = [run_scenario(scenario, seed) for seed in seeds]
    failures = [(r.seed, r.violations[:3]) for r in results if r.violations]
    assert failures == [], f"{len(failures)} failing seeds, first: {failures[:3]}"
    return results


N4 = [(), (SILENT,), (EQUIVOCATE,), (DOUBLE_VOTE,), (INVALID,)]


@pytest.mark.parametrize("kinds", N4, ids=lambda k: "+".join(x.value for x in k) or "honest")
def test_n4_properties_hold(kinds: tuple[Kind, ...]) -> None:
    results = run_many(adversarial(4, kinds), range(100))
    assert all(r.decided_heights >= 4 for r in results)
    assert sum(r.restarts for r in results) > 0 and sum(r.replay_checks for r in results) > 0
    assert sum(r.messages_dropped for r in results) > 0
    if kinds in ((EQUIVOCATE,), (DOUBLE_VOTE,)):
        assert sum(r.evidence_found for r in results) > 0  # honest nodes caught the equivocation


N7 = [(SILENT, EQUIVOCATE), (DOUBLE_VOTE, INVALID), (EQUIVOCATE, DOUBLE_VOTE)]


@pytest.mark.parametrize("kinds", N7, ids=lambda k: "+".join(x.value for x in k))
def test_n7_properties_hold(kinds: tuple[Kind, ...]) -> None:
    run_many(adversarial(7, kinds), range(80))


N10 = [(SILENT, DOUBLE_VOTE, EQUIVOCATE), (INVALID, INVALID, DOUBLE_VOTE)]


@pytest.mark.parametrize("kinds", N10, ids=lambda k: "+".join(x.value for x in k))
def test_n10_properties_hold(kinds: tuple[Kind, ...]) -> None:
    run_many(adversarial(10, kinds, heights=3), range(50))


def test_weighted_validators_with_crashes() -> None:
    run_many(adversarial(5, (), crashes=4, powers=(4, 3, 2, 1, 1)), range(40))


def test_real_ed25519_network() -> None:
    results = run_many(adversarial(4, (DOUBLE_VOTE,), real_crypto=True, heights=2), range(4))
    assert all(r.decided_heights >= 2 for r in results)


def test_certificates_from_simulation_verify() -> None:
    scenario = adversarial(4, (DOUBLE_VOTE,), heights=3)
    world = build_world(scenario, 11)
    decisions: list[Decide] = []
    for node in world.nodes:
        original = node._decide

        def spy(d: Decide, original: object = original) -> None:
            decisions.append(d)
            original(d)  # type: ignore[operator]

        node._decide = spy  # type: ignore[method-assign]
    from functools import partial

    from consensus import StartHeight
    for node in world.nodes:
        world.net.at(0, partial(node.feed, StartHeight(1)))
        world.net.at(1, partial(world._gossip_tick, node))
    world.net.run(30_000, lambda: all(3 in world.checker.decisions.get(n.node_id, {}) for n in world.nodes
                                     if n.honest))
    vset = ValidatorSet([(fake_public_key(b"%d" % i), 1) for i in range(4)], fake_verify)
    assert len(decisions) >= 9
    for d in decisions:
        assert isinstance(d.certificate, CommitCertificate)
        verify_commit_certificate(d.certificate, vset, scenario.chain_id, d.height, d.block_id)


def test_runs_are_deterministic_per_seed() -> None:
    scenario = adversarial(7, (EQUIVOCATE, DOUBLE_VOTE))
    assert run_scenario(scenario, 5) == run_scenario(scenario, 5)
    assert run_scenario(scenario, 5) != run_scenario(scenario, 6)


# ---------------------------------------------------------------------------- negative controls


def test_negative_control_twins_break_agreement() -> None:
    """2 of 4 keys faulty: each runs twice, one copy on each side of a permanent partition.

    Each side holds 3 of 4 keys, i.e. a quorum, and decides its own blocks; the checker must
    see the two honest validators (one per side) disagree, for every seed.
    """
    sides = ((0, 1, 2), (4, 5, 3))  # node ids: 0-3 the validators, 4 and 5 the twins of 0 and 1
    net = NetworkConfig(gst_ms=0, drop_per_mille=0, partition=sides, permanent_partition=True)
    scenario = Scenario(n=4, twins=(0, 1), heights=2, network=net, deadline_ms=20_000)
    for seed in range(30):
        result = run_scenario(scenario, seed)
        assert result.honest == (2, 3)
        kinds = {v.kind for v in result.violations}
        assert "agreement" in kinds, f"seed {seed}: checker missed the fork: {result.violations}"


def test_negative_control_too_many_silent_breaks_liveness() -> None:
    net = adversarial(4, ()).network
    scenario = Scenario(n=4, byzantine=(SILENT, SILENT), heights=2, network=net, deadline_ms=8_000)
    for seed in range(10):
        result = run_scenario(scenario, seed)
        assert any(v.kind == "liveness" for v in result.violations), seed
        assert not any(v.kind in ("agreement", "validity") for v in result.violations)


def test_checker_flags_invalid_and_unproposed_decisions() -> None:
    checker = Checker()
    scenario = Scenario(n=4)
    world = build_world(scenario, 0)
    node = world.nodes[0]
    from consensus import compute_block_id
    block = b"INVALID|1|0|x"
    cert = CommitCertificate(1, 0, compute_block_id(block), ())
    checker.record_decision(node, Decide(1, 0, compute_block_id(block), block, cert), 5)
    kinds = [v.detail for v in checker.check([0], 1, 0, None)]
    assert any("invalid block" in d for d in kinds) and any("unproposed" in d for d in kinds)


def test_checker_flags_slow_decisions_after_gst() -> None:
    checker = Checker()
    world = build_world(Scenario(n=4), 0)
    from consensus import compute_block_id
    for node_id, round_ in ((0, 0), (1, 3)):
        block = b"blk"
        checker.record_proposal(compute_block_id(block))
        block_id = compute_block_id(block)
        d = Decide(1, round_, block_id, block, CommitCertificate(1, round_, block_id, ()))
        checker.record_decision(world.nodes[node_id], d, 100)
    violations = checker.check([0, 1], 1, 0, round_bound=2)
    assert [v.kind for v in violations] == ["round-bound"]
    assert checker.check([0, 1], 1, 0, round_bound=3) == []


# ---------------------------------------------------------------------------- slow soak


@pytest.mark.slow
@pytest.mark.parametrize("kinds", N4, ids=lambda k: "+".join(x.value for x in k) or "honest")
def test_n4_soak(kinds: tuple[Kind, ...]) -> None:
    run_many(adversarial(4, kinds, crashes=3), range(1000, 3000))


@pytest.mark.slow
@pytest.mark.parametrize("kinds", N7, ids=lambda k: "+".join(x.value for x in k))
def test_n7_soak(kinds: tuple[Kind, ...]) -> None:
    run_many(adversarial(7, kinds, crashes=3), range(1000, 2000))


@pytest.mark.slow
@pytest.mark.parametrize("kinds", N10, ids=lambda k: "+".join(x.value for x in k))
def test_n10_soak(kinds: tuple[Kind, ...]) -> None:
    run_many(adversarial(10, kinds, crashes=3, heights=3), range(1000, 1500))
