"""Consensus benchmark: heights per second of simulated validators, CPU per vote.

Prints one JSON object per result on stdout:

- ``consensus_heights``: N validators (4 and 10) run by the deterministic simulator
  (consensus.sim) with no faults, until every validator has decided ``--heights`` heights;
  ``latency_ms`` 0 is instant delivery, 1 is a fixed 1 ms simulated network delay. Simulated
  time is free: what is measured is the CPU (``time.process_time``) of the whole run - all N
  cores plus the simulator's event queue - so ``cpu_ms_per_height`` is the cost of one height
  for the N validators together, and ``heights_per_s`` = heights / CPU seconds. Run once with
  the insecure fake signature scheme (the cost of the consensus logic) and once with real
  ed25519 (PyNaCl) signing and verification.
- ``consensus_vote_cpu``: one core (not the proposer) fed pre-signed inputs of complete
  heights (StartHeight, proposal, validity answer, then every other validator's prevote and
  precommit); ``us_per_vote`` is the CPU time spent in ``step`` on vote inputs divided by the
  number of votes, signature verification included.

Usage: python bench/consensus.py [--heights 200] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time

# `python bench/consensus.py` puts bench/ first on sys.path, where this file would shadow the package.
_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from consensus import (  # noqa: E402
    BlockValidity,
    ConsensusCore,
    Ed25519Signer,
    Input,
    Proposal,
    ProposalMessage,
    ProposerSelector,
    SignedProposal,
    SignedVote,
    Signer,
    SignRequest,
    StartHeight,
    Step,
    ValidatorSet,
    Verifier,
    Vote,
    VoteType,
    compute_address,
    compute_block_id,
    ed25519_verify,
)
from consensus.sim import Scenario, run_scenario  # noqa: E402
from consensus.sim.fakecrypto import FakeSigner, fake_public_key, fake_verify  # noqa: E402
from consensus.sim.network import NetworkConfig  # noqa: E402

CHAIN = "ita-bench"


def bench_heights(n: int, latency_ms: int, heights: int, real_crypto: bool) -> dict[str, object]:
    if latency_ms == 0:
        net = NetworkConfig(instant=True, gst_ms=0)
    else:
        net = NetworkConfig(min_delay_ms=latency_ms, max_delay_ms=latency_ms, drop_per_mille=0, gst_ms=0)
    scenario = Scenario(n=n, heights=heights, network=net, real_crypto=real_crypto, deadline_ms=10**9,
                        gossip_interval_ms=1000)
    start = time.process_time()
    result = run_scenario(scenario, seed=1)
    cpu = time.process_time() - start
    if result.violations or result.decided_heights < heights:
        raise SystemExit(f"benchmark run failed: {result.violations[:3]}")
    return {
        "bench": "consensus_heights",
        "validators": n,
        "latency_ms": latency_ms,
        "crypto": "ed25519" if real_crypto else "fake",
        "heights": heights,
        "cpu_s": round(cpu, 4),
        "heights_per_s": round(heights / cpu, 1),
        "cpu_ms_per_height": round(cpu * 1000 / heights, 3),
        "simulated_ms": result.end_ms,
        "messages": result.messages_sent,
    }


def _signers(n: int, real_crypto: bool) -> tuple[list[Signer], Verifier]:
    if real_crypto:
        seeds = [hashlib.sha256(b"bench-%d" % i).digest() for i in range(n)]
        return [Ed25519Signer.from_seed(s) for s in seeds], ed25519_verify
    return [FakeSigner(fake_public_key(b"bench-%d" % i)) for i in range(n)], fake_verify


def bench_votes(n: int, heights: int, real_crypto: bool) -> dict[str, object]:
    signers, verifier = _signers(n, real_crypto)
    vset = ValidatorSet([(s.public_key, 1) for s in signers], verifier)
    selector = ProposerSelector(vset)
    me = next(i for i in range(n) if i != selector.proposer(1, 0))
    script: list[tuple[bool, Input]] = []  # (is_vote, input)
    for h in range(1, heights + 1):
        block = b"bench-block-%d" % h
        bid = compute_block_id(block)
        who = selector.proposer(h, 0)
        p = Proposal(h, 0, -1, bid, compute_address(signers[who].public_key))
        sig = signers[who].sign(SignRequest(h, 0, Step.PROPOSE, p.sign_bytes(CHAIN)))
        script.append((False, StartHeight(h)))
        script.append((False, ProposalMessage(SignedProposal(p, sig), block)))
        script.append((False, BlockValidity(h, 0, bid, True)))
        for vote_type, step in ((VoteType.PREVOTE, Step.PREVOTE), (VoteType.PRECOMMIT, Step.PRECOMMIT)):
            for i in range(n):
                if i == me:
                    continue
                v = Vote(vote_type, h, 0, bid, compute_address(signers[i].public_key))
                vote_sig = signers[i].sign(SignRequest(h, 0, step, v.sign_bytes(CHAIN)))
                script.append((True, SignedVote(v, vote_sig)))
    core = ConsensusCore(Scenario().config, vset, signers[me], CHAIN)
    vote_cpu = 0.0
    votes = 0
    decided = 0
    clock = time.process_time
    for is_vote, inp in script:
        if is_vote:
            t0 = clock()
            outputs = core.step(inp)
            vote_cpu += clock() - t0
            votes += 1
        else:
            outputs = core.step(inp)
        decided += sum(1 for o in outputs if type(o).__name__ == "Decide")
    if decided != heights:
        raise SystemExit(f"vote benchmark decided {decided} of {heights} heights")
    return {
        "bench": "consensus_vote_cpu",
        "validators": n,
        "crypto": "ed25519" if real_crypto else "fake",
        "votes": votes,
        "us_per_vote": round(vote_cpu * 1e6 / votes, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--heights", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="few heights (smoke test)")
    args = parser.parse_args()
    heights = 5 if args.quick else args.heights
    env = {"python": platform.python_version(), "machine": platform.machine()}
    for real in (False, True):
        for n in (4, 10):
            for latency in (0, 1):
                print(json.dumps({**bench_heights(n, latency, heights, real), **env}), flush=True)
    for real in (False, True):
        for n in (4, 10):
            print(json.dumps({**bench_votes(n, heights, real), **env}), flush=True)


if __name__ == "__main__":
    main()
