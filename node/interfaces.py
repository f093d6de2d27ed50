"""The seams inside the node process (typing.Protocol only; no behaviour here).

Three pieces meet in `node/main.py`:
- the Engine (node/engine.py): the one owner of consensus, the application and the mempool;
- the peer network (node/peers.py): gRPC `Peer.Gossip` streams to the other validators;
- the client API (node/service.py): the gRPC `Node` service.

The network calls the engine through `PeerHandler`; the engine talks to the network through
`Network`; the client API reads and submits through `NodeBackend`. Everything runs on one
asyncio event loop, so none of these calls need locks; methods that may block on I/O or on
worker processes are coroutines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from node.mempool import Admission
from proto.ita.v1 import block_pb2, node_pb2


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the engine dropped a peer's message: ``reason`` is the metric label
    (``ita_peer_messages_dropped_total{reason}``); ``misbehaviour`` says whether it counts
    against the peer's bad-message limit (an honest peer never sends it)."""

    reason: str
    detail: str
    misbehaviour: bool


class Network(Protocol):
    """Outbound gossip, implemented by node/peers.py. Calls never block; messages to a peer
    that is not connected are dropped (consensus and block sync retry on their own)."""

    def broadcast_consensus(self, payload: bytes) -> None:
        """An encoded consensus message (consensus.encode_message) to every connected peer."""

    def broadcast_txs(self, txs: Sequence[bytes]) -> None:
        """Newly admitted SignedTx bytes, batched by the caller, to every connected peer."""

    def broadcast_status(self, height: int) -> None:
        """Our latest committed height (peers use it to decide whether to sync from us)."""

    def request_blocks(self, from_height: int, to_height: int) -> None:
        """Ask one connected peer that reported height >= from_height for committed blocks
        [from_height, min(to_height, its height)], in turn (a peer claiming a height it does not
        have gets only its share of the requests); answers arrive through PeerHandler.on_blocks."""

    def peer_heights(self) -> dict[bytes, int]:
        """Last reported committed height per connected peer (by validator public key)."""

    def report_misbehaviour(self, peer: bytes, reason: str, detail: str) -> None:
        """A message `peer` sent turned out bad only when the engine processed it (a consensus
        signature that does not verify): count it against the peer's bad-message limit."""


class PeerHandler(Protocol):
    """Inbound gossip, implemented by the Engine."""

    def on_consensus(self, payload: bytes, peer: bytes) -> Refusal | None:
        """A consensus message from `peer` (public key), queued for the consensus core; or the
        reason it was dropped: malformed, signed in another validator's name (peers send only
        their own messages), or beyond the peer's share of the core's queue."""

    async def on_txs(self, txs: Sequence[bytes], peer: bytes) -> None:
        """Transactions gossiped by a peer: verified and admitted like client ones, not re-gossiped."""

    def on_status(self, height: int, peer: bytes) -> None:
        """The peer's committed height."""

    def on_blocks(self, blocks: Sequence[block_pb2.CommittedBlock], peer: bytes) -> int:
        """Committed blocks answering our request (verified by the engine before use); returns
        how many of them were refused as invalid (no valid commit certificate): the peer's
        misbehaviour, counted against its bad-message limit."""

    def blocks_for(self, from_height: int, to_height: int, max_bytes: int) -> list[bytes]:
        """Serialized CommittedBlocks we can serve for a peer's request (possibly fewer)."""

    def height(self) -> int:
        """Our latest committed height."""


class NodeBackend(Protocol):
    """What the client-facing gRPC `Node` service needs, implemented by the Engine."""

    chain_id: str

    async def submit_txs(self, txs: Sequence[bytes]) -> list[Admission]:
        """Verify (worker processes) and admit; one Admission per tx, in order."""

    def status(self) -> node_pb2.StatusResponse: ...

    def latest_height(self) -> int: ...

    def committed_block_bytes(self, height: int) -> bytes | None:
        """Serialized CommittedBlock at `height`, None if not stored."""

    async def wait_for_height(self, height: int) -> None:
        """Return once `height` is committed (for StreamBlocks' live tail)."""

    def get_tx(self, tx_hash: bytes) -> node_pb2.GetTxResponse | None: ...

    def get_account(self, address: bytes) -> node_pb2.GetAccountResponse: ...

    def snapshot(self, height: int) -> tuple[int, bytes] | None:
        """(height, snapshot bytes) exactly at `height`, or the latest when height == 0."""
