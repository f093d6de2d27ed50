"""WAL records for consensus inputs, and recovery by replay.

The core's state is a function of the sequence of inputs it accepted, and it announces each of
them with ``WalAppend(input)`` before any output that depends on it. The node persists
``encode_input(input)`` (framing, CRC32, fsync and end-of-height markers are the node's job);
after a crash, ``replay`` feeds the decoded records to a fresh core, which then holds the same
state as before the crash (checked by ``CoreSnapshot`` equality in the tests).

Record encoding: one kind byte, then the fields. Kinds 1 and 2 are the gossip encodings of
proposals and votes (``consensus.messages``), so a logged message is byte-identical to the wire.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from consensus.certificate import CommitCertificate
from consensus.codec import DecodeError, Reader, Writer
from consensus.core import ConsensusCore
from consensus.inout import (
    BlockValidity,
    CertifiedBlock,
    Input,
    Output,
    ProposalBlock,
    StartHeight,
    Timeout,
)
from consensus.messages import MSG_PROPOSAL, MSG_VOTE, ProposalMessage, SignedVote, decode_message
from consensus.types import Step

KIND_START_HEIGHT: Final = 16
KIND_TIMEOUT: Final = 17
KIND_PROPOSAL_BLOCK: Final = 18
KIND_BLOCK_VALIDITY: Final = 19
KIND_CERTIFIED_BLOCK: Final = 20


def encode_input(inp: Input) -> bytes:
    if isinstance(inp, ProposalMessage | SignedVote):
        return inp.encode()
    w = Writer()
    if isinstance(inp, StartHeight):
        w.u8(KIND_START_HEIGHT).u64(inp.height)
    elif isinstance(inp, Timeout):
        w.u8(KIND_TIMEOUT).u64(inp.height).u32(inp.round).u8(int(inp.step))
    elif isinstance(inp, ProposalBlock):
        w.u8(KIND_PROPOSAL_BLOCK).u64(inp.height).u32(inp.round).long_bytes(inp.block)
    elif isinstance(inp, BlockValidity):
        w.u8(KIND_BLOCK_VALIDITY).u64(inp.height).u32(inp.round).short_bytes(inp.block_id).u8(int(inp.valid))
    elif isinstance(inp, CertifiedBlock):
        w.u8(KIND_CERTIFIED_BLOCK).long_bytes(inp.block)
        inp.certificate.write(w)
    else:
        raise TypeError(f"not a consensus input: {type(inp).__name__}")
    return w.finish()


def decode_input(data: bytes) -> Input:
    """Inverse of encode_input; raises DecodeError on anything malformed."""
    if not data:
        raise DecodeError("empty record")
    if data[0] in (MSG_PROPOSAL, MSG_VOTE):
        return decode_message(data)
    r = Reader(data)
    kind = r.u8()
    inp: Input
    if kind == KIND_START_HEIGHT:
        inp = StartHeight(r.u64())
    elif kind == KIND_TIMEOUT:
        height, round_, raw_step = r.u64(), r.u32(), r.u8()
        if raw_step not in (1, 2, 3):
            raise DecodeError(f"bad step {raw_step}")
        inp = Timeout(height, round_, Step(raw_step))
    elif kind == KIND_PROPOSAL_BLOCK:
        inp = ProposalBlock(r.u64(), r.u32(), r.long_bytes())
    elif kind == KIND_BLOCK_VALIDITY:
        inp = BlockValidity(r.u64(), r.u32(), r.short_bytes(), r.boolean())
    elif kind == KIND_CERTIFIED_BLOCK:
        inp = CertifiedBlock(r.long_bytes(), CommitCertificate.read(r))
    else:
        raise DecodeError(f"unknown record kind {kind}")
    r.done()
    return inp


def replay(core: ConsensusCore, records: Iterable[Input]) -> list[Output]:
    """Feed logged inputs to a (fresh) core; return all outputs produced along the way.

    The driver may re-send the returned Broadcasts (harmless: peers deduplicate) and must
    re-arm the timeouts of the current round; a replayed Decide for an already committed height
    must be ignored.
    """
    outputs: list[Output] = []
    for inp in records:
        outputs.extend(core.step(inp))
    return outputs
