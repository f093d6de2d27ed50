"""sdk/keys.py: keys, signatures, the key file (atomic, 0600, validated), devnet keys."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdk.keys import Key, KeyFileError, devnet_account_key, devnet_validator_key
from stf.config import address_of
from stf.signing import verify_signature

RFC_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PK = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_from_seed_matches_rfc8032() -> None:
    key = Key.from_seed(RFC_SEED)
    assert key.public_key == RFC_PK
    assert key.seed == RFC_SEED
    assert key.address == hashlib.sha256(RFC_PK).digest()[:20] == address_of(RFC_PK)
    assert key.address_hex == "0x" + key.address.hex()
    assert len(key.address_hex) == 42


@pytest.mark.parametrize("seed", [b"", b"\x00" * 31, b"\x00" * 33, "00" * 32])
def test_from_seed_rejects_wrong_seeds(seed: object) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Key.from_seed(seed)  # type: ignore[arg-type]


def test_generate_gives_distinct_working_keys() -> None:
    a, b = Key.generate(), Key.generate()
    assert a.public_key != b.public_key
    verify_signature(a.public_key, a.sign(b"hello"), b"hello")


@settings(max_examples=30)
@given(st.binary(min_size=32, max_size=32), st.binary(max_size=100))
def test_sign_is_deterministic_and_verifies(seed: bytes, message: bytes) -> None:
    key = Key.from_seed(seed)
    sig = key.sign(message)
    assert len(sig) == 64
    assert sig == Key.from_seed(seed).sign(message)
    verify_signature(key.public_key, sig, message)


def test_sign_requires_bytes() -> None:
    with pytest.raises(TypeError):
        Key.from_seed(RFC_SEED).sign("text")  # type: ignore[arg-type]


def test_repr_never_shows_the_seed_and_equality_is_by_public_key() -> None:
    key = Key.from_seed(RFC_SEED)
    assert RFC_SEED.hex() not in repr(key)
    assert key.address_hex in repr(key)
    assert key == Key.from_seed(RFC_SEED)
    assert key != Key.from_seed(b"\x01" * 32)
    assert len({key, Key.from_seed(RFC_SEED)}) == 1


# --- key file -------------------------------------------------------------------------------------


def test_save_load_round_trip_with_0600(tmp_path: Path) -> None:
    key = Key.from_seed(RFC_SEED)
    path = tmp_path / "key.json"
    key.save(path)
    assert _mode(path) == 0o600
    doc = json.loads(path.read_text())
    assert doc == {
        "type": "ed25519",
        "address": key.address_hex,
        "public_key": RFC_PK.hex(),
        "seed": RFC_SEED.hex(),
    }
    loaded = Key.load(path)
    assert loaded.seed == RFC_SEED and loaded.public_key == RFC_PK
    assert [p.name for p in tmp_path.iterdir()] == ["key.json"]  # no temp file left behind


def test_save_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        Key.generate().save(tmp_path / "k.json")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "k.json") == 0o600


def test_save_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    first = Key.from_seed(RFC_SEED)
    first.save(path)
    with pytest.raises(KeyFileError, match="already exists"):
        Key.generate().save(path)
    assert Key.load(path) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.json"]


def test_save_overwrite_replaces(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    Key.from_seed(RFC_SEED).save(path)
    second = Key.from_seed(b"\x02" * 32)
    second.save(path, overwrite=True)
    assert Key.load(path) == second
    assert _mode(path) == 0o600


def test_save_into_missing_directory_fails_cleanly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Key.generate().save(tmp_path / "missing" / "key.json")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o610, 0o601])
def test_load_refuses_files_accessible_by_others(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "key.json"
    Key.generate().save(path)
    path.chmod(mode)
    with pytest.raises(KeyFileError) as info:
        Key.load(path)
    assert "chmod 600" in str(info.value)
    assert f"{mode:04o}" in str(info.value)


def test_load_accepts_0400(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    key = Key.generate()
    key.save(path)
    path.chmod(0o400)
    assert Key.load(path) == key


def _write_private(path: Path, content: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    return path


def _doc(**changes: object) -> str:
    key = Key.from_seed(RFC_SEED)
    doc: dict[str, object] = {
        "type": "ed25519",
        "address": key.address_hex,
        "public_key": key.public_key.hex(),
        "seed": key.seed.hex(),
    }
    for name, value in changes.items():
        if value is None:
            del doc[name]
        else:
            doc[name] = value
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("not json", "not a JSON key file"),
        ("[1, 2]", "expected a JSON object"),
        (_doc(seed=None), "missing keys ['seed']"),
        (_doc(extra="x"), "unknown keys ['extra']"),
        (_doc(type="secp256k1"), "type must be 'ed25519'"),
        (_doc(seed="zz" * 32), "seed must be 64 hex digits"),
        (_doc(seed="00" * 31), "seed must be 64 hex digits"),
        (_doc(seed=12), "seed must be 64 hex digits"),
        (_doc(public_key="00" * 32), "public_key does not match the seed"),
        (_doc(public_key="00"), "public_key must be 64 hex digits"),
        (_doc(address="0x" + "00" * 20), "does not match the seed"),
        (_doc(address="not-an-address"), "must start with '0x'"),
        (_doc(address=5), "address must be a string"),
    ],
)
def test_load_refuses_bad_contents(tmp_path: Path, content: str, fragment: str) -> None:
    path = _write_private(tmp_path / "key.json", content)
    with pytest.raises(KeyFileError) as info:
        Key.load(path)
    assert fragment in str(info.value)


def test_load_accepts_uppercase_hex(tmp_path: Path) -> None:
    key = Key.from_seed(RFC_SEED)
    content = _doc(seed=key.seed.hex().upper(), public_key=key.public_key.hex().upper())
    assert Key.load(_write_private(tmp_path / "k.json", content)) == key


def test_load_refuses_symlinks(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    Key.generate().save(real)
    link = tmp_path / "link.json"
    link.symlink_to(real)
    with pytest.raises(OSError):
        Key.load(link)


# --- devnet keys ----------------------------------------------------------------------------------


def test_devnet_keys_follow_the_documented_derivation() -> None:
    assert devnet_account_key(0).seed == hashlib.sha256(b"ita-devnet-account/0").digest()
    assert devnet_account_key(49).seed == hashlib.sha256(b"ita-devnet-account/49").digest()
    assert devnet_validator_key(3).seed == hashlib.sha256(b"ita-devnet-validator/3").digest()
    assert devnet_account_key(1) == devnet_account_key(1)
    assert devnet_account_key(1) != devnet_validator_key(1)
    assert len({devnet_account_key(i).address for i in range(50)}) == 50


@pytest.mark.parametrize("bad", [-1, True, "1", 1.0])
def test_devnet_key_index_must_be_a_natural_number(bad: object) -> None:
    with pytest.raises(ValueError):
        devnet_account_key(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        devnet_validator_key(bad)  # type: ignore[arg-type]


def test_no_clobber_holds_even_if_the_target_appears_during_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The early exists() check can race; the final hard link must still refuse to replace."""
    path = tmp_path / "key.json"
    original = Key.generate()
    real_exists = Path.exists
    raced: list[bool] = []

    def exists_then_race(self: Path) -> bool:
        if self == path and not raced:
            raced.append(True)
            original.save(path)  # another writer wins the race right after our check
            return False
        return real_exists(self)

    monkeypatch.setattr(Path, "exists", exists_then_race)
    with pytest.raises(KeyFileError, match="already exists"):
        Key.generate().save(path)
    monkeypatch.undo()
    assert raced == [True]
    assert Key.load(path) == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.json"]
