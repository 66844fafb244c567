"""An uninterrupted in-process run of a sweep's trial, to compare a faulted trial's results with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from search_spaces.spaces import resolved_trial
from trainables.config import TrialConfig
from trainables.loop import run_worker
from trainables.trial_log import read_config, read_reports, trial_log_dir


def reports(experiment_dir: Path, trial_id: str) -> list[dict[str, Any]]:
    """A trial's reports, in order, from the product's trial log."""
    return read_reports(trial_log_dir(experiment_dir, trial_id))


def computed(report: dict[str, Any]) -> dict[str, Any]:
    """A report without its wall-clock and process measurements."""
    return {k: v for k, v in report.items()
            if not (k.startswith(("time/", "mem/")) or "seconds" in k or k.endswith("_s"))}


def uninterrupted_final(experiment_dir: Path, trial_id: str, scratch: Path) -> dict[str, Any]:
    """The last report of the trial's recorded config run start to end in this process, on CPU."""
    config = read_config(trial_log_dir(experiment_dir, trial_id))
    assert config is not None, f"trial {trial_id} has no recorded config"
    cfg = TrialConfig.model_validate(resolved_trial(config))
    cfg = cfg.model_copy(update={"experiment_dir": str(scratch)})
    out: list[dict[str, Any]] = []
    run_worker(cfg, "reference", 0, 1, torch.device("cpu"), out.append)
    return out[-1]


def assert_same_final(experiment_dir: Path, trial_id: str, scratch: Path) -> None:
    """The trial's final report equals an uninterrupted run's on every computed metric."""
    want = computed(uninterrupted_final(experiment_dir, trial_id, scratch))
    got = reports(experiment_dir, trial_id)[-1]
    assert len(want) > 10 and all(got.get(k) == v for k, v in want.items()), \
        {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
