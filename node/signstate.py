"""Double-sign guard file (CometBFT ``priv_validator_state.json``): durable storage only.

Theory of operation
- The rule (sign / re-sign identical bytes / refuse lower or conflicting) lives in
  ``consensus.signguard``; its ``GuardedSigner`` signs in memory and hands the new list of
  recent signed states to ``persist`` *before* returning a signature. This module is that
  persistence: ``SignStateFile.save`` writes a temp file, fsyncs it, renames it over the
  file and fsyncs the directory, so a crash anywhere leaves either the old or the new state,
  never a torn one, and a signature never leaves the process before the state forbidding
  its conflicting twin is on disk.
- The file keeps the few most recent signed states (oldest first; the last one is the guard
  position) so that votes signed just before a crash can be recovered and re-broadcast
  (``consensus.recover_signed_votes``).
- A file that exists but cannot be parsed is a ``SignStateError``: the node must stop rather
  than sign with a forgotten history. A missing file means a validator that never signed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from consensus import SignState, Step
from node.durable import fsync_dir

__all__ = ["SignStateError", "SignStateFile"]

_STEPS = tuple(int(s) for s in Step)


class SignStateError(ValueError):
    """The signing-state file is unreadable or invalid."""


def _uint(doc: dict[str, object], key: str, path: Path) -> int:
    if key not in doc:
        raise SignStateError(f"{path}: missing {key!r}")
    value = doc[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SignStateError(f"{path}: {key} must be a non-negative integer, got {value!r}")
    return value


def _hex(doc: dict[str, object], key: str, path: Path) -> bytes:
    value = doc.get(key)
    try:
        if not isinstance(value, str):
            raise ValueError
        return bytes.fromhex(value)
    except ValueError:
        raise SignStateError(f"{path}: {key} must be a hex string, got {value!r}") from None


def _state_from(doc: object, path: Path) -> SignState:
    if not isinstance(doc, dict):
        raise SignStateError(f"{path}: expected a JSON object for a signed state")
    step = _uint(doc, "step", path)
    if step not in _STEPS:
        raise SignStateError(f"{path}: step must be one of {_STEPS}, got {step}")
    return SignState(
        _uint(doc, "height", path), _uint(doc, "round", path), Step(step), _hex(doc, "sign_bytes", path),
        _hex(doc, "signature", path),
    )


def _state_doc(state: SignState) -> dict[str, object]:
    return {
        "height": state.height, "round": state.round, "step": int(state.step),
        "sign_bytes": state.sign_bytes.hex(), "signature": state.signature.hex(),
    }


class SignStateFile:
    """Load and durably replace the signing-state file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @property
    def _tmp(self) -> Path:
        return self.path.with_name(f".{self.path.name}.tmp")

    def load(self) -> tuple[SignState, ...]:
        """The recorded recent states, oldest first; () if the file does not exist."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return ()
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SignStateError(f"{self.path}: not valid JSON ({exc}); refusing to sign") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("recent"), list):
            raise SignStateError(f"{self.path}: expected an object with a 'recent' list")
        states = tuple(_state_from(item, self.path) for item in doc["recent"])
        positions = [s.position() for s in states]
        if positions != sorted(positions):
            raise SignStateError(f"{self.path}: recent states are not in ascending order")
        return states

    def save(self, recent: tuple[SignState, ...]) -> None:
        """Write temp -> fsync -> rename over the file -> fsync the directory."""
        last: dict[str, object] = _state_doc(recent[-1]) if recent else {}
        doc: dict[str, object] = {k: last[k] for k in ("height", "round", "step") if k in last}
        doc["recent"] = [_state_doc(s) for s in recent]
        data = (json.dumps(doc, indent=2) + "\n").encode("ascii")
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self._tmp, self.path)
        fsync_dir(self.path.parent)
