"""Scenarios: who is faulty, how the network misbehaves, and one seeded run.

``run_scenario(scenario, seed)`` builds N validators (fake or real ed25519 keys), picks the
Byzantine ones and their behaviours from the seed, schedules crashes/restarts of honest nodes
before GST, runs the event loop until every honest node has decided ``heights`` heights (or the
deadline passes) and returns the checker's verdict. The same (scenario, seed) always produces
the same run, event for event.

"Twins" (the negative control) run a second instance of some validators' keys as separate nodes,
each with its own WAL and guard; with a permanent partition separating the twins this breaks
the f < n/3 assumption and the checker must report an agreement violation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import partial

from consensus.config import ConsensusConfig
from consensus.crypto import Ed25519Signer, Signer, Verifier, ed25519_verify
from consensus.inout import CertifiedBlock, ScheduleTimeout, StartHeight, Timeout
from consensus.messages import Message, ProposalMessage
from consensus.sim.byzantine import Behaviour, Kind
from consensus.sim.checker import Checker, Violation
from consensus.sim.fakecrypto import FakeSigner, fake_public_key, fake_verify
from consensus.sim.network import Network, NetworkConfig
from consensus.sim.node import SimNode
from consensus.validators import ValidatorSet

SIM_CONFIG = ConsensusConfig(
    timeout_propose_ms=300,
    timeout_propose_delta_ms=100,
    timeout_prevote_ms=150,
    timeout_prevote_delta_ms=50,
    timeout_precommit_ms=150,
    timeout_precommit_delta_ms=50,
)


@dataclass(frozen=True, slots=True)
class Scenario:
    n: int = 4
    byzantine: tuple[Kind, ...] = ()  # behaviours; the validators running them are drawn per seed
    heights: int = 3
    network: NetworkConfig = field(default_factory=NetworkConfig)
    crashes: int = 0  # crash/restart events of honest nodes, all before GST
    powers: tuple[int, ...] = ()  # default: all 1
    twins: tuple[int, ...] = ()  # validator indices run twice (negative control)
    deadline_ms: int = 60_000
    round_bound: int | None = None  # liveness: max decision round for heights started after GST
    check_liveness: bool = True
    real_crypto: bool = False
    gossip_interval_ms: int = 100
    config: ConsensusConfig = SIM_CONFIG
    chain_id: str = "ita-sim"


@dataclass(frozen=True, slots=True)
class SimResult:
    seed: int
    violations: tuple[Violation, ...]
    honest: tuple[int, ...]
    byzantine: tuple[int, ...]
    end_ms: int
    max_round: int
    messages_sent: int
    messages_dropped: int
    evidence_found: int
    restarts: int
    replay_checks: int
    decided_heights: int


class World:
    def __init__(self, scenario: Scenario, seed: int) -> None:
        self.scenario = scenario
        self.net = Network(scenario.network, seed)
        self.checker = Checker()
        self.nodes: list[SimNode] = []

    # ---------------------------------------------------------------- wiring

    def broadcast(self, node: SimNode, msg: Message) -> None:
        peers = [p for p in self.nodes if p is not node]
        if isinstance(msg, ProposalMessage):
            self.checker.record_proposal(msg.signed.proposal.block_id)
        if node.behaviour is None:
            sends: list[tuple[list[SimNode], Message]] = [(peers, msg)]
        else:
            sends = node.behaviour.outgoing(node, msg, peers)
        for targets, m in sends:
            if isinstance(m, ProposalMessage):
                self.checker.record_proposal(m.signed.proposal.block_id)
            for peer in targets:
                self._send(node, peer, m)

    def _send(self, src: SimNode, dst: SimNode, msg: Message) -> None:
        delay = self.net.delay(src.node_id, dst.node_id)
        if delay is not None:
            self.net.after(delay, lambda: dst.receive(msg))

    def send_many(self, src: SimNode, dst: SimNode, msgs: list[Message]) -> None:
        for msg in msgs:
            self._send(src, dst, msg)

    def send_sync(self, src: SimNode, dst: SimNode, records: list[CertifiedBlock]) -> None:
        delay = self.net.delay(src.node_id, dst.node_id)
        if delay is None:
            return

        def deliver() -> None:
            for cb in records:
                dst.receive_sync(cb)

        self.net.after(delay, deliver)

    def schedule_timeout(self, node: SimNode, st: ScheduleTimeout) -> None:
        epoch = node.epoch
        timeout = Timeout(st.height, st.round, st.step)

        def fire() -> None:
            if node.up and node.epoch == epoch:
                node.feed(timeout)

        self.net.after(st.duration_ms, fire)

    def crash(self, node: SimNode, between_steps: bool = False) -> None:
        if not node.up:
            return
        node.crash(between_steps)
        self.net.after(self.net.rng.randint(50, 800), node.restart)

    # ---------------------------------------------------------------- setup

    def _gossip_tick(self, node: SimNode) -> None:
        node.anti_entropy()
        self.net.after(self.scenario.gossip_interval_ms, partial(self._gossip_tick, node))

    def _schedule_crashes(self, honest: list[SimNode]) -> None:
        gst = self.scenario.network.gst_ms
        for _ in range(self.scenario.crashes):
            node = honest[self.net.rng.randrange(len(honest))]
            at = self.net.rng.randrange(max(gst - 900, 1))
            mid_step = self.net.rng.randrange(2) == 0

            def strike(node: SimNode = node, mid_step: bool = mid_step) -> None:
                if not node.up:
                    return
                if mid_step:
                    node.crash_mid_step = True
                else:
                    self.crash(node, between_steps=True)

            self.net.at(at, strike)


def _keys(scenario: Scenario, seed: int) -> tuple[list[Signer], Verifier]:
    if scenario.real_crypto:
        signers: list[Signer] = [
            Ed25519Signer.from_seed(hashlib.sha256(b"sim-validator-%d" % i).digest())
            for i in range(scenario.n)
        ]
        return signers, ed25519_verify
    return [FakeSigner(fake_public_key(b"%d" % i)) for i in range(scenario.n)], fake_verify


def build_world(scenario: Scenario, seed: int) -> World:
    world = World(scenario, seed)
    signers, verifier = _keys(scenario, seed)
    powers = scenario.powers or tuple(1 for _ in range(scenario.n))
    vset = ValidatorSet([(s.public_key, p) for s, p in zip(signers, powers, strict=True)], verifier)
    order = list(range(scenario.n))
    world.net.rng.shuffle(order)
    behaviours: dict[int, Kind] = {order[i]: kind for i, kind in enumerate(scenario.byzantine)}
    for index in range(scenario.n):
        kind = behaviours.get(index)
        behaviour = None if kind is None else Behaviour(kind)
        node = SimNode(len(world.nodes), index, signers[index], vset, scenario.config, scenario.chain_id,
                       world, behaviour)
        world.nodes.append(node)
    for index in scenario.twins:
        # Same key, honest code, own WAL and own double-sign guard: a misconfigured operator.
        world.nodes.append(SimNode(len(world.nodes), index, signers[index], vset, scenario.config,
                                   scenario.chain_id, world, None))
    for node in world.nodes:
        if node.validator_index in scenario.twins:
            node.honest = False
    return world


def run_scenario(scenario: Scenario, seed: int) -> SimResult:
    world = build_world(scenario, seed)
    honest_nodes = [n for n in world.nodes if n.honest]
    honest = [n.node_id for n in honest_nodes]
    world._schedule_crashes(honest_nodes)
    for node in world.nodes:
        world.net.at(0, partial(node.feed, StartHeight(scenario.config.initial_height)))
        world.net.at(world.net.rng.randint(1, scenario.gossip_interval_ms), partial(world._gossip_tick, node))
    target = scenario.config.initial_height + scenario.heights - 1

    def done() -> bool:
        return all(target in world.checker.decisions.get(i, {}) for i in honest)

    world.net.run(scenario.deadline_ms, done)
    violations = world.checker.check(
        honest, target, scenario.network.gst_ms, scenario.round_bound, scenario.check_liveness
    )
    return SimResult(
        seed=seed,
        violations=tuple(violations),
        honest=tuple(honest),
        byzantine=tuple(n.node_id for n in world.nodes if not n.honest),
        end_ms=world.net.now,
        max_round=world.checker.max_round(honest),
        messages_sent=world.net.sent,
        messages_dropped=world.net.dropped,
        evidence_found=sum(len(n.evidence) for n in honest_nodes),
        restarts=sum(n.restarts for n in world.nodes),
        replay_checks=sum(n.replay_checks for n in world.nodes),
        decided_heights=min((len(world.checker.decisions.get(i, {})) for i in honest), default=0),
    )
