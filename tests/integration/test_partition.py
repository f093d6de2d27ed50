"""Partition one validator away and heal: the minority (1 of 4, 25 % of the power) commits nothing,
the majority goes on, and after healing the minority catches up with identical hashes.

Every link to and from validator 3 goes through ``devnet/proxy.py``: its own peer addresses point
at proxies in front of the others, and the others' address for it is a proxy in front of it (only
one side of each pair dials, whichever it is, it crosses a proxy). Clients still reach every node
directly. ``drop`` aborts the connections and refuses new ones; ``blackhole`` (slow variant)
swallows traffic silently, so the nodes only notice through keepalive timeouts.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devnet.proxy import ProxyServer
from tests.integration.conftest import NetFactory
from tests.integration.support import TestNet

pytestmark = pytest.mark.integration

ISOLATED = 3
MAJORITY = [0, 1, 2]


@pytest.fixture
def proxy() -> Iterator[ProxyServer]:
    server = ProxyServer()
    yield server
    server.close()


def partitioned_net(make_net: NetFactory, proxy: ProxyServer) -> tuple[TestNet, list[str]]:
    routes: dict[tuple[int, int], str] = {}

    def peer_address(i: int, j: int) -> str:
        return routes.get((i, j), net.nodes[j].grpc)

    net = make_net(4, peer_address=peer_address)
    for j in MAJORITY:  # both directions of every link of the isolated node
        for a, b in ((ISOLATED, j), (j, ISOLATED)):
            route = proxy.add_route(f"{a}->{b}", target=net.nodes[b].grpc)
            routes[(a, b)] = route.listen
    net.start()
    return net, [f"{a}->{b}" for a, b in routes]


def run_partition(net: TestNet, proxy: ProxyServer, names: list[str], mode: str, seed: int = 1) -> None:
    net.wait_height(3)
    load = net.start_load(20.0, accounts=f"{seed * 10 - 10}-{seed * 10 - 1}", seed=seed, nodes=MAJORITY)
    net.wait_advance(2, range(4))
    assert any(r["bytes_forwarded"] > 0 for r in proxy.status()), "peers do not talk through the proxies"

    proxy.set_mode(names, mode)
    net.wait_advance(2, MAJORITY)  # whatever the minority had in flight has settled by now
    isolated_at = net.height(ISOLATED)
    assert isolated_at is not None
    net.wait_height(isolated_at + 6, MAJORITY)  # the majority goes on without it ...
    assert net.height(ISOLATED) == isolated_at  # ... and the minority commits nothing
    assert net.procs[ISOLATED].alive()
    status = net.client(ISOLATED).status()
    assert status.height == isolated_at

    proxy.set_mode(names, "pass")
    target = net.max_height(MAJORITY) + 2
    net.wait_height(target, range(4))  # the minority catches up (block sync) and rejoins
    net.wait_advance(2, range(4))
    assert load.alive()
    net.assert_same_chain()


def test_partition_minority_stalls_majority_continues_then_heals(
    make_net: NetFactory, proxy: ProxyServer
) -> None:
    net, names = partitioned_net(make_net, proxy)
    run_partition(net, proxy, names, "drop")


@pytest.mark.slow
def test_blackhole_partition_and_heal(make_net: NetFactory, proxy: ProxyServer) -> None:
    net, names = partitioned_net(make_net, proxy)
    run_partition(net, proxy, names, "blackhole")
    run_partition(net, proxy, names, "drop", seed=2)  # and a second partition on the same network
