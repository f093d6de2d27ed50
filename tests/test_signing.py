"""stf/signing.py: message layout, every rejection reason, tx hash, address text forms."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stf.config
from stf import signing
from stf.signing import (
    ED25519_L,
    TX_DOMAIN_TAG,
    SignatureError,
    format_address,
    is_valid_chain_id,
    is_valid_public_key,
    parse_address,
    signing_message,
    tx_hash,
    verify_signature,
)

# RFC 8032, section 7.1, TEST 1 (empty message).
RFC_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PK = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC_SIG = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
P = 2**255 - 19
IDENTITY = (1).to_bytes(32, "little")  # the neutral point (0, 1): order 1
ORDER_4 = bytes(32)  # y = 0: (sqrt(-1), 0) has order 4

chain_ids = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", min_size=1, max_size=64
)


def _key(seed_byte: int = 7) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(bytes([seed_byte]) * 32)


def _signed(message: bytes, seed_byte: int = 7) -> tuple[bytes, bytes]:
    key = _key(seed_byte)
    return bytes(key.verify_key), key.sign(message).signature


def _reason(public_key: bytes, signature: bytes, message: bytes) -> str:
    with pytest.raises(SignatureError) as info:
        verify_signature(public_key, signature, message)
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith(info.value.reason + ": ")
    return info.value.reason


# --- signing_message -------------------------------------------------------------------------------


def test_signing_message_layout_is_exact() -> None:
    msg = signing_message("ita-devnet-1", b"\x08\x01body")
    assert msg == b"ita/tx/v1\x00" + b"\x0c" + b"ita-devnet-1" + b"\x08\x01body"
    assert TX_DOMAIN_TAG == b"ita/tx/v1\x00"


def test_signing_message_keeps_body_bytes_verbatim_including_empty() -> None:
    assert signing_message("a", b"") == TX_DOMAIN_TAG + b"\x01a"
    body = bytes(range(256))
    assert signing_message("a", body).endswith(body)


@pytest.mark.parametrize("chain_id", ["", "x" * 65, "ità", "has space", "a/b", "a\n", "a:b", "ＡＢ"])
def test_signing_message_rejects_bad_chain_ids(chain_id: str) -> None:
    assert not is_valid_chain_id(chain_id)
    with pytest.raises(ValueError, match="invalid chain id"):
        signing_message(chain_id, b"body")


def test_signing_message_is_the_same_once_the_chain_prefix_is_remembered() -> None:
    """A valid chain id's prefix is kept for later calls (a node signs and checks for one chain):
    the bytes do not change, and an invalid id is refused every time, never remembered."""
    first = signing_message("ita-cache-test", b"\x01")
    assert signing_message("ita-cache-test", b"\x01") == first == b"ita/tx/v1\x00\x0eita-cache-test\x01"
    assert signing_message("ita-cache-test", b"") == first[:-1]
    for _ in range(2):
        with pytest.raises(ValueError, match="invalid chain id"):
            signing_message("bad id", b"")
    with pytest.raises(TypeError):
        signing_message("ita-cache-test", "body")  # type: ignore[arg-type]


def test_chain_id_length_boundary_and_type() -> None:
    assert signing_message("x" * 64, b"")[len(TX_DOMAIN_TAG)] == 64
    assert not is_valid_chain_id(b"ita-devnet-1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        signing_message("ita", "body")  # type: ignore[arg-type]


@given(chain_ids, chain_ids, st.binary(max_size=64), st.binary(max_size=64))
def test_signing_message_is_injective(c1: str, c2: str, b1: bytes, b2: bytes) -> None:
    if (c1, b1) != (c2, b2):
        assert signing_message(c1, b1) != signing_message(c2, b2)


def test_a_tx_for_one_chain_does_not_verify_on_another() -> None:
    body = b"same body"
    pk, sig = _signed(signing_message("ita-devnet-1", body))
    verify_signature(pk, sig, signing_message("ita-devnet-1", body))
    assert _reason(pk, sig, signing_message("ita-devnet-2", body)) == "bad_signature"


# --- verify_signature ------------------------------------------------------------------------------


def test_rfc8032_vector_verifies() -> None:
    assert bytes(nacl.signing.SigningKey(RFC_SEED).verify_key) == RFC_PK
    verify_signature(RFC_PK, RFC_SIG, b"")
    assert _reason(RFC_PK, RFC_SIG, b"\x00") == "bad_signature"


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_bad_public_key_length(length: int) -> None:
    _, sig = _signed(b"m")
    assert _reason(b"\x01" * length, sig, b"m") == "bad_public_key_length"


def test_public_key_of_wrong_type_is_a_length_error() -> None:
    pk, sig = _signed(b"m")
    assert _reason(bytearray(pk), sig, b"m") == "bad_public_key_length"  # type: ignore[arg-type]


@pytest.mark.parametrize("length", [0, 32, 63, 65])
def test_bad_signature_length(length: int) -> None:
    pk, _ = _signed(b"m")
    assert _reason(pk, b"\x00" * length, b"m") == "bad_signature_length"


def test_length_checks_come_before_everything_else() -> None:
    assert _reason(b"", b"", b"m") == "bad_public_key_length"
    assert _reason(IDENTITY, b"", b"m") == "bad_signature_length"


def test_s_plus_l_malleation_is_non_canonical() -> None:
    """The classic malleability: S' = S + L satisfies the equation but must be refused."""
    pk, sig = _signed(b"m")
    s = int.from_bytes(sig[32:], "little")
    assert s + ED25519_L < 2**256
    mauled = sig[:32] + (s + ED25519_L).to_bytes(32, "little")
    assert _reason(pk, mauled, b"m") == "non_canonical_signature"


@pytest.mark.parametrize("s_value", [ED25519_L, ED25519_L + 1, 2**253, 2**256 - 1])
def test_non_canonical_s_values(s_value: int) -> None:
    pk, sig = _signed(b"m")
    assert _reason(pk, sig[:32] + s_value.to_bytes(32, "little"), b"m") == "non_canonical_signature"


def test_s_just_below_l_is_not_rejected_as_non_canonical() -> None:
    pk, sig = _signed(b"m")
    assert _reason(pk, sig[:32] + (ED25519_L - 1).to_bytes(32, "little"), b"m") == "bad_signature"


@pytest.mark.parametrize("public_key", [IDENTITY, ORDER_4, (P - 1).to_bytes(32, "little")])
def test_small_order_public_keys(public_key: bytes) -> None:
    assert not is_valid_public_key(public_key)
    # With A and R the identity and S = 0 the verification equation holds trivially.
    forged = IDENTITY + bytes(32)
    assert _reason(public_key, forged, b"any message") == "bad_public_key"


def test_non_canonical_public_key_encoding() -> None:
    """y = p + 1 encodes the same point as y = 1 but non-canonically."""
    non_canonical = (P + 1).to_bytes(32, "little")
    assert not is_valid_public_key(non_canonical)
    assert _reason(non_canonical, IDENTITY + bytes(32), b"m") == "bad_public_key"


def test_valid_key_checks() -> None:
    assert is_valid_public_key(RFC_PK)
    assert not is_valid_public_key(RFC_PK[:31])
    assert not is_valid_public_key("ab" * 32)  # type: ignore[arg-type]


@pytest.mark.parametrize("what", ["message", "r", "s_low_bit", "other_key"])
def test_bad_signature(what: str) -> None:
    pk, sig = _signed(b"message")
    message = b"message"
    if what == "message":
        message = b"messagf"
    elif what == "r":
        sig = bytes([sig[0] ^ 1]) + sig[1:]
    elif what == "s_low_bit":
        sig = sig[:32] + bytes([sig[32] ^ 1]) + sig[33:]
    else:
        pk, _ = _signed(b"message", seed_byte=8)
    assert _reason(pk, sig, message) == "bad_signature"


@settings(max_examples=60)
@given(st.binary(min_size=32, max_size=32), st.binary(max_size=200), st.integers(0, 511))
def test_sign_verify_and_any_bit_flip_fails(seed: bytes, message: bytes, bit: int) -> None:
    key = nacl.signing.SigningKey(seed)
    pk, sig = bytes(key.verify_key), key.sign(message).signature
    verify_signature(pk, sig, message)  # raises on failure
    flipped = bytearray(sig)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(SignatureError) as info:
        verify_signature(pk, bytes(flipped), message)
    assert info.value.reason in ("bad_signature", "non_canonical_signature")


# --- tx_hash and addresses ---------------------------------------------------------------------------


def test_tx_hash_is_sha256_of_exact_bytes() -> None:
    assert tx_hash(b"") == bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert tx_hash(b"abc") == hashlib.sha256(b"abc").digest()
    assert len(tx_hash(b"x" * 1000)) == 32
    assert tx_hash(b"abc") != tx_hash(b"abc\x00")
    with pytest.raises(TypeError):
        tx_hash("abc")  # type: ignore[arg-type]


def test_address_of_is_the_config_one() -> None:
    assert signing.address_of is stf.config.address_of
    assert signing.address_of(RFC_PK) == hashlib.sha256(RFC_PK).digest()[:20]


@given(st.binary(min_size=20, max_size=20))
def test_address_text_round_trip(addr: bytes) -> None:
    text = format_address(addr)
    assert re.fullmatch(r"0x[0-9a-f]{40}", text)
    assert parse_address(text) == addr
    assert parse_address("0x" + text[2:].upper()) == addr


@pytest.mark.parametrize("length", [0, 19, 21, 32])
def test_format_address_rejects_wrong_length(length: int) -> None:
    with pytest.raises(ValueError, match="20 bytes"):
        format_address(b"\x00" * length)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ab" * 20, "must start with '0x'"),
        ("0X" + "ab" * 20, "must start with '0x'"),
        ("", "must start with '0x'"),
        ("0x" + "ab" * 19 + "a", "exactly 40 hex digits"),
        ("0x" + "ab" * 21, "exactly 40 hex digits"),
        ("0x" + "ab" * 19 + "ag", "exactly 40 hex digits"),
        ("0x" + "ab" * 20 + "\n", "exactly 40 hex digits"),
        (" 0x" + "ab" * 20, "must start with '0x'"),
        ("0x" + "ab" * 19 + " a", "exactly 40 hex digits"),
        ("0x" + "١" * 40, "exactly 40 hex digits"),
    ],
)
def test_parse_address_is_strict(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_address(text)


def test_parse_address_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        parse_address(b"0x" + b"ab" * 20)  # type: ignore[arg-type]


# --- purity -------------------------------------------------------------------------------------------

FORBIDDEN = {
    "float": re.compile(r"\bfloat\b"),
    "Decimal": re.compile(r"\bDecimal\b"),
    "time module": re.compile(r"^\s*(import|from)\s+(time|datetime)\b", re.M),
    "random": re.compile(r"^\s*(import|from)\s+(random|secrets)\b", re.M),
    "builtin hash()": re.compile(r"(?<![\w.])hash\("),
    "set()": re.compile(r"(?<![\w.])(set|frozenset)\("),
    "set literal/comprehension": re.compile(r"(?<![\w\"'])\{[^}:]*\bfor\b[^}:]*\}"),
}


@pytest.mark.parametrize("name", sorted(FORBIDDEN))
def test_signing_module_stays_pure(name: str) -> None:
    source = Path(signing.__file__).read_text()
    assert FORBIDDEN[name].search(source) is None, f"stf/signing.py uses {name}"


def test_purity_patterns_do_catch_what_they_forbid() -> None:
    samples = {
        "float": "x = float(y)",
        "Decimal": "from decimal import Decimal",
        "time module": "import time",
        "random": "import random",
        "builtin hash()": "k = hash(b)",
        "set()": "s = set(xs)",
        "set literal/comprehension": "s = {x for x in xs}",
    }
    assert sorted(samples) == sorted(FORBIDDEN)
    for name, sample in samples.items():
        assert FORBIDDEN[name].search(sample), name
    assert FORBIDDEN["builtin hash()"].search("def tx_hash(b): hashlib.sha256(b)") is None
