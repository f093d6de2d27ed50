"""A simulated validator process: one core, its application, its WAL, crash and restart.

Theory of operation. A ``SimNode`` plays the role the real node will play: it feeds inputs to
its core one at a time (an inbox drained to completion, so application answers queued while a
step's outputs are carried out are processed afterwards, never re-entrantly) and carries out
the outputs in order. What survives a crash ("disk"): the WAL (a list of inputs), the
double-sign guard state, the committed blocks and their certificates. What does not: the core,
the inbox, pending timers (an epoch counter invalidates them) and the gossip bookkeeping.

Restart replays the WAL records since the last StartHeight through a fresh core and rewrites
the WAL with exactly the records the replay re-logged, then resumes. A crash can also strike in
the middle of carrying out a step's outputs (after the signer ran, before or after the WAL
append), which exercises the guard's refusals during replay.

Gossip: own and relayed messages of the current height are kept in ``log``; a periodic
anti-entropy tick re-sends to each peer what that peer has not received yet, and sends lagging
peers the certified blocks they miss (block sync). This models the gossip layer's guarantee the
paper assumes: after GST every message received by a correct process reaches every correct
process.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from consensus.config import ConsensusConfig
from consensus.core import ConsensusCore
from consensus.crypto import Signer
from consensus.inout import (
    BlockValidity,
    Broadcast,
    CertifiedBlock,
    Decide,
    EvidenceFound,
    Input,
    Output,
    ProposalBlock,
    RequestProposal,
    ScheduleTimeout,
    StartHeight,
    ValidateBlock,
    WalAppend,
)
from consensus.messages import Message, ProposalMessage, SignedVote
from consensus.signguard import GuardedSigner, recover_signed_votes
from consensus.snapshot import CoreSnapshot
from consensus.validators import ValidatorSet

if TYPE_CHECKING:
    from consensus.sim.byzantine import Behaviour
    from consensus.sim.scenario import World

INVALID_PREFIX = b"INVALID|"


def message_height(msg: Message) -> int:
    return msg.signed.proposal.height if isinstance(msg, ProposalMessage) else msg.vote.height


class SimNode:
    def __init__(
        self,
        node_id: int,
        validator_index: int,
        signer: Signer,
        vset: ValidatorSet,
        config: ConsensusConfig,
        chain_id: str,
        world: World,
        behaviour: Behaviour | None,
    ) -> None:
        self.node_id = node_id
        self.validator_index = validator_index
        self.world = world
        self.behaviour = behaviour
        self.honest = behaviour is None
        # A Byzantine node signs whatever it wants; an honest one goes through the guard.
        self.signer: Signer = signer if behaviour is not None else GuardedSigner(signer)
        self.raw_signer = signer
        self.vset = vset
        self.config = config
        self.chain_id = chain_id
        # "disk"
        self.wal: list[Input] = []
        self.committed: dict[int, bytes] = {}
        self.certified: dict[int, CertifiedBlock] = {}
        # volatile
        self.up = True
        self.epoch = 0
        self.crash_mid_step = False
        self.core = ConsensusCore(config, vset, self.signer, chain_id)
        self.inbox: deque[Input] = deque()
        self.busy = False
        self.seen: dict[Message, None] = {}
        self.log: list[Message] = []
        self.log_height = 0
        self.pending_sync: dict[int, CertifiedBlock] = {}
        self.replaying = False
        self.pre_crash: CoreSnapshot | None = None
        self.replay_checks = 0
        self.evidence: list[EvidenceFound] = []
        self.restarts = 0

    # ------------------------------------------------------------------ input side

    def feed(self, inp: Input) -> None:
        if not self.up:
            return
        self.inbox.append(inp)
        self._drain()

    def _drain(self) -> None:
        if self.busy:
            return
        self.busy = True
        try:
            while self.inbox and self.up:
                self._carry_out(self.core.step(self.inbox.popleft()))
        finally:
            self.busy = False

    def receive(self, msg: Message) -> None:
        if not self.up or msg in self.seen:
            return
        self.seen[msg] = None
        self.feed(msg)

    def receive_sync(self, cb: CertifiedBlock) -> None:
        if not self.up:
            return
        height = cb.certificate.height
        if height == self.core.height and self.core.decided is None:
            self.feed(cb)
        elif height > self.core.height:
            self.pending_sync.setdefault(height, cb)

    # ------------------------------------------------------------------ output side

    def _carry_out(self, outputs: list[Output]) -> None:
        if self.crash_mid_step and outputs:
            self.crash_mid_step = False
            cut = self.world.net.rng.randrange(len(outputs) + 1)
            for out in outputs[:cut]:
                self._do(out)
            self.world.crash(self)
            return
        for out in outputs:
            if not self.up:
                return
            self._do(out)

    def _do(self, out: Output) -> None:
        if isinstance(out, Broadcast):
            self.world.broadcast(self, out.message)
        elif isinstance(out, WalAppend):
            self._wal_append(out.input)
        elif isinstance(out, ScheduleTimeout):
            self.world.schedule_timeout(self, out)
        elif isinstance(out, ValidateBlock):
            valid = self.behaviour is not None or not out.block.startswith(INVALID_PREFIX)
            self.inbox.append(BlockValidity(out.height, out.round, out.block_id, valid))
        elif isinstance(out, RequestProposal):
            self.inbox.append(ProposalBlock(out.height, out.round, self.build_block(out.height, out.round)))
        elif isinstance(out, Decide):
            self._decide(out)
        elif isinstance(out, EvidenceFound):
            self.evidence.append(out)

    def _wal_append(self, inp: Input) -> None:
        if not self.replaying:
            self.wal.append(inp)
        if isinstance(inp, ProposalMessage | SignedVote):
            self.seen[inp] = None
            height = message_height(inp)
            if height != self.log_height:
                self.log = []
                self.log_height = height
            self.log.append(inp)

    def build_block(self, height: int, round_: int) -> bytes:
        if self.behaviour is not None:
            return self.behaviour.build_block(self, height, round_)
        return b"blk|%d|%d|node%d|%d" % (height, round_, self.node_id, self.world.net.rng.randrange(1 << 30))

    def _decide(self, d: Decide) -> None:
        previous = self.committed.get(d.height)
        if previous is not None:
            if previous != d.block:
                self.world.checker.conflict_at_node(self, d.height, previous, d.block)
            self.inbox.append(StartHeight(d.height + 1))
            return
        self.committed[d.height] = d.block
        self.certified[d.height] = CertifiedBlock(d.block, d.certificate)
        self.world.checker.record_decision(self, d, self.world.net.now)
        self.inbox.append(StartHeight(d.height + 1))
        self._after_start(d.height + 1)

    def _after_start(self, height: int) -> None:
        cb = self.pending_sync.pop(height, None)
        for h in [h for h in self.pending_sync if h < height]:
            del self.pending_sync[h]
        if cb is not None:
            self.inbox.append(cb)

    # ------------------------------------------------------------------ crash / restart

    def crash(self, between_steps: bool = False) -> None:
        # Crashing between two steps loses nothing that was acted on, so replaying the WAL must
        # rebuild exactly this state; restart() checks it.
        self.pre_crash = self.core.snapshot() if between_steps else None
        self.up = False
        self.epoch += 1
        self.inbox.clear()
        self.seen = {}
        self.log = []
        self.log_height = 0
        self.pending_sync = {}

    def restart(self) -> None:
        """Fresh core; replay the WAL since the last StartHeight; rewrite the WAL; resume."""
        self.up = True
        self.restarts += 1
        self.core = ConsensusCore(self.config, self.vset, self.signer, self.chain_id)
        start = 0
        for i, rec in enumerate(self.wal):
            if isinstance(rec, StartHeight):
                start = i
        records = self.wal[start:]
        self.wal = self.wal[:start]
        self.replaying = True
        self.busy = True
        try:
            for rec in records:
                outputs = self.core.step(rec)
                for out in outputs:
                    if isinstance(out, WalAppend):
                        self.wal.append(out.input)
                    self._do(out)
        finally:
            self.replaying = False
            self.busy = False
        if self.pre_crash is not None:
            self.replay_checks += 1
            if self.core.snapshot() != self.pre_crash:
                self.world.checker.replay_mismatch(self)
        if isinstance(self.signer, GuardedSigner) and self.core.own_address is not None:
            # Votes signed but lost before their WAL append (crash mid-step) come back from the guard.
            recovered = recover_signed_votes(self.signer.recent, self.chain_id, self.core.own_address)
            self.inbox.extend(recovered)
        if not self.core.started:
            self.inbox.append(StartHeight(max(self.committed) + 1 if self.committed else 1))
        self._drain()

    # ------------------------------------------------------------------ gossip

    def anti_entropy(self) -> None:
        if not self.up or (self.behaviour is not None and self.behaviour.silent):
            return
        height = self.core.height
        for peer in self.world.nodes:
            if peer is self or not peer.up:
                continue
            peer_height = peer.core.height
            if peer_height == height and self.log_height == height:
                missing = [m for m in self.log if m not in peer.seen]
                if missing:
                    self.world.send_many(self, peer, missing)
            elif peer_height < height:
                certified = self.certified
                records = [certified[h] for h in range(max(peer_height, 1), height) if h in certified]
                if records:
                    self.world.send_sync(self, peer, records)
