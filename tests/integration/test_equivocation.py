"""Two processes sharing one validator key (a double-signing operator): honest nodes never diverge
and the equivocation is recorded as evidence (HOME/data/evidence.jsonl).

Validator 3 runs twice: its normal home, and a "twin" home with the same validator key but its own
data, WAL and double-sign guard file (so neither process refuses to sign). Both dial the honest
nodes whose keys sort above theirs (validators 0 and 1); a node holds one stream per peer key, so
each new stream from one twin replaces the other's and those honest nodes hear both twins in
turn. Consensus messages are not relayed, so an honest node only sees a conflict when it hears
both twins within one round before deciding; while validator 2 is down the honest nodes cannot
decide without validator 3's votes, rounds the twins split last long, and conflicting proposals
and votes reach them (with all four up, decisions are too quick for that to be reliable). Then
validator 2 starts, block-syncs and joins: with 30 of 40 power honest, safety must hold for all.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from devnet.network import free_ports
from node.config import PeerConfig
from tests.integration.conftest import NetFactory
from tests.integration.support import WAIT_S, TestNet

pytestmark = pytest.mark.integration

DOUBLE_SIGNER = 3
HONEST = [0, 1, 2]


def evidence_records(net: TestNet, nodes: list[int]) -> list[dict[str, object]]:
    records = []
    for i in nodes:
        path = Path(net.nodes[i].home) / "data" / "evidence.jsonl"
        if path.exists():
            records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return records


def test_shared_validator_key_is_recorded_as_evidence_and_honest_nodes_agree(make_net: NetFactory) -> None:
    net = make_net(4).create()
    grpc_port, metrics_port = free_ports(2)
    peers = [
        PeerConfig("127.0.0.1", int(net.nodes[j].grpc.rpartition(":")[2]), net.nodes[j].key.public_key)
        for j in HONEST
    ]
    twin, twin_client = net.add_node_process(
        "twin", net.nodes[DOUBLE_SIGNER].key, peers, f"127.0.0.1:{grpc_port}", f"127.0.0.1:{metrics_port}"
    )
    for i in (0, 1, DOUBLE_SIGNER):
        net.procs[i].start()
    twin.start()
    net.wait_height(2, [0, 1])
    net.start_load(20.0, accounts="0-9", nodes=[0, 1])

    deadline = time.monotonic() + WAIT_S
    while not evidence_records(net, HONEST) and time.monotonic() < deadline:
        time.sleep(0.5)
    records = evidence_records(net, HONEST)
    assert records, f"no evidence recorded by the honest nodes within {WAIT_S:.0f} s\n{net.log_tails()}"
    assert {r["kind"] for r in records} <= {"DuplicateVoteEvidence", "ConflictingProposalEvidence"}
    # every record names the double signer (the engine writes the evidence's repr: raw address bytes)
    double_signer = repr(net.nodes[DOUBLE_SIGNER].key.address)
    assert all(double_signer in str(r["repr"]) for r in records), records[:2]
    assert all(isinstance(r["height"], int) and r["height"] >= 1 for r in records)

    net.procs[2].start()  # the third honest validator joins late: block sync, then consensus
    net.wait_height(net.max_height([0, 1]) + 2, HONEST)
    net.wait_advance(5, HONEST)  # the honest majority keeps committing
    net.assert_same_chain(HONEST)
    # and whatever the two halves of the double signer committed is the same chain too
    net.assert_same_chain(HONEST, clients=[net.client(DOUBLE_SIGNER), twin_client])
    assert all(net.procs[i].alive() for i in HONEST)
