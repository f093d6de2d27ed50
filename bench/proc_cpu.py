"""CPU time of process groups and of the whole machine over a window, read from /proc (Linux).

Theory of operation
- A benchmark's latency figures swing with the phase of this shared machine; the CPU its
  processes burn per unit of work says instead what the work costs, and how close the
  machine was to saturation while it ran. ``sample`` reads, at one instant, the CPU seconds
  (user + system) of every process in the given process groups, split into the group's
  leader and the rest of the group, plus the CPU seconds of given single pids, plus the
  machine's busy, steal and total jiffies from /proc/stat. ``usage`` turns two samples
  into average cores used in between.
- A validator started by devnet/network.py leads its own process group (its session), so
  its leader is the node process and the rest of its group is what the node started:
  the signature workers, their forkserver and multiprocessing's resource tracker.
- Processes that exit during the window lose their CPU from the account (a kernel keeps
  no record of them here); ones that start during it count from zero. The benchmarks
  sample while their networks are up, when neither happens.
- Without /proc (not Linux) ``sample`` returns None and callers report no CPU figures.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from node.procstat import TICKS_PER_S, read_stat

PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class CpuSample:
    wall_s: float  # time.monotonic() when taken
    groups: dict[int, tuple[float, float]]  # pgid -> (leader's CPU s, the rest of the group's)
    pids: dict[int, float]  # single pids -> CPU s
    machine_busy_s: float  # all CPUs: user + nice + system + irq + softirq (steal apart)
    machine_steal_s: float  # time the hypervisor ran someone else while we wanted a CPU
    machine_total_s: float  # everything, idle and iowait included


def parse_machine(text: str) -> tuple[float, float, float]:
    """(busy, steal, total) seconds over all CPUs from the text of /proc/stat."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]]
            user, nice, system, idle, iowait, irq, softirq = values[:7]
            steal = values[7] if len(values) > 7 else 0
            total = user + nice + system + idle + iowait + irq + softirq + steal  # guest: inside user
            busy = user + nice + system + irq + softirq
            return busy / TICKS_PER_S, steal / TICKS_PER_S, total / TICKS_PER_S
    raise ValueError("no aggregate cpu line in /proc/stat")


def sample(pgids: Iterable[int], pids: Iterable[int] = (), wall_s: float = 0.0) -> CpuSample | None:
    """The CPU seconds of the groups `pgids` (leader, rest) and of `pids`, and the machine's."""
    if not (PROC / "stat").exists():
        return None
    wanted = set(pgids)
    groups = {pgid: (0.0, 0.0) for pgid in wanted}
    singles = {pid: 0.0 for pid in pids}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = read_stat(pid)
        if stat is None:  # the process exited while we looked
            continue
        pgrp, cpu = stat
        if pid in singles:
            singles[pid] = cpu
        if pgrp in wanted:
            leader, rest = groups[pgrp]
            groups[pgrp] = (leader + cpu, rest) if pid == pgrp else (leader, rest + cpu)
    busy, steal, total = parse_machine((PROC / "stat").read_text())
    return CpuSample(wall_s, groups, singles, busy, steal, total)


@dataclass(frozen=True, slots=True)
class CpuUsage:
    """Average cores used between two samples."""

    leaders: float  # the groups' leaders, summed
    rest: float  # the rest of the groups, summed
    pids: float  # the single pids, summed
    machine_busy: float
    machine_steal: float
    machine_cpus: float  # cores the machine had (total time / wall time)


def usage(before: CpuSample, after: CpuSample) -> CpuUsage:
    wall = after.wall_s - before.wall_s
    if wall <= 0:
        raise ValueError("the second sample must be taken after the first")
    leaders = rest = 0.0
    for pgid, (leader_after, rest_after) in after.groups.items():
        leader_before, rest_before = before.groups.get(pgid, (0.0, 0.0))
        leaders += leader_after - leader_before
        rest += max(0.0, rest_after - rest_before)  # a group member that exited takes its CPU along
    singles = sum(after.pids[p] - before.pids.get(p, 0.0) for p in after.pids)
    return CpuUsage(
        leaders=leaders / wall,
        rest=rest / wall,
        pids=singles / wall,
        machine_busy=(after.machine_busy_s - before.machine_busy_s) / wall,
        machine_steal=(after.machine_steal_s - before.machine_steal_s) / wall,
        machine_cpus=(after.machine_total_s - before.machine_total_s) / wall,
    )
