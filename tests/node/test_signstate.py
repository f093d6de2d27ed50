from __future__ import annotations

import json
from pathlib import Path

import pytest

from node import signstate
from node.signstate import (
    STEP_PRECOMMIT,
    STEP_PREVOTE,
    STEP_PROPOSE,
    DoubleSignRefused,
    GuardedSigner,
    SignAction,
    SignState,
    SignStateError,
    SignStateFile,
    check_sign,
)
from sdk.keys import Key

LAST = SignState(10, 2, STEP_PREVOTE, b"vote-bytes", b"sig")


@pytest.mark.parametrize(
    ("height", "round_", "step", "sign_bytes", "action"),
    [
        (10, 2, STEP_PRECOMMIT, b"other", SignAction.SIGN),  # higher step
        (10, 3, STEP_PROPOSE, b"other", SignAction.SIGN),  # higher round
        (11, 0, STEP_PROPOSE, b"other", SignAction.SIGN),  # higher height
        (10, 2, STEP_PREVOTE, b"vote-bytes", SignAction.RESIGN_SAME),
        (10, 2, STEP_PREVOTE, b"other", SignAction.REFUSE),  # equivocation
        (10, 2, STEP_PROPOSE, b"vote-bytes", SignAction.REFUSE),  # lower step
        (10, 1, STEP_PRECOMMIT, b"x", SignAction.REFUSE),  # lower round
        (9, 5, STEP_PRECOMMIT, b"x", SignAction.REFUSE),  # lower height
    ],
)
def test_check_sign(height: int, round_: int, step: int, sign_bytes: bytes, action: SignAction) -> None:
    decision = check_sign(LAST, height, round_, step, sign_bytes)
    assert decision.action is action
    if action is SignAction.RESIGN_SAME:
        assert decision.signature == b"sig"
    if action is SignAction.REFUSE:
        assert decision.reason


def test_check_sign_without_history_and_bad_step() -> None:
    assert check_sign(None, 0, 0, STEP_PROPOSE, b"").action is SignAction.SIGN
    with pytest.raises(ValueError, match="step"):
        check_sign(None, 1, 0, 4, b"")


def test_file_round_trip_and_permissions(tmp_path: Path) -> None:
    store = SignStateFile(tmp_path / "priv_validator_state.json")
    assert store.load() is None
    store.save(LAST)
    assert store.load() == LAST
    assert (store.path.stat().st_mode & 0o777) == 0o600
    doc = json.loads(store.path.read_text())
    assert doc == {
        "height": 10, "round": 2, "step": 2, "sign_bytes": b"vote-bytes".hex(), "signature": b"sig".hex(),
    }


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        b'{"height": 1, "round": 0, "step": 2, "sign_bytes": "00"}',
        b'{"height": -1, "round": 0, "step": 2, "sign_bytes": "00", "signature": ""}',
        b'{"height": 1, "round": 0, "step": 9, "sign_bytes": "00", "signature": ""}',
        b'{"height": 1, "round": 0, "step": 2, "sign_bytes": "zz", "signature": ""}',
        b'{"height": true, "round": 0, "step": 2, "sign_bytes": "", "signature": ""}',
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
    store.save(LAST)

    def crash(src: object, dst: object) -> None:
        raise OSError("power lost")

    monkeypatch.setattr(signstate.os, "replace", crash)
    with pytest.raises(OSError, match="power lost"):
        store.save(SignState(11, 0, STEP_PROPOSE, b"new", b"newsig"))
    assert store.load() == LAST  # the old, valid state is what a restart sees
    assert (tmp_path / ".state.json.tmp").exists()  # the written temp is simply ignored
    monkeypatch.undo()
    newer = SignState(11, 0, STEP_PROPOSE, b"new", b"newsig")
    store.save(newer)
    assert store.load() == newer and not (tmp_path / ".state.json.tmp").exists()


def test_guarded_signer_persists_before_returning(tmp_path: Path) -> None:
    key = Key.from_seed(b"\x07" * 32)
    store = SignStateFile(tmp_path / "state.json")
    seen_on_disk: list[SignState | None] = []

    def sign(message: bytes) -> bytes:
        seen_on_disk.append(store.load())  # the state of the file while the signature is being computed
        return key.sign(message)

    signer = GuardedSigner(store, sign)
    sig = signer.sign(5, 0, STEP_PREVOTE, b"prevote-5-0")
    assert seen_on_disk == [None]  # computed in memory first ...
    assert store.load() == SignState(5, 0, STEP_PREVOTE, b"prevote-5-0", sig)  # ... durable when returned
    assert signer.sign(5, 0, STEP_PREVOTE, b"prevote-5-0") == sig  # re-sign: the stored signature ...
    assert len(seen_on_disk) == 1  # ... without signing again
    with pytest.raises(DoubleSignRefused, match="different bytes"):
        signer.sign(5, 0, STEP_PREVOTE, b"prevote-5-0-other-block")
    restarted = GuardedSigner(store, sign)
    with pytest.raises(DoubleSignRefused, match="below"):
        restarted.sign(4, 9, STEP_PRECOMMIT, b"old")
    assert restarted.sign(5, 0, STEP_PRECOMMIT, b"precommit") == key.sign(b"precommit")


def test_a_failed_save_releases_no_signature(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SignStateFile(tmp_path / "state.json")
    signer = GuardedSigner(store, lambda m: b"signature")

    def broken_save(state: SignState) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        signer.sign(1, 0, STEP_PROPOSE, b"p")
    assert signer.last is None
