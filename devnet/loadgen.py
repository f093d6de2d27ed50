"""Random order flow from funded devnet accounts, at a fixed rate, through ``SubmitTxs``.

Theory of operation
-------------------
``OrderFactory`` signs one random transaction at a time for a rotating set of accounts
(``sdk.keys.devnet_account_key(i)``; each account has its own strictly increasing nonce
clock, so two generators must use disjoint account ranges). The mix, around a reference
price per market: GTC limit orders resting 0..20 ticks on their side of the price (45 %),
post-only orders (10 %), IOC limits crossing up to 10 ticks (15 %), market orders with a
protective price 2 % away (10 %), cancels by client order id of one of the account's
recent GTC orders (18 %) and cancel-alls of one market (2 %). Sizes are 1..5 minimum sizes.
The reference price is ``node.oracle.RandomWalkSource`` seeded like the validators' oracle
duty (chain id, genesis time), i.e. the walk the on-chain oracle median follows, so the
orders stay inside every market's price band.

``run`` is an open loop: every ``batch_ms`` it signs the orders that are due at ``rate``
per second since the start and sends them as one ``SubmitTxs`` request to the next node
of ``--nodes`` (round robin) without waiting for the answers of earlier requests: up to
``max_in_flight`` (16) requests are outstanding, and only then does it wait for the oldest.
A request whose node cannot be reached is sent again to the next node. If the nodes are
slower than the rate, batches grow (up to ``max_batch``) rather than the schedule drifting.
(A closed loop -- wait for each answer -- turns a saturated node's latency into bursts of
``max_batch`` txs and empty blocks between them, which measures the client, not the node.)
With ``--record FILE`` every accepted tx's hash and submit
wall-clock time are appended to FILE (``<hex hash> <unix seconds>`` per line) for latency
measurements (bench/node.py). A JSON line of counters goes to stdout every
``--stats-every`` seconds and at the end.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from genesis.schema import load_genesis
from node.oracle import RandomWalkSource
from sdk import tx as sdk_tx
from sdk.client import NodeClient, NodeError, PendingSubmit
from sdk.keys import Key, devnet_account_key
from stf.config import ChainConfig, MarketSpec
from stf.signing import tx_hash

__all__ = ["OrderFactory", "parse_range", "run"]

RECENT_ORDERS = 20
MIX = (
    ("gtc", 45),
    ("post_only", 10),
    ("ioc", 15),
    ("market", 10),
    ("cancel", 18),
    ("cancel_all", 2),
)
PLACE_ONLY_MIX = (("gtc", 55), ("post_only", 10), ("ioc", 20), ("market", 15))


def parse_range(text: str) -> list[int]:
    """``"0-49"`` / ``"3"`` / ``"0-9,20-29"`` -> account indices."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low, sep, high = part.partition("-")
        if not low.isdigit() or (sep and not high.isdigit()):
            raise ValueError(f"bad account range {text!r}: use e.g. 0-49 or 0-9,20-29")
        out.extend(range(int(low), int(high) + 1) if sep else [int(low)])
    if not out:
        raise ValueError(f"empty account range {text!r}")
    return out


class OrderFactory:
    """Signs random order-flow transactions for a set of accounts on one chain."""

    def __init__(
        self,
        chain: ChainConfig,
        keys: Sequence[Key],
        seed: int = 0,
        markets: Sequence[str] | None = None,
        place_only: bool = False,
    ) -> None:
        if not keys:
            raise ValueError("the load generator needs at least one account key")
        self.chain = chain
        self.signers = [sdk_tx.Signer(k, chain.chain_id) for k in keys]
        self.rng = random.Random(seed)
        self.markets: list[MarketSpec] = (
            [chain.market_by_symbol[m] for m in markets] if markets else list(chain.markets)
        )
        self.prices = RandomWalkSource(chain.chain_id, chain.markets, chain.genesis_time_ms)
        self.recent: list[deque[tuple[str, str]]] = [deque(maxlen=RECENT_ORDERS) for _ in keys]
        self.mix = PLACE_ONLY_MIX if place_only else MIX
        self._kinds = [k for k, _ in self.mix]
        self._weights = [w for _, w in self.mix]
        self._next = 0
        self._coid = 0
        self._ref: dict[str, int] = {}
        self._ref_at = -1

    def reference_prices(self, now_ms: int) -> dict[str, int]:
        second = now_ms // 1000
        if second != self._ref_at:
            self._ref = self.prices.prices(now_ms)
            self._ref_at = second
        return self._ref

    def _size(self, spec: MarketSpec) -> int:
        return spec.min_size * self.rng.randint(1, 5)

    def _price(self, spec: MarketSpec, ref: int, ticks: int) -> int:
        return max(spec.tick_size, (ref // spec.tick_size + ticks) * spec.tick_size)

    def next_action(self, account: int, now_ms: int) -> sdk_tx.Action:
        spec = self.rng.choice(self.markets)
        ref = self.reference_prices(now_ms)[spec.symbol]
        kind = self.rng.choices(self._kinds, self._weights)[0]
        buy = self.rng.random() < 0.5
        side: sdk_tx.SideName = "buy" if buy else "sell"
        sign = -1 if buy else 1  # resting orders sit on their own side of the reference
        recent = self.recent[account]
        if kind == "cancel" and recent:
            market, coid = recent[self.rng.randrange(len(recent))]
            return sdk_tx.cancel_order(market, client_order_id=coid)
        if kind == "cancel_all":
            recent.clear()
            return sdk_tx.cancel_all(spec.symbol)
        if kind in ("gtc", "post_only", "cancel"):
            self._coid += 1
            coid = f"lg{self._coid}"
            price = self._price(spec, ref, sign * self.rng.randint(0 if kind == "gtc" else 1, 20))
            recent.append((spec.symbol, coid))
            tif: sdk_tx.TifName = "post_only" if kind == "post_only" else "gtc"
            return sdk_tx.place_order(
                spec.symbol, side, price=price, size=self._size(spec), tif=tif, client_order_id=coid
            )
        if kind == "ioc":
            price = self._price(spec, ref, -sign * self.rng.randint(0, 10))
            return sdk_tx.place_order(spec.symbol, side, price=price, size=self._size(spec), tif="ioc")
        worst = ref * (102 if buy else 98) // 100
        return sdk_tx.place_order(
            spec.symbol, side, price=self._price(spec, worst, 0), size=self._size(spec), kind="market"
        )

    def next_tx(self, now_ms: int | None = None) -> bytes:
        account = self._next
        self._next = (self._next + 1) % len(self.signers)
        now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
        return self.signers[account].sign(self.next_action(account, now))


class _Nodes:
    def __init__(self, addresses: Sequence[str], timeout: float) -> None:
        self.clients = [NodeClient(a, timeout=timeout) for a in addresses]
        self._next = 0

    def next_client(self) -> NodeClient:
        client = self.clients[self._next]
        self._next = (self._next + 1) % len(self.clients)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()


@dataclass(slots=True)
class _InFlight:
    pending: PendingSubmit
    txs: list[bytes]
    submitted_at: float
    attempts: int  # nodes tried so far (a batch whose node is unreachable moves to the next one)


def _wait_for_any(pool: _Nodes, stop: dict[str, bool], limit: float) -> None:
    """Until one node answers Status (a devnet's nodes start together with us), at most ``limit`` s."""
    deadline = time.monotonic() + limit
    while not stop["flag"] and time.monotonic() < deadline:
        for client in pool.clients:
            try:
                client.status(timeout=1.0)
                return
            except NodeError:
                continue
        time.sleep(0.5)


def run(
    nodes: Sequence[str],
    factory: OrderFactory,
    rate: float,
    *,
    duration: float = 0.0,
    batch_ms: int = 100,
    max_batch: int = 2000,
    record: IO[str] | None = None,
    stats_every: float = 10.0,
    out: IO[str] = sys.stdout,
    timeout: float = 10.0,
    wait_for_nodes: float = 60.0,
    presigned: Sequence[bytes] | None = None,
    max_in_flight: int = 16,
) -> Counter[str]:
    """Submit ``rate`` txs/s until ``duration`` seconds passed (0: until SIGINT/SIGTERM), or until
    the ``presigned`` txs (signed before the clock starts, to keep signing off the hot path) ran out."""
    stop = {"flag": False}

    def on_signal(_signum: int, _frame: object) -> None:
        stop["flag"] = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    counts: Counter[str] = Counter()
    pool = _Nodes(nodes, timeout)
    _wait_for_any(pool, stop, wait_for_nodes)
    in_flight: deque[_InFlight] = deque()
    rejected = [0]  # rejections so far: the first few and every 100th are printed with their reason

    def send(txs: list[bytes], submitted_at: float, attempts: int) -> None:
        pending = pool.next_client().submit_many_async(txs)
        in_flight.append(_InFlight(pending, txs, submitted_at, attempts))

    def settle(block: bool) -> None:
        """Count the answers of finished requests, oldest first (``block``: wait for the oldest)."""
        while in_flight and (block or in_flight[0].pending.done()):
            block = False
            item = in_flight.popleft()
            try:
                answers = item.pending.result()
            except NodeError as exc:
                if item.attempts < len(pool.clients):
                    send(item.txs, item.submitted_at, item.attempts + 1)
                    continue
                counts["unreachable"] += len(item.txs)
                counts["errors"] += 1
                if counts["errors"] <= 3 or counts["errors"] % 50 == 0:
                    print(json.dumps({"error": str(exc)}), file=sys.stderr, flush=True)
                time.sleep(0.5)
                continue
            for raw, answer in zip(item.txs, answers, strict=True):
                counts[answer.status or "unknown"] += 1
                if not answer.accepted:
                    rejected[0] += 1
                    if rejected[0] <= 5 or rejected[0] % 100 == 0:  # why, not only how many
                        why = {"rejected": answer.status, "reason": answer.reason, "tx": tx_hash(raw).hex()}
                        print(json.dumps(why), file=sys.stderr, flush=True)
                if record is not None and answer.accepted:
                    record.write(f"{tx_hash(raw).hex()} {item.submitted_at:.6f}\n")

    started = time.monotonic()
    last_stats = started
    period = batch_ms / 1000
    next_batch_at = started  # one request per period: what is due then goes as one batch
    sent = 0
    try:
        while not stop["flag"]:
            settle(block=len(in_flight) >= max_in_flight)  # open loop, bounded: wait only when full
            now = time.monotonic()
            if duration and now - started >= duration:
                break
            if now < next_batch_at:
                time.sleep(min(next_batch_at - now, 0.005) if in_flight else next_batch_at - now)
                continue
            due = min(int((now - started) * rate) - sent, max_batch)
            if due <= 0:
                next_batch_at = started + (sent + 1) / rate  # a slow rate: wait for the next tx
                continue
            next_batch_at = now + period
            if presigned is not None:
                txs = list(presigned[sent : sent + due])
                if not txs:
                    break
            else:
                txs = [factory.next_tx() for _ in range(due)]
            send(txs, time.time(), 1)
            sent += len(txs)
            counts["sent"] += len(txs)
            if time.monotonic() - last_stats >= stats_every:
                last_stats = time.monotonic()
                out.write(json.dumps({"elapsed_s": round(last_stats - started, 1), **counts}) + "\n")
                out.flush()
        while in_flight:
            settle(block=True)
    finally:
        pool.close()
        if record is not None:
            record.flush()
    out.write(json.dumps({"final": True, "elapsed_s": round(time.monotonic() - started, 1), **counts}) + "\n")
    out.flush()
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devnet.loadgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", required=True, help="comma-separated HOST:PORT of nodes to submit to")
    parser.add_argument("--genesis", required=True, help="the chain's genesis.json (markets, chain id)")
    parser.add_argument("--rate", type=float, required=True, help="transactions per second")
    parser.add_argument("--accounts", default="0-49", help="devnet account indices, e.g. 0-49 or 0-9,20-29")
    parser.add_argument("--markets", default="", help="comma-separated symbols (default: all)")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds (0: until SIGINT/SIGTERM)")
    parser.add_argument("--batch-ms", type=int, default=100)
    parser.add_argument("--max-batch", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--place-only", action="store_true", help="only place orders (no cancels)")
    parser.add_argument("--record", help="append '<tx hash hex> <submit unix time>' per accepted tx")
    parser.add_argument("--stats-every", type=float, default=10.0)
    parser.add_argument(
        "--presign",
        action="store_true",
        help="sign rate x duration txs before starting the clock (needs --duration)",
    )
    parser.add_argument(
        "--wait-go",
        action="store_true",
        help='print {"ready": true} when set up, then start on the first line read from stdin',
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.rate <= 0:
        parser.error("--rate must be > 0")
    try:
        chain = load_genesis(args.genesis)
        indices = parse_range(args.accounts)
    except (OSError, ValueError) as exc:
        print(f"loadgen: error: {exc}", file=sys.stderr)
        return 2
    funded = {address for address, _ in chain.accounts}
    keys = [devnet_account_key(i) for i in indices]
    unfunded = [k.address_hex for k in keys if k.address not in funded]
    if unfunded:
        print(
            f"loadgen: error: {len(unfunded)} accounts are not funded in the genesis, e.g. {unfunded[0]}",
            file=sys.stderr,
        )
        return 2
    markets = [m for m in args.markets.split(",") if m] or None
    factory = OrderFactory(chain, keys, args.seed, markets, args.place_only)
    presigned = None
    if args.presign:
        if args.duration <= 0:
            parser.error("--presign needs --duration")
        presigned = [factory.next_tx() for _ in range(int(args.rate * args.duration) + 1)]
    if args.wait_go:
        print(json.dumps({"ready": True, "presigned": len(presigned or [])}), flush=True)
        sys.stdin.readline()
    record = open(args.record, "a", encoding="ascii") if args.record else None  # noqa: SIM115
    try:
        run(
            args.nodes.split(","),
            factory,
            args.rate,
            duration=args.duration,
            batch_ms=args.batch_ms,
            max_batch=args.max_batch,
            record=record,
            stats_every=args.stats_every,
            presigned=presigned,
        )
    finally:
        if record is not None:
            record.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
