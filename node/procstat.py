"""CPU seconds of a process from /proc/PID/stat (Linux), for metrics and benchmarks.

``parse_stat`` reads the process group and the user + system CPU seconds out of the text of
/proc/PID/stat (the command name, field 2, may hold spaces and parentheses, so the fields
are counted from its closing parenthesis). ``read_stat`` and ``cpu_seconds`` return None
where there is no such file: the process is gone, or the system has no /proc.
"""

from __future__ import annotations

import os
from pathlib import Path

TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def parse_stat(text: str) -> tuple[int, float]:
    """(process group, CPU seconds) from the text of /proc/PID/stat."""
    fields = text[text.rindex(")") + 2 :].split()  # fields 3 onwards
    pgrp = int(fields[2])  # field 5
    ticks = int(fields[11]) + int(fields[12])  # fields 14 (utime) and 15 (stime)
    return pgrp, ticks / TICKS_PER_S


def read_stat(pid: int) -> tuple[int, float] | None:
    """``parse_stat`` of process `pid`, or None when it cannot be read (gone, or no /proc)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return parse_stat(text)


def cpu_seconds(pid: int) -> float | None:
    stat = read_stat(pid)
    return stat[1] if stat is not None else None
