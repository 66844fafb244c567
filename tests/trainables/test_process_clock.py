"""A process's age from /proc: what splits a trial's start-up between Ray and the worker's own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from trainables.process_clock import process_age_s


def test_a_process_that_waited_two_seconds_is_about_two_seconds_old():
    code = "import time; time.sleep(2); from trainables.process_clock import process_age_s; print(process_age_s())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout
    assert 1.0 <= float(out) <= 6.0  # 2 s of sleep, interpreter start and import; btime has 1 s steps


def test_a_fake_proc_gives_the_age_from_its_boot_time_and_start_ticks(tmp_path):
    ticks = os.sysconf("SC_CLK_TCK")
    now = time.time()
    boot = int(now) - 1000
    (tmp_path / "self").mkdir()
    # Started 990 s after boot, i.e. ~10 s ago; the command name holds a ') ' to be skipped.
    fields = ["S"] + ["0"] * 18 + [str(990 * ticks)] + ["0"] * 10
    (tmp_path / "self" / "stat").write_text(f"123 (odd) name) {' '.join(fields)}\n")
    (tmp_path / "stat").write_text(f"cpu 1 2 3\nbtime {boot}\nprocesses 9\n")
    age = process_age_s(tmp_path)
    assert age is not None and abs(age - (now - boot - 990)) < 0.5


def test_no_proc_gives_none(tmp_path):
    assert process_age_s(tmp_path / "missing") is None
