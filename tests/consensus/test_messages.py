"""Sign-bytes, wire encoding and ed25519 signatures of proposals and votes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus import (
    NIL,
    DecodeError,
    Ed25519Signer,
    Proposal,
    ProposalMessage,
    SignedProposal,
    SignedVote,
    SignRequest,
    Step,
    Vote,
    VoteType,
    compute_address,
    compute_block_id,
    decode_message,
    ed25519_verify,
)

ADDR = bytes(range(20))
BID = bytes(range(32))
SIGNER = Ed25519Signer.from_seed(b"\x01" * 32)


def test_vote_sign_bytes_golden() -> None:
    vote = Vote(VoteType.PRECOMMIT, 5, 3, BID, ADDR)
    expected = (
        b"ita/consensus/vote/v1\x00" + b"\x08ita-test" + b"\x02" + (5).to_bytes(8, "big")
        + (3).to_bytes(4, "big") + b"\x20" + BID
    )
    assert vote.sign_bytes("ita-test") == expected


def test_nil_vote_sign_bytes_golden() -> None:
    vote = Vote(VoteType.PREVOTE, 1, 0, NIL, ADDR)
    expected = b"ita/consensus/vote/v1\x00\x08ita-test\x01" + (1).to_bytes(8, "big") + bytes(4) + b"\x00"
    assert vote.sign_bytes("ita-test") == expected


def test_proposal_sign_bytes_golden() -> None:
    proposal = Proposal(7, 2, -1, BID, ADDR)
    expected = (
        b"ita/consensus/proposal/v1\x00\x08ita-test\x20" + (7).to_bytes(8, "big") + (2).to_bytes(4, "big")
        + (0).to_bytes(4, "big") + b"\x20" + BID
    )
    assert proposal.sign_bytes("ita-test") == expected
    assert Proposal(7, 2, 1, BID, ADDR).sign_bytes("ita-test")[-37:-33] == (2).to_bytes(4, "big")


def test_sign_bytes_separate_chain_type_and_validator_is_not_signed() -> None:
    a = Vote(VoteType.PREVOTE, 1, 0, BID, ADDR)
    assert a.sign_bytes("chain-a") != a.sign_bytes("chain-b")
    assert a.sign_bytes("c") != Vote(VoteType.PRECOMMIT, 1, 0, BID, ADDR).sign_bytes("c")
    assert a.sign_bytes("c") == Vote(VoteType.PREVOTE, 1, 0, BID, bytes(20)).sign_bytes("c")
    assert a.sign_bytes("c") != Proposal(1, 0, -1, BID, ADDR).sign_bytes("c")


def test_ed25519_signature_over_sign_bytes() -> None:
    vote = Vote(VoteType.PREVOTE, 3, 1, BID, compute_address(SIGNER.public_key))
    msg = vote.sign_bytes("ita-test")
    sig = SIGNER.sign(SignRequest(3, 1, Step.PREVOTE, msg))
    assert len(sig) == 64
    assert ed25519_verify(SIGNER.public_key, msg, sig)
    assert not ed25519_verify(SIGNER.public_key, vote.sign_bytes("other-chain"), sig)
    assert not ed25519_verify(SIGNER.public_key, msg, sig[:-1] + bytes([sig[-1] ^ 1]))
    assert not ed25519_verify(b"short", msg, sig)
    assert not ed25519_verify(SIGNER.public_key, msg, b"")


@pytest.mark.parametrize(
    "make",
    [
        lambda: Vote(VoteType.PREVOTE, 0, 0, BID, ADDR),  # height 0
        lambda: Vote(VoteType.PREVOTE, 1, -1, BID, ADDR),
        lambda: Vote(VoteType.PREVOTE, 1, 0, b"x" * 31, ADDR),
        lambda: Vote(VoteType.PREVOTE, 1, 0, BID, b"x" * 19),
        lambda: Proposal(1, 0, 0, BID, ADDR),  # pol_round must be < round
        lambda: Proposal(1, 0, -2, BID, ADDR),
        lambda: Proposal(1, 0, -1, NIL, ADDR),  # a proposal names a block
    ],
)
def test_constructors_reject_malformed(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


votes = st.builds(
    Vote,
    st.sampled_from([VoteType.PREVOTE, VoteType.PRECOMMIT]),
    st.integers(1, 2**64 - 1),
    st.integers(0, 2**32 - 2),
    st.one_of(st.just(NIL), st.binary(min_size=32, max_size=32)),
    st.binary(min_size=20, max_size=20),
)
signed_votes = st.builds(SignedVote, votes, st.binary(max_size=64))


@st.composite
def proposal_messages(draw: st.DrawFn) -> ProposalMessage:
    round_ = draw(st.integers(0, 1000))
    pol = draw(st.integers(-1, round_ - 1))
    block = draw(st.binary(max_size=200))
    proposer = draw(st.binary(min_size=20, max_size=20))
    p = Proposal(draw(st.integers(1, 2**64 - 1)), round_, pol, compute_block_id(block), proposer)
    return ProposalMessage(SignedProposal(p, draw(st.binary(max_size=64))), block)


@given(signed_votes)
def test_vote_encoding_roundtrip(v: SignedVote) -> None:
    data = v.encode()
    assert SignedVote.decode(data) == v
    assert decode_message(data) == v


@given(proposal_messages())
def test_proposal_encoding_roundtrip(m: ProposalMessage) -> None:
    data = m.encode()
    assert ProposalMessage.decode(data) == m
    assert m.block_matches()


@given(signed_votes, st.data())
def test_decoding_is_strict(v: SignedVote, data: st.DataObject) -> None:
    raw = v.encode()
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(DecodeError):
        decode_message(raw[:cut])
    with pytest.raises(DecodeError):
        decode_message(raw + b"\x00")


def test_decoding_rejects_bad_kind_and_type() -> None:
    v = SignedVote(Vote(VoteType.PREVOTE, 1, 0, NIL, ADDR), b"s")
    raw = bytearray(v.encode())
    raw[1] = 3  # vote type
    with pytest.raises(DecodeError):
        decode_message(bytes(raw))
    with pytest.raises(DecodeError):
        decode_message(b"\x09" + bytes(raw[1:]))
    with pytest.raises(DecodeError):
        SignedVote.decode(ProposalMessage(SignedProposal(Proposal(1, 0, -1, BID, ADDR), b""), b"").encode())
