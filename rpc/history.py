"""The indexer's history and its own snapshot, in LevelDB.

Theory of operation
- History is written from the reducer's channel updates, one LevelDB WriteBatch per block
  (or per group of blocks while catching up), ending with ``m:height``. A record's key and
  value depend only on the chain, so replaying blocks that were already recorded (after a
  restart from an older snapshot) rewrites identical bytes: the store converges.
- The indexer snapshot (stf snapshot bytes + the reducer's metadata) is written in the
  same batch as the block it follows, with ``sync=True``; only the latest is kept. On
  restart the indexer loads it and replays the blocks after it (never from genesis again).
- Keys (integers big-endian, so byte order is numeric order; values are JSON records, the
  exact objects the HTTP API returns):

      m:chain          chain id (checked on open)      m:height   u64 last recorded height
      S                u64 height || stf snapshot      s          reducer metadata (JSON)
      T mid trade_id   trade                           F addr trade_id role  fill
      O order_id       order (latest status)           o addr order_id       (index, empty)
      X tx_hash        tx with result                  B height              block
      C mid iv start   candle                          U mid height          funding records
- Lists are served newest first with a ``before`` cursor (exclusive) and a ``limit``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import plyvel

from rpc.candles import INTERVAL_INDEX
from rpc.reducer import ChannelUpdate
from stf.config import ChainConfig

_U64 = struct.Struct(">Q")
_CHAIN = b"m:chain"
_HEIGHT = b"m:height"
_SNAPSHOT = b"S"
_META = b"s"
_MAX8 = b"\xff" * 8
# LevelDB's memtable (default 4 MiB): history arrives at ~25 KB per busy block, and with small
# memtables the flushes and level compactions they trigger cost LevelDB about twice the CPU of
# the writes themselves while catching up (bench/indexer.py); up to two memtables are live
WRITE_BUFFER_BYTES = 32 << 20


class HistoryError(Exception):
    """The history store cannot be opened or is for another chain."""


def _u64(value: int) -> bytes:
    return _U64.pack(value)


def _mid(market_id: int) -> bytes:
    return market_id.to_bytes(2, "big")


class History:
    def __init__(self, path: Path, config: ChainConfig) -> None:
        path.mkdir(parents=True, exist_ok=True)
        try:
            self.db = plyvel.DB(str(path), create_if_missing=True, write_buffer_size=WRITE_BUFFER_BYTES)
        except plyvel.Error as exc:
            raise HistoryError(f"cannot open the history store at {path}: {exc}") from exc
        self.config = config
        chain = self.db.get(_CHAIN)
        if chain is None:
            self.db.put(_CHAIN, config.chain_id.encode(), sync=True)
        elif chain.decode() != config.chain_id:
            self.db.close()
            raise HistoryError(f"history at {path} is for chain {chain.decode()!r}, not {config.chain_id!r}")
        # key prefixes by (kind, market symbol, candle interval or "")
        self._prefixes: dict[tuple[str, str, str], bytes] = {}
        for spec in config.markets:
            mid = _mid(spec.market_id)
            self._prefixes[("T", spec.symbol, "")] = b"T" + mid
            self._prefixes[("U", spec.symbol, "")] = b"U" + mid
            for interval, index in INTERVAL_INDEX.items():
                self._prefixes[("C", spec.symbol, interval)] = b"C" + mid + bytes((index,))

    def close(self) -> None:
        self.db.close()

    # -- writing ----------------------------------------------------------------------------
    def record(
        self,
        blocks: Iterable[tuple[int, list[ChannelUpdate]]],
        snapshot: tuple[int, bytes, bytes] | None = None,
    ) -> None:
        """Record the updates of one or more consecutive blocks (and optionally a snapshot taken
        after the last of them) atomically."""
        last = None
        with self.db.write_batch(transaction=True, sync=snapshot is not None) as batch:
            for height, updates in blocks:
                self._put_updates(batch, updates)
                last = height
            if snapshot is not None:
                height, stf_bytes, meta = snapshot
                batch.put(_SNAPSHOT, _u64(height) + stf_bytes)
                batch.put(_META, meta)
                last = height if last is None else last
            if last is not None:
                batch.put(_HEIGHT, _u64(last))

    def _put_updates(self, batch: Any, updates: list[ChannelUpdate]) -> None:
        dumps = orjson.dumps
        put = batch.put
        u64 = _U64.pack
        prefixes = self._prefixes
        for u in updates:
            channel = u.channel
            msg = u.message
            if channel == "account":
                address = bytes.fromhex(msg["address"][2:])
                for fill in msg["fills"]:
                    role = b"\x00" if fill["liquidity"] == "taker" else b"\x01"
                    put(b"F" + address + u64(fill["trade_id"]) + role, dumps(fill))
                order_index = b"o" + address
                for order in msg["orders"]:
                    oid = u64(order["order_id"])
                    put(b"O" + oid, dumps(order))
                    put(order_index + oid, b"")
            elif channel == "candles":
                prefix = prefixes[("C", msg["market"], msg["interval"])]
                for candle in msg["candles"]:
                    put(prefix + u64(candle["start_ms"]), dumps(candle))
            elif channel == "trades":
                prefix = prefixes[("T", msg["market"], "")]
                for trade in msg["trades"]:
                    put(prefix + u64(trade["trade_id"]), dumps(trade))
            elif channel == "blocks":
                put(b"B" + u64(u.height), dumps(msg["block"]))
            elif channel == "_txs":
                for tx in msg["txs"]:
                    put(b"X" + bytes.fromhex(tx["hash"]), dumps(tx))
            elif channel == "_funding":
                put(prefixes[("U", msg["market"], "")] + u64(u.height), dumps(msg["funding"]))

    # -- snapshot ---------------------------------------------------------------------------
    def height(self) -> int:
        raw = self.db.get(_HEIGHT)
        return _U64.unpack(raw)[0] if raw is not None else 0

    def load_snapshot(self) -> tuple[int, bytes, dict[str, Any]] | None:
        raw = self.db.get(_SNAPSHOT)
        meta = self.db.get(_META)
        if raw is None or meta is None:
            return None
        return _U64.unpack(raw[:8])[0], raw[8:], orjson.loads(meta)

    # -- reading ----------------------------------------------------------------------------
    def _get(self, key: bytes) -> Any:
        raw = self.db.get(key)
        return orjson.loads(raw) if raw is not None else None

    def _page(self, prefix: bytes, limit: int, before: bytes | None) -> list[tuple[bytes, bytes]]:
        stop = prefix + (before if before is not None else _MAX8 + b"\xff" * 24)
        out = []
        for key, value in self.db.iterator(start=prefix, stop=stop, reverse=True):
            out.append((key, value))
            if len(out) >= limit:
                break
        return out

    def block(self, height: int) -> Any:
        return self._get(b"B" + _u64(height))

    def tx(self, tx_hash: bytes) -> Any:
        return self._get(b"X" + tx_hash)

    def order(self, order_id: int) -> Any:
        return self._get(b"O" + _u64(order_id))

    def trades(self, market_id: int, limit: int, before: int | None) -> list[Any]:
        page = self._page(b"T" + _mid(market_id), limit, _u64(before) if before is not None else None)
        return [orjson.loads(v) for _, v in page]

    def fills(self, address: bytes, limit: int, before: int | None) -> list[Any]:
        page = self._page(b"F" + address, limit, _u64(before) if before is not None else None)
        return [orjson.loads(v) for _, v in page]

    def orders(self, address: bytes, limit: int, before: int | None) -> list[Any]:
        page = self._page(b"o" + address, limit, _u64(before) if before is not None else None)
        return [self._get(b"O" + key[21:29]) for key, _ in page]

    def candles(self, market_id: int, interval: str, limit: int, end_ms: int | None) -> list[Any]:
        prefix = b"C" + _mid(market_id) + bytes((INTERVAL_INDEX[interval],))
        page = self._page(prefix, limit, _u64(end_ms) if end_ms is not None else None)
        return [orjson.loads(v) for _, v in reversed(page)]

    def funding(self, market_id: int, limit: int, before: int | None) -> list[Any]:
        page = self._page(b"U" + _mid(market_id), limit, _u64(before) if before is not None else None)
        out: list[Any] = []
        for _, value in page:
            out.extend(reversed(orjson.loads(value)))
        return out
