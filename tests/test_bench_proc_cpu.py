"""bench/proc_cpu.py: the CPU accounting bench/node.py reports (cores per process group)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.proc_cpu import CpuSample, parse_machine, sample, usage
from node.procstat import cpu_seconds, parse_stat

pytestmark = pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads /proc (Linux)")

# A process group whose leader and whose child each burn 0.2 s of CPU, then wait to be killed.
_BURN = "import time\nend = time.process_time() + 0.2\nwhile time.process_time() < end:\n    pass\n"
_CHILD = _BURN + "print('done', flush=True)\ntime.sleep(60)\n"
_GROUP = (
    "import subprocess, sys\n"
    f"child = subprocess.Popen([sys.executable, '-c', {_CHILD!r}], stdout=subprocess.PIPE, text=True)\n"
    + _BURN
    + "child.stdout.readline()\nprint(child.pid, flush=True)\ntime.sleep(60)\n"
)


def test_parse_stat_survives_a_command_name_with_spaces_and_parens() -> None:
    fields = ["S", "1", "4242", "4242", "0", "-1", "4194560"] + ["0"] * 4 + ["250", "50"] + ["0"] * 20
    text = "4243 (evil ) (name) " + " ".join(fields)
    pgrp, cpu = parse_stat(text)
    assert pgrp == 4242
    assert cpu == pytest.approx(300 / 100)  # SC_CLK_TCK is 100 on Linux


def test_parse_machine_splits_busy_steal_and_total() -> None:
    text = "cpu  100 20 30 400 50 6 4 10 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"
    busy, steal, total = parse_machine(text)
    assert (busy, steal, total) == pytest.approx((1.6, 0.1, 6.2))


def test_usage_is_cores_between_two_samples() -> None:
    before = CpuSample(10.0, {7: (1.0, 2.0)}, {9: 0.5}, 100.0, 1.0, 400.0)
    after = CpuSample(12.0, {7: (2.0, 3.0)}, {9: 0.9}, 103.0, 1.2, 404.0)
    used = usage(before, after)
    assert (used.leaders, used.rest, used.pids) == pytest.approx((0.5, 0.5, 0.2))
    assert (used.machine_busy, used.machine_steal, used.machine_cpus) == pytest.approx((1.5, 0.1, 2.0))
    with pytest.raises(ValueError):
        usage(after, before)


def test_cpu_seconds_of_a_process_that_is_gone_is_none() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    assert cpu_seconds(proc.pid) is None


def test_sample_splits_a_group_into_its_leader_and_the_rest() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _GROUP], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        child_pid = int(proc.stdout.readline())  # both have burned their 0.2 s
        taken = sample([proc.pid], [child_pid])
        assert taken is not None
        leader, rest = taken.groups[proc.pid]
        assert leader >= 0.19 and rest >= 0.19
        assert taken.pids[child_pid] >= 0.19 and taken.pids[child_pid] <= rest
        assert taken.machine_total_s > taken.machine_busy_s > 0
        own = cpu_seconds(child_pid)
        assert own is not None and own >= taken.pids[child_pid]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the leader and its child
        proc.wait(timeout=10)
