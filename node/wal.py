"""Consensus write-ahead log: CRC-framed records in segment files of many heights each.

Theory of operation
-------------------
Record framing (all integers big-endian)::

    u32 length | u32 crc32(payload) | payload        payload = u8 kind || body
    kind 1 INPUT       body = opaque consensus input bytes (consensus.wal.encode_input)
    kind 2 END_HEIGHT  body = u64 height             ("height H is committed")

``length`` counts the payload (kind byte included), so it is >= 1: a run of
zero bytes (a file extended but never written) is never a valid record.

Segments: ``DIR/{first:020d}.wal`` holds the heights ``first, first+1, ...``
in order: the inputs of consensus at a height, then ``END_HEIGHT(height)``
once the node has made block ``height`` durable in its block store, then the
next height's inputs. ``end_height(h)`` appends the marker and hands it to the
OS without an fsync (see Durability). A segment is closed (fsynced) and a new
one started at the next height once it holds ``max_heights`` sealed heights or
``max_bytes`` bytes; only the current and the previous segment are kept. So a
height costs no file creation, directory fsync or unlink: those happen once
per segment (``max_heights=1`` gives one segment per height).

Invariants checked on open (``Wal.open``):
- the END_HEIGHT markers of a segment are ``first, first+1, ...`` in order;
  every segment but the last ends with a marker, and the next segment starts
  at the height after it;
- a bad record in a closed segment, or a bad record in the last segment that
  is followed by a valid one, is *corruption in the middle*:
  ``WalCorruptError``, and the node must stop. "Followed" means a valid
  record starting at any byte offset past the bad record's claimed end (its
  header's length when plausible, else the next byte), so bytes inside a
  partly written payload never count, whatever they contain;
- a bad record in the last segment with no valid record after it is a *torn
  tail* (a crash during a write): it is logged, reported in
  ``WalRecovery.truncated_bytes``/``tail_error`` and truncated away (fsync).
  Limit: a length field damaged into a plausible value that reaches past the
  end of the file looks exactly like a torn write and is treated as one.

Replay: ``WalRecovery.inputs`` are the INPUT payloads after the last END
marker, i.e. those of the height in progress (``WalRecovery.height``), in the
order they were appended. If the block store already holds that height
(crash between the store's commit and ``end_height``, or a marker that never
reached the disk), the node calls ``end_height(height)`` instead of replaying.

Durability: ``append`` only buffers; ``flush_and_sync`` writes and fsyncs.
The node syncs before acting on an input it must not forget (before signing
or broadcasting anything that depends on it). END_HEIGHT markers are not
synced on their own: the block store's synced write of the block is what
makes a height committed, and the next sync (the next height's first
broadcast, or closing the segment) carries the marker to the disk anyway.
Losing it in a power cut leaves the height's inputs at the tail, which the
node seals from its store as above.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Final

from node.durable import fsync_dir

__all__ = [
    "KIND_END_HEIGHT",
    "KIND_INPUT",
    "MAX_RECORD_BYTES",
    "Wal",
    "WalCorruptError",
    "WalRecovery",
    "encode_record",
    "segment_name",
]

log = logging.getLogger("ita.node.wal")

KIND_INPUT: Final = 1
KIND_END_HEIGHT: Final = 2
MAX_RECORD_BYTES: Final = 64 * 1024 * 1024
SEGMENT_MAX_HEIGHTS: Final = 1_000  # sealed heights per segment before the next one starts
SEGMENT_MAX_BYTES: Final = 16 * 1024 * 1024  # bounds a segment (and the scan of the last one on open)
_HEADER = struct.Struct(">II")
_SEGMENT_RE = re.compile(r"(\d{20})\.wal")
_KIND_BYTES = re.compile(rb"[\x01\x02]")


class WalCorruptError(Exception):
    """The WAL is damaged somewhere other than its tail; the node must not continue."""


@dataclass(frozen=True, slots=True)
class _Record:
    offset: int
    end: int
    kind: int
    body: bytes


@dataclass(slots=True)
class WalRecovery:
    height: int  # the height in progress (segment being appended to)
    last_end_height: int | None  # height of the last END marker seen, None for a fresh WAL
    inputs: list[bytes] = field(default_factory=list)  # INPUT payloads after that marker, in order
    truncated_bytes: int = 0  # torn tail removed from the last segment
    tail_error: str = ""  # what was wrong with the torn tail


def segment_name(height: int) -> str:
    return f"{height:020d}.wal"


def encode_record(kind: int, body: bytes) -> bytes:
    payload = bytes((kind,)) + body
    if len(payload) > MAX_RECORD_BYTES:
        raise ValueError(f"WAL record of {len(payload)} bytes exceeds {MAX_RECORD_BYTES}")
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _try_record(data: bytes, offset: int) -> _Record | str:
    """The record at ``offset``, or a description of why there is none."""
    if offset + _HEADER.size > len(data):
        return f"partial record header ({len(data) - offset} of {_HEADER.size} bytes)"
    length, crc = _HEADER.unpack_from(data, offset)
    if length == 0 or length > MAX_RECORD_BYTES:
        return f"impossible record length {length}"
    end = offset + _HEADER.size + length
    if end > len(data):
        return f"partial record (length {length}, only {len(data) - offset - _HEADER.size} payload bytes)"
    payload = data[offset + _HEADER.size : end]
    if zlib.crc32(payload) != crc:
        return f"CRC mismatch (stored {crc:08x}, computed {zlib.crc32(payload):08x})"
    kind = payload[0]
    if kind == KIND_END_HEIGHT and length != 9:
        return f"END_HEIGHT record with a {length - 1}-byte body"
    if kind not in (KIND_INPUT, KIND_END_HEIGHT):
        return f"unknown record kind {kind}"
    return _Record(offset, end, kind, payload[1:])


def _claimed_end(data: bytes, offset: int) -> int:
    """Where the (bad) record at ``offset`` says it ends, or offset+1 if its header is implausible."""
    if offset + _HEADER.size > len(data):
        return len(data)
    length = _HEADER.unpack_from(data, offset)[0]
    if length == 0 or length > MAX_RECORD_BYTES:
        return offset + 1
    return offset + _HEADER.size + length


def _next_valid_record(data: bytes, start: int) -> int | None:
    """The first offset >= ``start`` where a whole valid record starts (kind byte sits at offset+8)."""
    for match in _KIND_BYTES.finditer(data, start + _HEADER.size):
        offset = match.start() - _HEADER.size
        if isinstance(_try_record(data, offset), _Record):
            return offset
    return None


def _scan(data: bytes, name: str, last_segment: bool) -> tuple[list[_Record], int | None, str]:
    """Records of one segment, and the offset/reason of a torn tail (None, "" if clean)."""
    records: list[_Record] = []
    offset = 0
    while offset < len(data):
        item = _try_record(data, offset)
        if isinstance(item, _Record):
            records.append(item)
            offset = item.end
            continue
        if not last_segment:
            raise WalCorruptError(f"WAL segment {name} is corrupt at byte {offset}: {item}")
        # Only bytes beyond the bad record's own claimed extent count: a payload may legitimately
        # contain bytes that look like a record (e.g. a tx crafted to), which must not turn a
        # torn write into a refusal to start.
        following = _next_valid_record(data, _claimed_end(data, offset))
        if following is not None:
            raise WalCorruptError(
                f"WAL segment {name} is corrupt at byte {offset} ({item}) but a valid record follows at "
                f"byte {following}: this is damage in the middle of the log, not a torn write; "
                "refusing to continue (inspect or move the WAL aside by hand)"
            )
        return records, offset, item
    return records, None, ""


def _segments(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for entry in directory.iterdir():
        match = _SEGMENT_RE.fullmatch(entry.name)
        if match:
            found.append((int(match.group(1)), entry))
    found.sort()
    return found


def _check_markers(first: int, name: str, records: list[_Record], closed: bool) -> int:
    """How many heights the segment seals (its END_HEIGHT markers must be first, first+1, ...)."""
    sealed = 0
    for rec in records:
        if rec.kind != KIND_END_HEIGHT:
            continue
        marked = int.from_bytes(rec.body, "big")
        if marked != first + sealed:
            raise WalCorruptError(
                f"WAL segment {name} holds END_HEIGHT({marked}) at byte {rec.offset}, "
                f"expected END_HEIGHT({first + sealed})"
            )
        sealed += 1
    if closed and (not records or records[-1].kind != KIND_END_HEIGHT):
        raise WalCorruptError(
            f"WAL segment {name} has a newer segment after it but no END_HEIGHT marker at its end"
        )
    return sealed


class Wal:
    """Append-only consensus WAL in ``directory``; use ``Wal.open`` to recover and position it."""

    def __init__(
        self,
        directory: Path,
        height: int,
        handle: BinaryIO,
        first: int,
        max_heights: int = SEGMENT_MAX_HEIGHTS,
        max_bytes: int = SEGMENT_MAX_BYTES,
    ) -> None:
        if max_heights < 1 or max_bytes < 1:
            raise ValueError("a WAL segment must hold at least one height and one byte")
        self.directory = directory
        self.height = height  # the height in progress
        self.first = first  # the current segment's first height
        self.max_heights = max_heights
        self.max_bytes = max_bytes
        self._handle: BinaryIO | None = handle

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        initial_height: int = 1,
        max_heights: int = SEGMENT_MAX_HEIGHTS,
        max_bytes: int = SEGMENT_MAX_BYTES,
    ) -> tuple[Wal, WalRecovery]:
        """Recover the WAL (truncating a torn tail) and open it for appending.

        ``initial_height`` names the first segment of a fresh (empty) WAL.
        """
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        segments = _segments(path)
        if not segments:
            handle = cls._create_segment(path, initial_height)
            wal = cls(path, initial_height, handle, initial_height, max_heights, max_bytes)
            return wal, WalRecovery(height=initial_height, last_end_height=None)
        for (first, seg), (next_first, _) in zip(segments, segments[1:], strict=False):
            records, _, _ = _scan(seg.read_bytes(), seg.name, last_segment=False)
            sealed = _check_markers(first, seg.name, records, closed=True)
            if next_first != first + sealed:
                raise WalCorruptError(
                    f"WAL segments jump from {seg.name} (sealed up to height {first + sealed - 1}) "
                    f"to height {next_first}"
                )
        first, seg = segments[-1]
        data = seg.read_bytes()
        records, torn_at, reason = _scan(data, seg.name, last_segment=True)
        sealed = _check_markers(first, seg.name, records, closed=False)
        height = first + sealed
        previous_end = height - 1 if sealed or len(segments) > 1 else None
        recovery = WalRecovery(height=height, last_end_height=previous_end)
        if torn_at is not None:
            recovery.truncated_bytes = len(data) - torn_at
            recovery.tail_error = reason
            log.warning("WAL %s: torn tail at byte %d (%s); truncating %d bytes", seg.name, torn_at, reason,
                        recovery.truncated_bytes)
            with open(seg, "r+b") as handle:
                handle.truncate(torn_at)
                handle.flush()
                os.fsync(handle.fileno())
        last_end = max((i for i, rec in enumerate(records) if rec.kind == KIND_END_HEIGHT), default=-1)
        recovery.inputs = [rec.body for rec in records[last_end + 1 :]]
        wal = cls(path, height, open(seg, "ab"), first, max_heights, max_bytes)
        return wal, recovery

    @staticmethod
    def _create_segment(directory: Path, first: int) -> BinaryIO:
        handle = open(directory / segment_name(first), "ab")
        os.fsync(handle.fileno())
        fsync_dir(directory)
        return handle

    def _file(self) -> BinaryIO:
        if self._handle is None:
            raise ValueError("WAL is closed")
        return self._handle

    def append(self, payload: bytes) -> None:
        """Buffer one INPUT record (durable only after ``flush_and_sync``)."""
        self._file().write(encode_record(KIND_INPUT, payload))

    def flush_and_sync(self) -> None:
        handle = self._file()
        handle.flush()
        os.fsync(handle.fileno())

    def end_height(self, height: int) -> None:
        """Append END_HEIGHT(height) (written, not synced: see Durability); start a new segment when full."""
        if height != self.height:
            raise ValueError(f"end_height({height}) but the WAL is at height {self.height}")
        handle = self._file()
        handle.write(encode_record(KIND_END_HEIGHT, height.to_bytes(8, "big")))
        handle.flush()
        self.height = height + 1
        if self.height - self.first >= self.max_heights or handle.tell() >= self.max_bytes:
            self._next_segment()

    def _next_segment(self) -> None:
        """Close the current segment (fsync), start one at the height in progress, drop older ones."""
        self.flush_and_sync()
        self._file().close()
        self._handle = None
        previous = self.first
        self._handle = self._create_segment(self.directory, self.height)
        self.first = self.height
        removed = False
        for first, seg in _segments(self.directory):
            if first < previous:
                seg.unlink()
                removed = True
        if removed:
            fsync_dir(self.directory)

    def close(self) -> None:
        if self._handle is not None:
            self.flush_and_sync()
            self._handle.close()
            self._handle = None

    def __enter__(self) -> Wal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_segment(path: str | os.PathLike[str]) -> Iterator[tuple[int, bytes]]:
    """(kind, body) of every record of one segment file; strict (any bad record raises). For tools/tests."""
    data = Path(path).read_bytes()
    records, torn_at, reason = _scan(data, Path(path).name, last_segment=True)
    if torn_at is not None:
        raise WalCorruptError(f"{path}: bad record at byte {torn_at}: {reason}")
    for rec in records:
        yield rec.kind, rec.body
