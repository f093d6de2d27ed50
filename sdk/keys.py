"""Account and validator keys: ed25519 via PyNaCl, and the key-file format.

Key file (JSON, one object, permissions 0600)::

    {"type": "ed25519",
     "address": "0x<40 lowercase hex>",      # first 20 bytes of SHA-256(public_key)
     "public_key": "<64 lowercase hex>",
     "seed": "<64 lowercase hex>"}           # the 32-byte ed25519 seed: THE SECRET

``address`` and ``public_key`` are redundant with ``seed``; they are there so
a human (or ``jq``) can see which account a file holds, and ``Key.load``
checks them against the seed. Unknown keys are refused.

Writing is atomic and never exposes the seed: a temporary file is created
next to the target with mode 0600 (``os.open``), written, fsynced, then moved
into place (hard link for no-clobber, ``os.replace`` with ``overwrite=True``)
and the directory fsynced. ``Key.load`` refuses a file that group or others
can access at all, like ssh does.

Devnet keys (``devnet_account_key``, ``devnet_validator_key``) are derived
from *public* seeds ``sha256(b"ita-devnet-account/%d")`` and
``sha256(b"ita-devnet-validator/%d")``. Anyone can compute them: they exist
only so a local devnet is reproducible. Never fund them on a real chain.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path

import nacl.signing

from stf.config import address_of
from stf.signing import format_address, parse_address

__all__ = ["KEY_TYPE", "Key", "KeyFileError", "devnet_account_key", "devnet_validator_key"]

KEY_TYPE = "ed25519"
SEED_LEN = 32
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_FILE_KEYS = ("type", "address", "public_key", "seed")


class KeyFileError(ValueError):
    """A key file that cannot be written or must not be trusted; the message says what to do."""


class Key:
    """An ed25519 signing key and the account it controls."""

    __slots__ = ("_signing_key", "_public_key", "_address")

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        self._signing_key = signing_key
        self._public_key = bytes(signing_key.verify_key)
        self._address = address_of(self._public_key)

    @classmethod
    def generate(cls) -> Key:
        """A fresh key from the operating system's CSPRNG (libsodium)."""
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Key:
        if not isinstance(seed, bytes) or len(seed) != SEED_LEN:
            raise ValueError(f"an ed25519 seed is exactly {SEED_LEN} bytes")
        return cls(nacl.signing.SigningKey(seed))

    @property
    def seed(self) -> bytes:
        """The 32-byte secret seed. Handle with care."""
        return bytes(self._signing_key)

    @property
    def public_key(self) -> bytes:
        return self._public_key

    @property
    def address(self) -> bytes:
        return self._address

    @property
    def address_hex(self) -> str:
        return format_address(self._address)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte detached ed25519 signature of ``message``."""
        if not isinstance(message, bytes):
            raise TypeError(f"message must be bytes, got {type(message).__name__}")
        return self._signing_key.sign(message).signature

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Key) and other._public_key == self._public_key

    def __hash__(self) -> int:
        return hash(self._public_key)

    def __repr__(self) -> str:  # never print the seed
        return f"Key(address={self.address_hex})"

    def to_json(self) -> str:
        doc = {
            "type": KEY_TYPE,
            "address": self.address_hex,
            "public_key": self._public_key.hex(),
            "seed": self.seed.hex(),
        }
        return json.dumps(doc, indent=2) + "\n"

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write the key file atomically with mode 0600; refuse to replace a file unless ``overwrite``."""
        target = Path(path)
        if target.exists() and not overwrite:
            raise KeyFileError(f"{target} already exists; refusing to overwrite a key (pass overwrite=True)")
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            try:
                os.fchmod(fd, 0o600)  # the umask can only remove bits, but be explicit
                os.write(fd, self.to_json().encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
            _move_into_place(tmp, target, overwrite)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(target.parent)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Key:
        """Read a key file, refusing loose permissions and any inconsistency."""
        source = Path(path)
        fd = os.open(source, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
            if mode & 0o077:
                raise KeyFileError(
                    f"{source} is accessible by group/others (mode {mode:04o}); "
                    f"a key file must be private: run `chmod 600 {source}`"
                )
            raw = b""
            while chunk := os.read(fd, 65536):
                raw += chunk
        finally:
            os.close(fd)
        return cls._from_file_bytes(source, raw)

    @classmethod
    def _from_file_bytes(cls, source: Path, raw: bytes) -> Key:
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise KeyFileError(f"{source} is not a JSON key file: {exc}") from None
        if not isinstance(doc, dict):
            raise KeyFileError(f"{source}: expected a JSON object")
        missing = [k for k in _FILE_KEYS if k not in doc]
        unknown = sorted(k for k in doc if k not in _FILE_KEYS)
        if missing or unknown:
            raise KeyFileError(f"{source}: missing keys {missing}, unknown keys {unknown}")
        if doc["type"] != KEY_TYPE:
            raise KeyFileError(f"{source}: type must be {KEY_TYPE!r}, got {doc['type']!r}")
        key = cls.from_seed(_hex32(source, "seed", doc["seed"]))
        if _hex32(source, "public_key", doc["public_key"]) != key.public_key:
            raise KeyFileError(f"{source}: public_key does not match the seed (corrupted or edited file)")
        try:
            address = parse_address(doc["address"])
        except ValueError as exc:
            raise KeyFileError(f"{source}: {exc}") from None
        if address != key.address:
            raise KeyFileError(
                f"{source}: address {doc['address']!r} does not match the seed (expected {key.address_hex})"
            )
        return key


def _hex32(source: Path, name: str, value: object) -> bytes:
    if not isinstance(value, str) or _HEX64.fullmatch(value) is None:
        raise KeyFileError(f"{source}: {name} must be 64 hex digits")
    return bytes.fromhex(value)


def _move_into_place(tmp: Path, target: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)  # atomic no-clobber: fails if target appeared meanwhile
    except FileExistsError:
        raise KeyFileError(
            f"{target} already exists; refusing to overwrite a key (pass overwrite=True)"
        ) from None
    except OSError:  # pragma: no cover - filesystems without hard links: best effort
        if target.exists():
            raise KeyFileError(f"{target} already exists; refusing to overwrite a key") from None
        os.replace(tmp, target)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _devnet_key(label: bytes, i: int) -> Key:
    if isinstance(i, bool) or not isinstance(i, int) or i < 0:
        raise ValueError(f"devnet key index must be a non-negative int, got {i!r}")
    return Key.from_seed(hashlib.sha256(b"%s/%d" % (label, i)).digest())


def devnet_account_key(i: int) -> Key:
    """PUBLIC, devnet-only account key #i: seed = sha256(b"ita-devnet-account/%d" % i)."""
    return _devnet_key(b"ita-devnet-account", i)


def devnet_validator_key(i: int) -> Key:
    """PUBLIC, devnet-only validator key #i: seed = sha256(b"ita-devnet-validator/%d" % i)."""
    return _devnet_key(b"ita-devnet-validator", i)
