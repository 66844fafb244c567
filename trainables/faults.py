"""Fault injection for tests and failure drills: a trial's process kills itself, once.

    LAMTUNE_INJECT_FAULT="kill@<step>"            every training trial's rank-0 worker, at that step
    LAMTUNE_INJECT_FAULT="kill@<step>:<label>"    only the trial with that label
    LAMTUNE_INJECT_FAULT="kill@driver:<label>"    the trial's Tune driver, before its TorchTrainer
    LAMTUNE_INJECT_FAULT="<spec>,<spec>"          several of these

At the start of training step <step> the worker (or, with `driver`, the process running the trial's
Tune function) sends itself SIGKILL (as the kernel's OOM killer or a preempted node would: no
exception, no clean-up), after leaving a marker in the experiment folder so that the retried or
resumed trial runs on. Unset (the default), nothing happens.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from trainables.config import TrialConfig

ENV = "LAMTUNE_INJECT_FAULT"


#: Where `kill@driver` strikes (a step number names a training step).
DRIVER = "driver"


def parse(spec: str) -> list[tuple[int | str, str | None]]:
    """[(step or 'driver', label or None)] from 'kill@<step|driver>[:<label>]', comma-separated."""
    out: list[tuple[int | str, str | None]] = []
    for one in spec.split(","):
        kind, _, rest = one.strip().partition("@")
        at, _, label = rest.partition(":")
        if kind != "kill" or not (at == DRIVER or (at.isdigit() and int(at) >= 1)):
            raise ValueError(f"{ENV}={spec!r}: expected 'kill@<step>[:<label>]' with step >= 1, or "
                             f"'kill@driver[:<label>]', comma-separated")
        out.append((at if at == DRIVER else int(at), label or None))
    return out


def _strike(cfg: TrialConfig, trial_name: str, at: int | str, marker_name: str, note: str) -> None:
    """Kill this process if a fault is injected at `at` of this trial (the first time only)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    if not any(a == at and (label is None or label == cfg.variant.label) for a, label in parse(spec)):
        return
    marker = Path(cfg.experiment_dir or ".") / "faults" / f"{trial_name}.{marker_name}"
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(note + "\n")
    os.kill(os.getpid(), signal.SIGKILL)


def at_step(cfg: TrialConfig, trial_name: str, rank: int, step: int) -> None:
    """Kill this process if a fault is injected at this step of this trial (the first time only)."""
    if rank == 0:
        _strike(cfg, trial_name, step, "killed", f"killed at step {step}")


def at_driver_start(cfg: TrialConfig, trial_name: str) -> None:
    """Kill this trial's Tune driver if a fault is injected there (the first time only)."""
    _strike(cfg, trial_name, DRIVER, "driver-killed", "driver killed before its TorchTrainer")
