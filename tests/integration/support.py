"""Real validator processes on 127.0.0.1 for the integration tests (built on devnet/network.py).

``TestNet`` plans a devnet with fast consensus timeouts in a temporary directory, starts each
validator as its own ``python -m node.cli start`` process and offers what the scenarios need:
clients per node, waiting for heights, restarting with a crash point, signed orders from funded
devnet accounts, a load generator process, and ``assert_same_chain`` which compares the block id
and the app hash of every height across nodes through ``GetBlock`` (plus ``Status``).

Waiting is bounded (a generous deadline, then a failure that shows the node logs), but nothing
asserts on durations: performance is bench/node.py's business.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from devnet.network import ManagedProcess, Network, NodePlan, create_homes, plan_network, write_home
from node.blocks import block_id
from node.config import ConsensusTimeouts, MempoolConfig, NodeConfig, PeerConfig
from proto.ita.v1 import block_pb2
from sdk import tx as sdk_tx
from sdk.client import NodeClient, NodeError
from sdk.keys import Key, devnet_account_key
from stf.config import MarketSpec

FAST = ConsensusTimeouts(
    timeout_propose_ms=1000,
    timeout_propose_delta_ms=300,
    timeout_prevote_ms=300,
    timeout_prevote_delta_ms=150,
    timeout_precommit_ms=300,
    timeout_precommit_delta_ms=150,
    timeout_commit_ms=250,
)
TEMPLATE = NodeConfig(
    consensus=FAST,
    mempool=MempoolConfig(verify_workers=1),
    snapshot_interval=10,
    oracle_interval_ms=1000,
    log_level="info",
)
WAIT_S = 90.0  # deadline for anything that should take a few seconds (slow CI machines)
CRASH_EXIT = 99  # node/app.py crash_point


class TestNet:
    """N validators (and optional extra processes) in ``root``; ``stop`` kills everything."""

    __test__ = False  # not a pytest class

    def __init__(
        self,
        root: Path,
        n: int = 4,
        *,
        accounts: int = 20,
        template: NodeConfig = TEMPLATE,
        peer_address: Callable[[int, int], str] | None = None,
    ) -> None:
        self.root = root
        self.plan = plan_network(root, n, accounts=accounts, template=template)
        self.peer_address = peer_address
        self.net: Network | None = None
        self._clients: dict[str, NodeClient] = {}
        self.extra: list[ManagedProcess] = []

    # ------------------------------------------------------------------ set-up

    def create(self) -> TestNet:
        create_homes(self.plan, self.peer_address)
        self.net = Network(self.plan)
        return self

    def start(self, env: dict[int, dict[str, str]] | None = None) -> TestNet:
        if self.net is None:
            self.create()
        assert self.net is not None
        self.net.start_validators(env)
        return self

    @property
    def nodes(self) -> list[NodePlan]:
        return self.plan.nodes

    @property
    def procs(self) -> list[ManagedProcess]:
        assert self.net is not None
        return self.net.validators

    def add_node_process(
        self, name: str, key: Key, peers: Sequence[PeerConfig], grpc: str, metrics: str = ""
    ) -> tuple[ManagedProcess, NodeClient]:
        """An extra validator process with its own home (e.g. a twin sharing a validator key)."""
        home = self.root / name
        config = dataclasses.replace(
            self.plan.template, moniker=name, grpc_listen=grpc, metrics_listen=metrics, peers=tuple(peers)
        )
        write_home(home, key, self.plan.chain, config)
        from devnet.network import python_argv  # noqa: PLC0415

        proc = ManagedProcess(
            name,
            "validator",
            python_argv("node.cli", "start", "--home", str(home)),
            home / "node.log",
            {"home": str(home), "grpc": grpc},
        )
        self.extra.append(proc)
        return proc, self.client_at(grpc)

    def stop(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        for proc in self.extra:
            proc.stop(grace=5)
        if self.net is not None:
            self.net.stop_all(grace=5)

    # ------------------------------------------------------------------ clients and heights

    def client_at(self, address: str) -> NodeClient:
        if address not in self._clients:
            self._clients[address] = NodeClient(address, timeout=10.0)
        return self._clients[address]

    def client(self, i: int) -> NodeClient:
        return self.client_at(self.nodes[i].grpc)

    def height(self, i: int) -> int | None:
        try:
            return self.client(i).status(timeout=2.0).height
        except NodeError:
            return None

    def heights(self, nodes: Iterable[int] | None = None) -> dict[int, int | None]:
        return {i: self.height(i) for i in (nodes if nodes is not None else range(len(self.nodes)))}

    def wait_height(self, height: int, nodes: Iterable[int] | None = None, timeout: float = WAIT_S) -> None:
        """Every node of ``nodes`` (default all) has committed ``height``."""
        wanted = list(nodes) if nodes is not None else list(range(len(self.nodes)))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = self.heights(wanted)
            if all(h is not None and h >= height for h in current.values()):
                return
            time.sleep(0.2)
        raise AssertionError(
            f"nodes {wanted} did not all reach height {height} within {timeout:.0f} s: "
            f"{self.heights(wanted)}\n{self.log_tails()}"
        )

    def max_height(self, nodes: Iterable[int]) -> int:
        return max((h or 0) for h in self.heights(nodes).values())

    def wait_advance(self, blocks: int, nodes: Iterable[int], timeout: float = WAIT_S) -> int:
        """Wait until every node of ``nodes`` is ``blocks`` past the current max of them; the target."""
        wanted = list(nodes)
        target = self.max_height(wanted) + blocks
        self.wait_height(target, wanted, timeout)
        return target

    # ------------------------------------------------------------------ agreement

    def assert_same_chain(
        self, nodes: Sequence[int] | None = None, clients: Sequence[NodeClient] = ()
    ) -> int:
        """Block id and app hash equal on every node at every height 1..min height; returns that height.

        Also checks each node's Status (last_block_hash, app_hash) against its own block at the
        reported height, so what Status says is the chain GetBlock serves.
        """
        all_clients = [self.client(i) for i in (nodes if nodes is not None else range(len(self.nodes)))]
        all_clients += list(clients)
        top = min(c.status().height for c in all_clients)
        assert top >= 1, "no block committed yet"
        for height in range(1, top + 1):
            seen: dict[tuple[bytes, bytes], list[str]] = {}
            for c in all_clients:
                committed = c.block(height)
                assert committed.block.header.height == height
                seen.setdefault((block_id(committed.block), committed.app_hash), []).append(c.address)
            assert len(seen) == 1, f"nodes disagree at height {height}: " + "; ".join(
                f"{bid.hex()[:16]}/{app.hex()[:16]} on {who}" for (bid, app), who in seen.items()
            )
        for c in all_clients:
            status = c.status()
            own = c.block(status.height)
            if own.block.header.height == status.height:  # it may have committed meanwhile
                assert status.last_block_hash == block_id(own.block), f"{c.address}: Status hash != GetBlock"
                assert status.app_hash == own.app_hash, f"{c.address}: Status app hash != GetBlock"
        return top

    # ------------------------------------------------------------------ processes

    def restart(self, i: int, env: dict[str, str] | None = None) -> None:
        self.procs[i].start(env)

    def wait_exit(self, proc: ManagedProcess, timeout: float = WAIT_S) -> int:
        try:
            return proc.wait(timeout)
        except Exception as exc:  # subprocess.TimeoutExpired
            raise AssertionError(
                f"{proc.name} did not exit within {timeout:.0f} s\n{self.log_tails()}"
            ) from exc

    def start_load(
        self, rate: float, accounts: str, seed: int = 1, nodes: Sequence[int] | None = None
    ) -> ManagedProcess:
        from devnet.network import python_argv  # noqa: PLC0415

        chosen = nodes if nodes is not None else range(len(self.nodes))
        args = [
            "--nodes",
            ",".join(self.nodes[i].grpc for i in chosen),
            "--genesis",
            str(self.plan.genesis_file),
            "--rate",
            str(rate),
            "--accounts",
            accounts,
            "--seed",
            str(seed),
            "--stats-every",
            "5",
        ]
        proc = ManagedProcess(
            f"loadgen-{seed}",
            "loadgen",
            python_argv("devnet.loadgen", *args),
            self.root / f"loadgen-{seed}.log",
        )
        proc.start()
        self.extra.append(proc)
        return proc

    def log_tails(self, lines: int = 25) -> str:
        out = []
        procs = (self.net.processes if self.net is not None else []) + self.extra
        for proc in procs:
            try:
                text = proc.log.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            out.append(f"----- {proc.name} ({proc.log}) -----\n" + "\n".join(text))
        return "\n".join(out)

    # ------------------------------------------------------------------ transactions

    def market(self, symbol: str = "BTC-PERP") -> MarketSpec:
        return self.plan.chain.market_by_symbol[symbol]

    def signer(self, account: int) -> sdk_tx.Signer:
        return sdk_tx.Signer(devnet_account_key(account), self.plan.chain.chain_id)


def resting_orders(net: TestNet, account: int, count: int, symbol: str = "BTC-PERP") -> list[bytes]:
    """Signed GTC limit orders well inside the price band that do not cross (bids 1..5 % below)."""
    spec = net.market(symbol)
    signer = net.signer(account)
    out = []
    for k in range(count):
        price = spec.initial_oracle_price * (95 + k % 5) // 100 // spec.tick_size * spec.tick_size
        action = sdk_tx.place_order(symbol, "buy", price=price, size=spec.min_size, client_order_id=f"it{k}")
        out.append(signer.sign(action))
    return out


def committed_block_ids(client: NodeClient, heights: Iterable[int]) -> dict[int, bytes]:
    return {h: block_id(client.block(h).block) for h in heights}


def decode(raw: bytes) -> block_pb2.CommittedBlock:
    return block_pb2.CommittedBlock.FromString(raw)
