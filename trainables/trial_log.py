"""The product's own record of each trial, written where the sweep's results live and never rewritten:

    <experiment_dir>/trial_logs/<trial_id>/config.json     the trial's Tune config (written once)
    <experiment_dir>/trial_logs/<trial_id>/reports.jsonl   one line per report, appended and fsynced

Tune's own trial files (result.json, params.json) are staged on the driver and copied to the
storage folder every few seconds; a driver killed during a copy leaves them empty, and a resumed
trial's copy holds only what it reported after the resume. These logs survive both: results are
read from them (`analysis.collect`). A report repeated by a resumed trial (an evaluation redone
after the checkpoint before it) replaces the earlier line with the same evaluation index.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

LOG_DIRNAME = "trial_logs"
CONFIG_FILE = "config.json"
REPORTS_FILE = "reports.jsonl"


def trial_log_dir(experiment_dir: str | Path, trial_id: str) -> Path:
    """The folder of one trial's log."""
    return Path(experiment_dir) / LOG_DIRNAME / trial_id


def write_config(experiment_dir: str | Path, trial_id: str, config: dict[str, Any]) -> None:
    """Record the trial's config (atomically; kept if already there)."""
    d = trial_log_dir(experiment_dir, trial_id)
    if (d / CONFIG_FILE).is_file():
        return
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{CONFIG_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(config, default=str))
    tmp.replace(d / CONFIG_FILE)


def append_report(experiment_dir: str | Path, trial_id: str, report: dict[str, Any]) -> None:
    """Append one report as a line, on disk before this returns."""
    d = trial_log_dir(experiment_dir, trial_id)
    d.mkdir(parents=True, exist_ok=True)
    line = json.dumps({**report, "trial_id": trial_id}, default=float) + "\n"
    with open(d / REPORTS_FILE, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_reports(log_dir: Path) -> list[dict[str, Any]]:
    """A trial's reports in evaluation order, the last of each evaluation index (a torn last line skipped)."""
    path = log_dir / REPORTS_FILE
    by_index: dict[int, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                report = json.loads(line)
            except ValueError:  # a line cut short by a kill mid-write: only ever the last one
                continue
            by_index[int(report.get("eval_index", 0))] = report
    return [by_index[k] for k in sorted(by_index)]


def read_config(log_dir: Path) -> dict[str, Any] | None:
    """A trial's recorded config, or None when it has none."""
    path = log_dir / CONFIG_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def logged_trials(experiment_dir: str | Path) -> list[Path]:
    """The trial log folders of an experiment that hold a config."""
    root = Path(experiment_dir) / LOG_DIRNAME
    return sorted(d for d in root.iterdir() if (d / CONFIG_FILE).is_file()) if root.is_dir() else []
