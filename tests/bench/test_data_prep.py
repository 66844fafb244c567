"""The data-preparation benchmark's logic on the CPU: batched teacher encodings and prepared files
give exactly what one-by-one tokenisation gives (it asserts both), and it prints both ratios."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import XTREME_SAMPLE

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not XTREME_SAMPLE.is_dir(), reason="the shared XTREME sample is not here")
def test_data_prep_benchmark_checks_equality_and_prints_its_ratios():
    out = subprocess.run([sys.executable, "bench/data_prep.py", "--data", str(XTREME_SAMPLE), "--repeats", "1"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert any(line.startswith("teacher encodings (") and line.endswith("x") for line in lines), out.stdout
    assert any(line.startswith("a trial's data set-up (") and "read from prepared files" in line for line in lines)
