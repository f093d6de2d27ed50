"""An in-process chain for tests and benchmarks: real keys, random trading, certified blocks.

``SimChain`` plays a node that has already reached consensus: it builds each block from a
mempool plus randomly generated (but validly signed) trading transactions, applies it with
``stf.block.apply_block`` exactly as a node would, and wraps it in a ``CommittedBlock`` whose
commit certificate carries real ed25519 precommits of the genesis validators
(consensus.certificate encoding over ``sha256(Block.SerializeToString(deterministic=True))``).
It also keeps state snapshots every ``snapshot_interval`` blocks, like a node.

Random trading (seeded, deterministic): limit orders around the oracle (GTC, IOC,
post-only, with and without client ids), market orders, reduce-only orders, cancels by id
and by client id, cancel-all, batches, transfers, faucet requests, and validator oracle
updates that random-walk the price. Nothing here is used by the indexer itself.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from consensus.certificate import CommitCertificate, CommitSig
from consensus.messages import Vote
from consensus.types import VoteType
from genesis.devnet import devnet_genesis_dict
from genesis.schema import parse_genesis
from node.blocks import compute_txs_hash, result_to_proto
from proto.ita.v1 import block_pb2, tx_pb2
from rpc.verify import compute_block_id
from sdk import tx as sdk_tx
from sdk.keys import Key, devnet_account_key, devnet_validator_key
from stf.block import BlockHeader, apply_block, genesis_state, skip_signature_check
from stf.config import ChainConfig
from stf.snapshot import encode_snapshot
from stf.state import State

USD = 1_000_000


def sim_config(validators: int = 4, accounts: int = 20, funding_interval_ms: int = 60_000) -> ChainConfig:
    """The devnet genesis with a short funding interval (so funding happens in short runs)."""
    doc = devnet_genesis_dict(validators, accounts)
    markets = doc["markets"]
    assert isinstance(markets, list)
    for market in markets:
        market["funding_interval_ms"] = funding_interval_ms
    return parse_genesis(doc)


@dataclass(frozen=True, slots=True)
class Admission:
    hash: bytes
    accepted: bool
    code: int
    status: str
    reason: str


class SimChain:
    """A deterministic chain producer (see the module docstring)."""

    def __init__(
        self,
        config: ChainConfig | None = None,
        *,
        validator_keys: Sequence[Key] | None = None,
        account_keys: Sequence[Key] | None = None,
        seed: int = 1,
        block_ms: int = 1_000,
        max_txs: int = 12,
        snapshot_interval: int = 100,
        verify_signatures: bool = False,
        signers: int | None = None,
    ) -> None:
        self.config = config if config is not None else sim_config()
        n_val = len(self.config.validators)
        self.validator_keys = list(validator_keys or [devnet_validator_key(i) for i in range(n_val)])
        self.account_keys = list(
            account_keys or [devnet_account_key(i) for i in range(len(self.config.accounts))]
        )
        self.rng = random.Random(seed)
        self.block_ms = block_ms
        self.max_txs = max_txs
        self.snapshot_interval = snapshot_interval
        self.verify_signatures = verify_signatures
        self.signers = signers if signers is not None else n_val
        self.state: State = genesis_state(self.config)
        self.genesis_app_hash = self.state.app_hash
        self.blocks: list[block_pb2.CommittedBlock] = []
        self.snapshots: dict[int, bytes] = {}
        self.mempool: list[bytes] = []
        self.nonces: dict[bytes, int] = {}
        self.listeners: list[Callable[[block_pb2.CommittedBlock], None]] = []
        self.last_block_id = b""
        self.cloid_counter = 0

    @property
    def height(self) -> int:
        return self.state.height

    def block(self, height: int) -> block_pb2.CommittedBlock:
        return self.blocks[height - 1]

    # -- mempool ----------------------------------------------------------------------------
    def submit(self, raw: bytes) -> Admission:
        digest = hashlib.sha256(raw).digest()
        try:
            signed = tx_pb2.SignedTx.FromString(raw)
            body = tx_pb2.TxBody.FromString(signed.body)
        except Exception:  # noqa: BLE001 - any decode failure is a rejection, never an RPC error
            return Admission(digest, False, 1, "malformed_tx", "not a SignedTx/TxBody protobuf")
        if body.chain_id != self.config.chain_id:
            return Admission(
                digest, False, 3, "wrong_chain_id", f"transaction is for chain {body.chain_id!r}"
            )
        if raw in self.mempool:
            return Admission(digest, False, 101, "duplicate", "already in the mempool")
        self.mempool.append(raw)
        return Admission(digest, True, 0, "ok", "")

    # -- blocks -----------------------------------------------------------------------------
    def produce(
        self, txs: Sequence[bytes] | None = None, time_ms: int | None = None
    ) -> block_pb2.CommittedBlock:
        """Make, apply, certify and publish the next block (random txs unless `txs` is given)."""
        state = self.state
        height = state.height + 1
        if time_ms is None:
            time_ms = state.time_ms + self.block_ms
        time_ms = max(time_ms, state.time_ms)
        body = list(self.mempool) + list(txs if txs is not None else self.random_txs(time_ms))
        self.mempool.clear()
        proposer = self.config.validators[height % len(self.config.validators)].address
        header = block_pb2.BlockHeader(
            chain_id=self.config.chain_id,
            height=height,
            time_ms=time_ms,
            proposer=proposer,
            last_block_id=self.last_block_id,
            last_app_hash=state.app_hash,
            txs_hash=compute_txs_hash(body),
        )
        block = block_pb2.Block(header=header, txs=body)
        check = None if self.verify_signatures else skip_signature_check
        if check is None:
            result = apply_block(state, BlockHeader(height, time_ms, proposer), body)
        else:
            result = apply_block(state, BlockHeader(height, time_ms, proposer), body, check)
        block_id = compute_block_id(block)
        committed = block_pb2.CommittedBlock(
            block=block,
            certificate=self.certify(height, block_id),
            results=[result_to_proto(r) for r in result.results],
            app_hash=result.app_hash,
            tx_hashes=[hashlib.sha256(tx).digest() for tx in body],
        )
        self.last_block_id = block_id
        self.blocks.append(committed)
        if self.snapshot_interval and height % self.snapshot_interval == 0:
            self.snapshots[height] = encode_snapshot(state)
        for listener in list(self.listeners):
            listener(committed)
        return committed

    def produce_many(self, count: int) -> None:
        for _ in range(count):
            self.produce()

    def certify(self, height: int, block_id: bytes, round_: int = 0) -> bytes:
        sigs = []
        for key in self.validator_keys[: self.signers]:
            vote = Vote(VoteType.PRECOMMIT, height, round_, block_id, key.address)
            sigs.append(CommitSig(key.address, key.sign(vote.sign_bytes(self.config.chain_id))))
        return CommitCertificate(height, round_, block_id, tuple(sigs)).encode()

    def latest_snapshot(self) -> tuple[int, bytes] | None:
        if not self.snapshots:
            return None
        height = max(self.snapshots)
        return height, self.snapshots[height]

    # -- random trading ---------------------------------------------------------------------
    def sign(self, key: Key, action: sdk_tx.Action, time_ms: int) -> bytes:
        nonce = max(self.nonces.get(key.address, 0) + 1, time_ms)
        self.nonces[key.address] = nonce
        return sdk_tx.sign_tx(key, self.config.chain_id, sdk_tx.tx_body(self.config.chain_id, nonce, action))

    def random_txs(self, time_ms: int) -> list[bytes]:
        rng = self.rng
        out: list[bytes] = []
        if self.state.height % 5 == 0 and self.validator_keys:
            out.extend(self.oracle_txs(time_ms))
        for _ in range(rng.randint(0, self.max_txs)):
            key = rng.choice(self.account_keys)
            action = self.random_action(key)
            if action is not None:
                out.append(self.sign(key, action, time_ms))
        return out

    def oracle_txs(self, time_ms: int) -> list[bytes]:
        rng = self.rng
        out = []
        for key in self.validator_keys:
            prices = []
            for market in self.state.markets:
                price = market.oracle_price + rng.randint(-2, 2) * max(market.oracle_price // 2000, 1)
                tick = market.spec.tick_size
                prices.append((market.spec.symbol, max(price - price % tick, tick)))
            out.append(self.sign(key, sdk_tx.oracle_prices(prices), time_ms))
        return out

    def random_order(self, key: Key, market_index: int | None = None) -> tx_pb2.PlaceOrder:
        rng = self.rng
        market = self.state.markets[
            market_index if market_index is not None else rng.randrange(len(self.state.markets))
        ]
        spec = market.spec
        step = max(spec.tick_size, (market.oracle_price // 20_000) // spec.tick_size * spec.tick_size)
        is_buy = rng.random() < 0.5
        offset = rng.randint(-4, 30) * step
        price = market.oracle_price - offset if is_buy else market.oracle_price + offset
        price = max(price - price % spec.tick_size, spec.tick_size)
        size = spec.min_size * rng.randint(1, 20)
        roll = rng.random()
        side: sdk_tx.SideName = "buy" if is_buy else "sell"
        if roll < 0.06:
            worst = market.oracle_price * (105 if is_buy else 95) // 100
            worst -= worst % spec.tick_size
            return sdk_tx.place_order(spec.symbol, side, price=worst, size=size, kind="market")
        tif: sdk_tx.TifName = "gtc" if roll < 0.75 else ("ioc" if roll < 0.88 else "post_only")
        cloid = ""
        if rng.random() < 0.3:
            self.cloid_counter += 1
            cloid = f"c{self.cloid_counter}"
        account = self.state.accounts.get(key.address)
        reduce_only = False
        if account is not None and spec.market_id in account.positions and rng.random() < 0.1:
            reduce_only = True
            side = "sell" if account.positions[spec.market_id].size > 0 else "buy"
        return sdk_tx.place_order(
            spec.symbol, side, price=price, size=size, tif=tif, reduce_only=reduce_only, client_order_id=cloid
        )

    def random_cancel(self, key: Key) -> tx_pb2.CancelOrder | None:
        account = self.state.accounts.get(key.address)
        if account is None or not account.orders:
            return None
        orders = list(account.orders.values())
        order = orders[self.rng.randrange(len(orders))]
        symbol = self.state.markets[order.market_id].spec.symbol
        if order.client_order_id and self.rng.random() < 0.5:
            return sdk_tx.cancel_order(symbol, client_order_id=order.client_order_id)
        return sdk_tx.cancel_order(symbol, order_id=order.order_id)

    def random_action(self, key: Key) -> sdk_tx.Action | None:
        rng = self.rng
        account = self.state.accounts.get(key.address)
        crowded = account is not None and len(account.orders) > 25
        roll = rng.random()
        if roll < (0.45 if crowded else 0.18):
            return self.random_cancel(key)
        if roll < 0.20:
            if rng.random() < 0.5:
                return sdk_tx.cancel_all(rng.choice(self.state.markets).spec.symbol)
            return sdk_tx.cancel_all()
        if roll < 0.26:
            items: list[tx_pb2.PlaceOrder | tx_pb2.CancelOrder] = [
                self.random_order(key) for _ in range(rng.randint(1, 4))
            ]
            cancel = self.random_cancel(key)
            if cancel is not None:
                items.append(cancel)
            return sdk_tx.batch(items)
        if roll < 0.275:
            other = rng.choice(self.account_keys)
            return None if other == key else sdk_tx.transfer(other.address, rng.randint(1, 100) * USD)
        if roll < 0.28 and self.config.faucet_enabled:
            return sdk_tx.faucet(rng.randint(1, 10) * USD)
        return self.random_order(key)
