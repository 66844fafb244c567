"""Fault injection for tests and failure drills: a trial's worker kills itself, once, mid-run.

    LAMTUNE_INJECT_FAULT="kill@<step>"            every training trial's rank-0 worker
    LAMTUNE_INJECT_FAULT="kill@<step>:<label>"    only the trial with that label

At the start of training step <step> the worker sends itself SIGKILL (as the kernel's OOM killer or
a preempted node would: no exception, no clean-up), after leaving a marker in the experiment
folder so that the retried or resumed worker runs on. Unset (the default), nothing happens.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from trainables.config import TrialConfig

ENV = "LAMTUNE_INJECT_FAULT"


def parse(spec: str) -> tuple[int, str | None]:
    """(step, label or None) from 'kill@<step>[:<label>]'."""
    kind, _, rest = spec.partition("@")
    step, _, label = rest.partition(":")
    if kind != "kill" or not step.isdigit() or int(step) < 1:
        raise ValueError(f"{ENV}={spec!r}: expected 'kill@<step>' or 'kill@<step>:<label>' with step >= 1")
    return int(step), label or None


def at_step(cfg: TrialConfig, trial_name: str, rank: int, step: int) -> None:
    """Kill this process if a fault is injected at this step of this trial (the first time only)."""
    spec = os.environ.get(ENV)
    if not spec or rank != 0:
        return
    at, label = parse(spec)
    if step != at or (label is not None and label != cfg.variant.label):
        return
    marker = Path(cfg.experiment_dir or ".") / "faults" / f"{trial_name}.killed"
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"killed at step {step}\n")
    os.kill(os.getpid(), signal.SIGKILL)
