"""An experiment directory's trials → one tidy dataframe (`results.parquet`).

One row per trial × split × task × language × metric × report, with the trial's condition and
λ settings as columns. Which row a reported key lands in is `trainables.metric_keys.parse_key`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from trainables.metric_keys import parse_key

RESULTS_FILE = "results.parquet"
#: The sweep's failed trials, with their one-line reasons and retries (written by the sweep).
FAILURES_FILE = "failed_trials.json"

COLUMNS = ["trial_id", "label", "condition", "policy", "policy_params", "lam", "teacher_mode", "seed", "model",
           "finetune", "kd_loss", "split", "task", "lang", "metric", "value", "step", "eval_index", "final"]


def trial_dirs(experiment_dir: str | Path) -> Iterator[Path]:
    """The trial folders of a Tune experiment (those holding params.json)."""
    for p in sorted(Path(experiment_dir).iterdir()):
        if p.is_dir() and (p / "params.json").is_file():
            yield p


def trial_columns(params: dict[str, Any]) -> dict[str, Any]:
    """The trial's identifying settings (condition, λ policy, teacher, seed...) as flat columns."""
    from search_spaces.spaces import resolved_trial  # lazy: it imports the policies (torch)

    t = resolved_trial(params)
    v = t.get("variant", {})
    policy = v.get("policy", {}) or {}
    pparams = policy.get("params", {}) or {}
    lam = pparams.get("lam") if policy.get("name") == "fixed" else None
    return {
        "label": v.get("label", ""),
        "condition": v.get("condition", ""),
        "policy": policy.get("name", "") if v.get("condition") in ("distill", "control") else "",
        "policy_params": json.dumps(pparams, sort_keys=True),
        "lam": float(lam) if lam is not None and v.get("condition") in ("distill", "control") else (
            0.0 if v.get("condition") == "sft" else float("nan")),
        "teacher_mode": v.get("teacher_mode") or "",
        "seed": t.get("train", {}).get("seed"),
        "model": t.get("model", {}).get("name", ""),
        "finetune": t.get("model", {}).get("finetune", ""),
        "kd_loss": t.get("train", {}).get("kd_loss", ""),
    }


def trial_records(experiment_dir: str | Path) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]], str]]:
    """(Tune config, reports, trial id) of every trial: from the product's trial logs, and from Tune's
    trial folders for trials without one (experiments written before the logs existed)."""
    from trainables.trial_log import logged_trials, read_config, read_reports

    seen = set()
    for d in logged_trials(experiment_dir):
        seen.add(d.name)
        yield read_config(d) or {}, read_reports(d), d.name
    for d in trial_dirs(experiment_dir):
        result_file = d / "result.json"
        if not result_file.is_file():
            continue
        reports = [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
        if not reports:
            continue
        trial_id = reports[0].get("trial_id", d.name)
        if trial_id not in seen:
            yield json.loads((d / "params.json").read_text()), reports, trial_id


def collect(experiment_dir: str | Path) -> pd.DataFrame:
    """The tidy results of every trial in an experiment directory."""
    rows: list[dict[str, Any]] = []
    for params, reports, trial_id in trial_records(experiment_dir):
        base = trial_columns(params)
        for report in reports:
            for key, value in report.items():
                kind = parse_key(key)
                if kind is None or not isinstance(value, (int, float)) or isinstance(value, bool):
                    continue
                split, task, lang, metric = kind
                rows.append({**base, "trial_id": trial_id, "split": split, "task": task, "lang": lang,
                             "metric": metric, "value": float(value), "step": int(report.get("step", 0)),
                             "eval_index": int(report.get("eval_index", 0)), "final": bool(report.get("final", False))})
    return pd.DataFrame(rows, columns=COLUMNS)


def write_results(experiment_dir: str | Path) -> Path:
    """Collect an experiment's results and write them atomically to <experiment_dir>/results.parquet."""
    df = collect(experiment_dir)
    path = Path(experiment_dir) / RESULTS_FILE
    tmp = path.with_name(f".{RESULTS_FILE}.tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


def failed_trials(experiment_dir: str | Path) -> pd.DataFrame:
    """One row per failed trial of a sweep: trial folder, label, reason, retries before it gave up."""
    path = Path(experiment_dir) / FAILURES_FILE
    rows = json.loads(path.read_text()) if path.is_file() else []
    return pd.DataFrame(rows, columns=["trial", "label", "reason", "retries"])
