"""The simulated clock, event queue and lossy network.

Theory of operation. Time is an integer number of milliseconds. Events sit in a heap ordered
by (time, sequence number); the sequence number makes ties deterministic, so one seed gives one
run. Every random choice (delays, drops, crash times, Byzantine choices) comes from the single
seeded ``random.Random`` owned by the ``Network``, and is drawn in event order.

Before GST the network is asynchronous: each point-to-point message is dropped with probability
``drop_per_mille``/1000, or delayed uniformly up to ``pre_gst_max_delay_ms`` (which reorders
messages), and messages between different sides of a partition are dropped. From GST on, no
message is dropped and every delay is at most ``max_delay_ms`` (the paper's Delta). Partitions
listed as permanent never heal (used by the negative control).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    min_delay_ms: int = 1
    max_delay_ms: int = 20
    pre_gst_max_delay_ms: int = 300
    drop_per_mille: int = 100
    gst_ms: int = 0
    # Each partition is a tuple of groups of node ids; nodes in different groups cannot talk.
    partition: tuple[tuple[int, ...], ...] = ()
    permanent_partition: bool = False
    instant: bool = False  # zero delay, no drops (benchmarks)


@dataclass(order=True, slots=True)
class _Event:
    time: int
    seq: int
    action: Callable[[], None] = field(compare=False)


class Network:
    def __init__(self, config: NetworkConfig, seed: int) -> None:
        self.config = config
        self.rng = random.Random(seed)
        self.now = 0
        self._seq = 0
        self._queue: list[_Event] = []
        self._group_of: dict[int, int] = {}
        for g, members in enumerate(config.partition):
            for node_id in members:
                self._group_of[node_id] = g
        self.sent = 0
        self.dropped = 0

    def at(self, time: int, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, _Event(time, self._seq, action))

    def after(self, delay: int, action: Callable[[], None]) -> None:
        self.at(self.now + delay, action)

    def run(self, until_ms: int, stop: Callable[[], bool]) -> None:
        queue = self._queue
        while queue and not stop():
            event = heapq.heappop(queue)
            if event.time > until_ms:
                heapq.heappush(queue, event)
                break
            self.now = event.time
            event.action()

    def partitioned(self, a: int, b: int) -> bool:
        if not self._group_of:
            return False
        if self.now >= self.config.gst_ms and not self.config.permanent_partition:
            return False
        return self._group_of.get(a, -1) != self._group_of.get(b, -1)

    def delay(self, src: int, dst: int) -> int | None:
        """The delivery delay of one message from src to dst, or None if it is lost."""
        cfg = self.config
        self.sent += 1
        if cfg.instant:
            return 0
        if self.partitioned(src, dst):
            self.dropped += 1
            return None
        if self.now < cfg.gst_ms:
            if self.rng.randrange(1000) < cfg.drop_per_mille:
                self.dropped += 1
                return None
            return self.rng.randint(cfg.min_delay_ms, cfg.pre_gst_max_delay_ms)
        return self.rng.randint(cfg.min_delay_ms, cfg.max_delay_ms)
