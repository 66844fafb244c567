"""How long this process has existed: what splits a trial's start-up between Ray starting the
worker's process and the process getting ready (imports, CUDA, the process group)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def process_age_s(proc: Path = Path("/proc")) -> float | None:
    """Seconds since this process started, to about a second (None where /proc does not tell)."""
    try:
        stat = (proc / "self" / "stat").read_text()
        # Fields after the command name's closing parenthesis start at field 3; starttime is field 22.
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in (proc / "stat").read_text().splitlines()
                    if line.startswith("btime "))
        return time.time() - (boot + start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
