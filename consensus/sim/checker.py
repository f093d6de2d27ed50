"""Safety and liveness properties checked over a simulated run.

- agreement: no two honest nodes decide different blocks at one height (and no honest node
  decides twice differently, e.g. across a crash);
- validity: every block an honest node decides was proposed on the network and is valid for
  the honest application;
- liveness: every honest node decides every target height before the deadline, and heights that
  start after GST are decided within ``round_bound`` rounds.

The checker only observes; ``violations`` is empty for a correct run. The negative-control
tests run scenarios outside the fault model and require the checker to report violations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from consensus.inout import Decide
from consensus.sim.node import INVALID_PREFIX

if TYPE_CHECKING:
    from consensus.sim.node import SimNode


@dataclass(frozen=True, slots=True)
class Violation:
    kind: str  # "agreement" | "validity" | "liveness" | "round-bound" | "integrity"
    detail: str


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    height: int
    round: int
    block_id: bytes
    block: bytes
    time_ms: int


class Checker:
    def __init__(self) -> None:
        self.decisions: dict[int, dict[int, DecisionRecord]] = {}
        self.proposed: dict[bytes, None] = {}
        self.integrity: list[Violation] = []

    def record_proposal(self, block_id: bytes) -> None:
        self.proposed[block_id] = None

    def record_decision(self, node: SimNode, d: Decide, now: int) -> None:
        per_node = self.decisions.setdefault(node.node_id, {})
        per_node[d.height] = DecisionRecord(d.height, d.round, d.block_id, d.block, now)

    def conflict_at_node(self, node: SimNode, height: int, first: bytes, second: bytes) -> None:
        self.integrity.append(Violation("integrity", f"node {node.node_id} decided twice at height {height}"))

    def replay_mismatch(self, node: SimNode) -> None:
        detail = f"node {node.node_id}: WAL replay rebuilt another state"
        self.integrity.append(Violation("integrity", detail))

    def check(
        self,
        honest: list[int],
        target_height: int,
        gst_ms: int,
        round_bound: int | None,
        check_liveness: bool = True,
    ) -> list[Violation]:
        violations = [v for v in self.integrity]
        violations.extend(self._agreement(honest))
        violations.extend(self._validity(honest))
        if check_liveness:
            violations.extend(self._liveness(honest, target_height, gst_ms, round_bound))
        return violations

    def _agreement(self, honest: list[int]) -> list[Violation]:
        out: list[Violation] = []
        by_height: dict[int, tuple[int, bytes]] = {}
        for node_id in honest:
            for height, rec in sorted(self.decisions.get(node_id, {}).items()):
                first = by_height.setdefault(height, (node_id, rec.block_id))
                if first[1] != rec.block_id:
                    out.append(Violation(
                        "agreement",
                        f"height {height}: node {first[0]} decided {first[1].hex()[:12]}, "
                        f"node {node_id} decided {rec.block_id.hex()[:12]}",
                    ))
        return out

    def _validity(self, honest: list[int]) -> list[Violation]:
        out: list[Violation] = []
        for node_id in honest:
            for height, rec in sorted(self.decisions.get(node_id, {}).items()):
                if rec.block.startswith(INVALID_PREFIX):
                    out.append(Violation("validity", f"node {node_id} decided an invalid block at {height}"))
                if rec.block_id not in self.proposed:
                    out.append(Violation("validity", f"node {node_id} decided unproposed block at {height}"))
        return out

    def _liveness(
        self, honest: list[int], target_height: int, gst_ms: int, round_bound: int | None
    ) -> list[Violation]:
        out: list[Violation] = []
        for node_id in honest:
            decided = self.decisions.get(node_id, {})
            missing = [h for h in range(1, target_height + 1) if h not in decided]
            if missing:
                out.append(Violation("liveness", f"node {node_id} did not decide heights {missing}"))
        if round_bound is None:
            return out
        for height in range(1, target_height + 1):
            if not self.started_after(honest, height, gst_ms):
                continue
            for node_id in honest:
                rec = self.decisions.get(node_id, {}).get(height)
                if rec is not None and rec.round > round_bound:
                    out.append(Violation(
                        "round-bound", f"node {node_id} decided height {height} only in round {rec.round}"
                    ))
        return out

    def started_after(self, honest: list[int], height: int, gst_ms: int) -> bool:
        """True if every honest node began `height` at or after GST."""
        if height == 1:
            return gst_ms == 0
        for node_id in honest:
            prev = self.decisions.get(node_id, {}).get(height - 1)
            if prev is None or prev.time_ms < gst_ms:
                return False
        return True

    def max_round(self, honest: list[int]) -> int:
        rounds = [rec.round for n in honest for rec in self.decisions.get(n, {}).values()]
        return max(rounds) if rounds else -1
