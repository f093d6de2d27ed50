"""Double-sign guard file (CometBFT ``priv_validator_state.json``).

Theory of operation
- The file records the last thing this validator signed: (height, round,
  step, sign_bytes, signature), steps ordered proposal(1) < prevote(2) <
  precommit(3) as in consensus.types.Step.
- ``check_sign`` is the pure rule for a new request at (H, R, S) with bytes B:
  higher (H, R, S) than the last -> SIGN; the same (H, R, S) with identical
  bytes -> RESIGN_SAME (hand back the stored signature: a retry after a
  crash or a re-broadcast); lower (H, R, S) -> REFUSE; same (H, R, S) with
  different bytes -> REFUSE (that would be equivocation).
- ``GuardedSigner.sign`` computes the signature in memory, then writes the
  new state durably -- temp file, fsync, atomic rename, fsync of the
  directory -- and only then returns the signature. A crash anywhere before
  the rename leaves the previous file intact and the signature never left
  the process; a crash after it leaves a state that forbids the twin.
- A file that exists but cannot be parsed is a ``SignStateError``: the node
  must stop rather than sign with a forgotten history. A missing file means
  a validator that never signed (``ita init`` creates the file).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

__all__ = [
    "STEP_PRECOMMIT",
    "STEP_PREVOTE",
    "STEP_PROPOSE",
    "DoubleSignRefused",
    "GuardedSigner",
    "SignAction",
    "SignDecision",
    "SignState",
    "SignStateError",
    "SignStateFile",
    "check_sign",
]

STEP_PROPOSE = 1
STEP_PREVOTE = 2
STEP_PRECOMMIT = 3
_STEPS = (STEP_PROPOSE, STEP_PREVOTE, STEP_PRECOMMIT)


class SignStateError(ValueError):
    """The signing-state file is unreadable or invalid."""


class DoubleSignRefused(Exception):
    """Signing this request could equivocate; it was refused."""


@dataclass(frozen=True, slots=True)
class SignState:
    height: int
    round: int
    step: int
    sign_bytes: bytes
    signature: bytes

    def position(self) -> tuple[int, int, int]:
        return (self.height, self.round, self.step)


class SignAction(Enum):
    SIGN = "sign"
    RESIGN_SAME = "resign_same"
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class SignDecision:
    action: SignAction
    reason: str = ""  # why, when refused
    signature: bytes = b""  # the stored signature, for RESIGN_SAME


def check_sign(
    last: SignState | None, height: int, round_: int, step: int, sign_bytes: bytes
) -> SignDecision:
    """The pure double-sign rule (see the module docstring)."""
    if step not in _STEPS:
        raise ValueError(f"step must be one of {_STEPS}, got {step}")
    if last is None:
        return SignDecision(SignAction.SIGN)
    position = (height, round_, step)
    if position > last.position():
        return SignDecision(SignAction.SIGN)
    if position < last.position():
        return SignDecision(
            SignAction.REFUSE, f"height/round/step {position} is below the last signed {last.position()}"
        )
    if sign_bytes != last.sign_bytes:
        return SignDecision(
            SignAction.REFUSE, f"already signed different bytes at height/round/step {position}"
        )
    return SignDecision(SignAction.RESIGN_SAME, signature=last.signature)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _field(doc: dict[str, object], key: str, path: Path) -> object:
    if key not in doc:
        raise SignStateError(f"{path}: missing {key!r}")
    return doc[key]


def _uint(doc: dict[str, object], key: str, path: Path) -> int:
    value = _field(doc, key, path)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SignStateError(f"{path}: {key} must be a non-negative integer, got {value!r}")
    return value


def _hex(doc: dict[str, object], key: str, path: Path) -> bytes:
    value = _field(doc, key, path)
    try:
        if not isinstance(value, str):
            raise ValueError
        return bytes.fromhex(value)
    except ValueError:
        raise SignStateError(f"{path}: {key} must be a hex string, got {value!r}") from None


class SignStateFile:
    """Load and durably replace the signing-state file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @property
    def _tmp(self) -> Path:
        return self.path.with_name(f".{self.path.name}.tmp")

    def load(self) -> SignState | None:
        """The recorded state; None if the file does not exist."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SignStateError(f"{self.path}: not valid JSON ({exc}); refusing to sign") from None
        if not isinstance(doc, dict):
            raise SignStateError(f"{self.path}: expected a JSON object")
        step = _uint(doc, "step", self.path)
        if step not in _STEPS:
            raise SignStateError(f"{self.path}: step must be one of {_STEPS}, got {step}")
        return SignState(
            height=_uint(doc, "height", self.path),
            round=_uint(doc, "round", self.path),
            step=step,
            sign_bytes=_hex(doc, "sign_bytes", self.path),
            signature=_hex(doc, "signature", self.path),
        )

    def save(self, state: SignState) -> None:
        """Write temp -> fsync -> rename over the file -> fsync the directory."""
        doc = {
            "height": state.height,
            "round": state.round,
            "step": state.step,
            "sign_bytes": state.sign_bytes.hex(),
            "signature": state.signature.hex(),
        }
        data = (json.dumps(doc, indent=2) + "\n").encode("ascii")
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self._tmp, self.path)
        _fsync_dir(self.path.parent)


class GuardedSigner:
    """Signs consensus sign-bytes only when ``check_sign`` allows it, persisting state first."""

    def __init__(self, store: SignStateFile, sign: Callable[[bytes], bytes]) -> None:
        self._store = store
        self._sign = sign
        self._last = store.load()

    @property
    def last(self) -> SignState | None:
        return self._last

    def sign(self, height: int, round_: int, step: int, sign_bytes: bytes) -> bytes:
        """The signature, durably recorded before it is returned; DoubleSignRefused if unsafe."""
        decision = check_sign(self._last, height, round_, step, sign_bytes)
        if decision.action is SignAction.REFUSE:
            raise DoubleSignRefused(decision.reason)
        if decision.action is SignAction.RESIGN_SAME:
            return decision.signature
        signature = self._sign(sign_bytes)
        state = SignState(height, round_, step, sign_bytes, signature)
        self._store.save(state)
        self._last = state
        return signature
