from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.wal import (
    KIND_END_HEIGHT,
    KIND_INPUT,
    Wal,
    WalCorruptError,
    encode_record,
    iter_segment,
    segment_name,
)

PAYLOADS = [b"proposal-1", b"vote-" + bytes(range(40)), b"timeout", b"last-record-of-height"]


def write(directory: Path, payloads: list[bytes], height: int = 1) -> Path:
    wal, _ = Wal.open(directory, initial_height=height)
    for p in payloads:
        wal.append(p)
    wal.close()
    return directory / segment_name(height)


def test_fresh_append_and_replay(tmp_path: Path) -> None:
    wal, rec = Wal.open(tmp_path / "wal", initial_height=5)
    assert (rec.height, rec.last_end_height, rec.inputs) == (5, None, [])
    for p in PAYLOADS:
        wal.append(p)
    wal.flush_and_sync()
    wal.close()
    wal, rec = Wal.open(tmp_path / "wal")
    assert rec.height == 5 and rec.inputs == PAYLOADS and rec.truncated_bytes == 0 and rec.tail_error == ""
    wal.append(b"more")
    wal.close()
    assert Wal.open(tmp_path / "wal")[1].inputs == [*PAYLOADS, b"more"]


def test_record_framing() -> None:
    import zlib

    record = encode_record(KIND_INPUT, b"abc")
    assert record == (4).to_bytes(4, "big") + zlib.crc32(b"\x01abc").to_bytes(4, "big") + b"\x01abc"


def end(height: int) -> tuple[int, bytes]:
    return (KIND_END_HEIGHT, height.to_bytes(8, "big"))


def test_heights_share_a_segment_until_it_is_full(tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    wal, _ = Wal.open(directory, max_heights=3)
    for height in range(1, 9):
        wal.append(b"in-%d" % height)
        wal.end_height(height)
        assert wal.height == height + 1
    wal.append(b"in-9")
    wal.close()
    # segments start at 1, 4 and 7; only the current one and the one before it are kept
    assert sorted(p.name for p in directory.iterdir()) == [segment_name(4), segment_name(7)]
    assert list(iter_segment(directory / segment_name(4))) == [
        (KIND_INPUT, b"in-4"), end(4), (KIND_INPUT, b"in-5"), end(5), (KIND_INPUT, b"in-6"), end(6),
    ]
    assert list(iter_segment(directory / segment_name(7))) == [
        (KIND_INPUT, b"in-7"), end(7), (KIND_INPUT, b"in-8"), end(8), (KIND_INPUT, b"in-9"),
    ]
    wal, rec = Wal.open(directory, max_heights=3)
    assert (rec.height, rec.last_end_height, rec.inputs) == (9, 8, [b"in-9"])
    wal.end_height(9)  # the segment is full: the next height starts a new one
    wal.close()
    assert sorted(p.name for p in directory.iterdir()) == [segment_name(7), segment_name(10)]
    assert Wal.open(directory)[1].height == 10


def test_a_segment_also_ends_at_its_byte_limit(tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    wal, _ = Wal.open(directory, max_bytes=100)
    wal.append(b"x" * 60)
    wal.end_height(1)  # 68 + 17 bytes: still room
    wal.append(b"y" * 10)
    wal.end_height(2)  # past 100 bytes: height 3 starts a segment
    wal.close()
    assert sorted(p.name for p in directory.iterdir()) == [segment_name(1), segment_name(3)]
    with pytest.raises(ValueError, match="at least one height"):
        Wal.open(directory, max_heights=0)


def test_reopen_right_after_end_height(tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    wal, _ = Wal.open(directory, initial_height=3)
    wal.append(b"x")
    wal.end_height(3)
    wal.close()
    wal, rec = Wal.open(directory)
    assert (rec.height, rec.last_end_height, rec.inputs) == (4, 3, [])
    with pytest.raises(ValueError, match="WAL is at height 4"):
        wal.end_height(3)
    wal.append(b"y")  # height 4 goes on in the same segment
    wal.close()
    assert [p.name for p in directory.iterdir()] == [segment_name(3)]
    assert Wal.open(directory)[1].inputs == [b"y"]


def test_a_fresh_segment_lost_before_its_first_record(tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    wal, _ = Wal.open(directory, max_heights=1)
    wal.append(b"a")
    wal.end_height(1)
    wal.close()
    (directory / segment_name(2)).unlink()  # crash after closing segment 1, before segment 2 existed
    wal, rec = Wal.open(directory, max_heights=1)
    assert (rec.height, rec.last_end_height, rec.inputs) == (2, 1, [])
    wal.append(b"b")
    wal.close()
    assert Wal.open(directory)[1].inputs == [b"b"]


def test_torn_last_record_at_every_byte_offset(tmp_path: Path) -> None:
    source = tmp_path / "source"
    segment = write(source, PAYLOADS)
    full = segment.read_bytes()
    last_start = len(full) - len(encode_record(KIND_INPUT, PAYLOADS[-1]))
    for cut in range(last_start, len(full)):
        case = tmp_path / f"cut{cut}"
        shutil.copytree(source, case)
        with open(case / segment.name, "r+b") as handle:
            handle.truncate(cut)
        wal, rec = Wal.open(case)
        assert rec.inputs == PAYLOADS[:-1], cut
        assert rec.truncated_bytes == cut - last_start
        assert (rec.tail_error != "") == (cut > last_start)
        assert (case / segment.name).stat().st_size == last_start
        wal.append(b"after-crash")
        wal.close()
        assert Wal.open(case)[1].inputs == [*PAYLOADS[:-1], b"after-crash"]


def test_torn_end_height_marker(tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    wal, _ = Wal.open(directory)
    wal.append(b"a")
    wal.end_height(1)
    wal.close()
    seg = directory / segment_name(1)
    seg.write_bytes(seg.read_bytes()[:-3])
    wal, rec = Wal.open(directory)
    assert (rec.height, rec.last_end_height, rec.inputs) == (1, None, [b"a"]) and rec.truncated_bytes == 14
    wal.end_height(1)  # the node finds block 1 in its store and seals the height
    wal.close()
    assert Wal.open(directory)[1].height == 2


def test_a_lost_marker_after_sealed_heights(tmp_path: Path) -> None:
    # a power cut: END_HEIGHT(2) was written but never synced; height 1 stays sealed
    directory = tmp_path / "wal"
    wal, _ = Wal.open(directory)
    for height in (1, 2):
        wal.append(b"in-%d" % height)
        wal.end_height(height)
    wal.close()
    seg = directory / segment_name(1)
    seg.write_bytes(seg.read_bytes()[: -len(encode_record(KIND_END_HEIGHT, bytes(8)))])
    wal, rec = Wal.open(directory)
    assert (rec.height, rec.last_end_height, rec.inputs) == (2, 1, [b"in-2"])
    wal.close()


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def test_bad_crc_in_the_tail_is_truncated(tmp_path: Path) -> None:
    segment = write(tmp_path / "wal", PAYLOADS)
    flip(segment, segment.stat().st_size - 1)
    _, rec = Wal.open(tmp_path / "wal")
    assert rec.inputs == PAYLOADS[:-1] and "CRC mismatch" in rec.tail_error


def test_bad_crc_in_the_middle_stops_the_node(tmp_path: Path) -> None:
    segment = write(tmp_path / "wal", PAYLOADS)
    second = len(encode_record(KIND_INPUT, PAYLOADS[0]))
    flip(segment, second + 8 + 3)  # a payload byte of record 2
    expected = f"corrupt at byte {second} .*CRC mismatch.*valid record follows"
    with pytest.raises(WalCorruptError, match=expected):
        Wal.open(tmp_path / "wal")


def test_bad_length_in_the_middle_stops_the_node(tmp_path: Path) -> None:
    segment = write(tmp_path / "wal", PAYLOADS)
    second = len(encode_record(KIND_INPUT, PAYLOADS[0]))
    flip(segment, second)  # most significant byte of record 2's length: points past the end of file
    with pytest.raises(WalCorruptError, match="damage in the middle"):
        Wal.open(tmp_path / "wal")


def test_zero_filled_tail_is_a_torn_write(tmp_path: Path) -> None:
    segment = write(tmp_path / "wal", PAYLOADS)
    with open(segment, "ab") as handle:
        handle.write(b"\x00" * 4096)
    _, rec = Wal.open(tmp_path / "wal")
    assert rec.inputs == PAYLOADS and rec.truncated_bytes == 4096 and "length 0" in rec.tail_error


def test_damage_in_a_sealed_segment_is_corruption(tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    wal, _ = Wal.open(directory, max_heights=1)
    wal.append(b"a")
    wal.append(b"b")
    wal.end_height(1)
    wal.append(b"c")
    wal.close()
    sealed = directory / segment_name(1)
    original = sealed.read_bytes()
    sealed.write_bytes(original[:-1])  # even a "tail" of a sealed segment is not a torn write
    with pytest.raises(WalCorruptError, match=segment_name(1)):
        Wal.open(directory)
    sealed.write_bytes(original[: len(encode_record(KIND_INPUT, b"a")) * 2])  # marker missing
    with pytest.raises(WalCorruptError, match="no END_HEIGHT marker at its end"):
        Wal.open(directory)


def test_structural_errors(tmp_path: Path) -> None:
    gap = tmp_path / "gap"
    gap.mkdir()
    (gap / segment_name(1)).write_bytes(encode_record(KIND_END_HEIGHT, (1).to_bytes(8, "big")))
    (gap / segment_name(3)).write_bytes(b"")
    with pytest.raises(WalCorruptError, match="jump"):
        Wal.open(gap)
    after_end = tmp_path / "after"
    after_end.mkdir()
    (after_end / segment_name(1)).write_bytes(
        encode_record(KIND_END_HEIGHT, (1).to_bytes(8, "big")) + encode_record(KIND_INPUT, b"x")
    )
    (after_end / segment_name(2)).write_bytes(b"")
    with pytest.raises(WalCorruptError, match="no END_HEIGHT marker at its end"):
        Wal.open(after_end)
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / segment_name(1)).write_bytes(encode_record(KIND_END_HEIGHT, (7).to_bytes(8, "big")))
    with pytest.raises(WalCorruptError, match=r"END_HEIGHT\(7\).*expected END_HEIGHT\(1\)"):
        Wal.open(wrong)
    skipped = tmp_path / "skipped"
    skipped.mkdir()
    (skipped / segment_name(1)).write_bytes(
        encode_record(KIND_END_HEIGHT, (1).to_bytes(8, "big"))
        + encode_record(KIND_END_HEIGHT, (3).to_bytes(8, "big"))
    )
    with pytest.raises(WalCorruptError, match=r"END_HEIGHT\(3\).*expected END_HEIGHT\(2\)"):
        Wal.open(skipped)


@settings(max_examples=60, deadline=None)
@given(
    payloads=st.lists(st.binary(min_size=0, max_size=40), min_size=1, max_size=8),
    cut_fraction=st.floats(min_value=0, max_value=1),
)
def test_any_truncation_recovers_the_longest_whole_prefix(
    tmp_path_factory: pytest.TempPathFactory, payloads: list[bytes], cut_fraction: float
) -> None:
    directory = tmp_path_factory.mktemp("wal")
    segment = write(directory, payloads)
    data = segment.read_bytes()
    cut = int(len(data) * cut_fraction)
    segment.write_bytes(data[:cut])
    _, rec = Wal.open(directory)
    ends, pos = [], 0
    for p in payloads:
        pos += len(encode_record(KIND_INPUT, p))
        ends.append(pos)
    whole = sum(1 for end in ends if end <= cut)
    assert rec.inputs == payloads[:whole]


def test_record_lookalikes_inside_a_torn_payload_do_not_stop_the_node(tmp_path: Path) -> None:
    # A payload (think: a tx in a proposed block) that embeds valid WAL records, torn mid-write.
    evil = b"prefix" + encode_record(KIND_INPUT, b"fake") * 3 + b"suffix" * 10
    segment = write(tmp_path / "wal", [b"a", evil])
    data = segment.read_bytes()
    segment.write_bytes(data[: len(data) - 20])
    _, rec = Wal.open(tmp_path / "wal")
    assert rec.inputs == [b"a"] and rec.tail_error.startswith("partial record")


def test_bad_crc_with_a_lookalike_inside_is_middle_corruption_if_records_follow(tmp_path: Path) -> None:
    evil = b"prefix" + encode_record(KIND_INPUT, b"fake")
    segment = write(tmp_path / "wal", [evil, b"good"])
    flip(segment, 8 + 2)
    with pytest.raises(WalCorruptError, match="valid record follows at byte"):
        Wal.open(tmp_path / "wal")
    segment.write_bytes(segment.read_bytes()[: len(encode_record(KIND_INPUT, evil))])  # bad record is last
    _, rec = Wal.open(tmp_path / "wal")
    assert rec.inputs == [] and "CRC mismatch" in rec.tail_error
