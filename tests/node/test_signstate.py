from __future__ import annotations

from pathlib import Path

import nacl.signing
import pytest

from consensus import Ed25519Signer, GuardedSigner, SignRefused, SignRequest, SignState, Step
from node import signstate
from node.signstate import SignStateError, SignStateFile

LAST = SignState(10, 2, Step.PREVOTE, b"vote-bytes", b"sig")
EARLIER = SignState(10, 2, Step.PROPOSE, b"proposal-bytes", b"psig")


def test_file_round_trip_and_permissions(tmp_path: Path) -> None:
    store = SignStateFile(tmp_path / "priv_validator_state.json")
    assert store.load() == ()
    store.save((EARLIER, LAST))
    assert store.load() == (EARLIER, LAST)
    assert (store.path.stat().st_mode & 0o777) == 0o600


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        b'{"recent": [{"height": 1, "round": 0, "step": 2, "sign_bytes": "00"}]}',
        b'{"recent": [{"height": -1, "round": 0, "step": 2, "sign_bytes": "00", "signature": ""}]}',
        b'{"recent": [{"height": 1, "round": 0, "step": 9, "sign_bytes": "00", "signature": ""}]}',
        b'{"recent": [{"height": 1, "round": 0, "step": 2, "sign_bytes": "zz", "signature": ""}]}',
        b'{"recent": [{"height": 2, "round": 0, "step": 2, "sign_bytes": "", "signature": ""},'
        b' {"height": 1, "round": 0, "step": 2, "sign_bytes": "", "signature": ""}]}',
    ],
)
def test_unreadable_file_refuses(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with pytest.raises(SignStateError, match=str(path)):
        SignStateFile(path).load()


def test_crash_between_write_and_rename_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SignStateFile(tmp_path / "state.json")
    store.save((LAST,))

    def crash(src: object, dst: object) -> None:
        raise OSError("power lost")

    monkeypatch.setattr(signstate.os, "replace", crash)
    newer = SignState(11, 0, Step.PROPOSE, b"new", b"newsig")
    with pytest.raises(OSError, match="power lost"):
        store.save((LAST, newer))
    assert store.load() == (LAST,)  # the old, valid state is what a restart sees
    monkeypatch.undo()
    store.save((LAST, newer))
    assert store.load() == (LAST, newer)


def test_consensus_guard_persists_here_before_a_signature_is_returned(tmp_path: Path) -> None:
    store = SignStateFile(tmp_path / "state.json")
    key = nacl.signing.SigningKey(b"\x07" * 32)
    on_disk_when_returned: list[tuple[SignState, ...]] = []
    signer = GuardedSigner(Ed25519Signer(key), store.load(), persist=store.save)
    request = SignRequest(5, 0, Step.PREVOTE, b"prevote-5-0")
    signature = signer.sign(request)
    on_disk_when_returned.append(store.load())
    assert on_disk_when_returned == [(SignState(5, 0, Step.PREVOTE, b"prevote-5-0", signature),)]
    restarted = GuardedSigner(Ed25519Signer(key), store.load(), persist=store.save)
    assert restarted.sign(request) == signature  # identical bytes: the stored signature again
    with pytest.raises(SignRefused):
        restarted.sign(SignRequest(5, 0, Step.PREVOTE, b"prevote-5-0-other-block"))
    with pytest.raises(SignRefused):
        restarted.sign(SignRequest(4, 9, Step.PRECOMMIT, b"old"))


def test_a_failed_save_releases_no_signature(tmp_path: Path) -> None:
    def broken_save(states: tuple[SignState, ...]) -> None:
        raise OSError("disk full")

    signer = GuardedSigner(Ed25519Signer(nacl.signing.SigningKey(b"\x01" * 32)), (), persist=broken_save)
    with pytest.raises(OSError, match="disk full"):
        signer.sign(SignRequest(1, 0, Step.PROPOSE, b"p"))
    assert signer.last is None
