"""Experiment directories (or results.parquet files) → one tidy dataframe; per-example predictions.

`load` returns results.parquet's columns (see analysis.collect) with an `experiment` column first.
A Tune experiment without results.parquet, or whose trials reported after it was written, is
collected afresh with analysis.collect.collect (read-only: nothing is written).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, Union

import pandas as pd

from analysis.errors import AnalysisError
from analysis.collect import COLUMNS, RESULTS_FILE, collect, trial_dirs

PathLike = Union[str, "os.PathLike[str]"]
Paths = Union[PathLike, Sequence[PathLike]]

PREDICTIONS_DIR = "predictions"
PREDICTION_COLUMNS = ["task", "lang", "example_id", "output", "prediction", "reference", "parse_failed"]
#: The trial columns joined onto each prediction row.
TRIAL_COLUMNS = ["experiment", "trial_id", "label", "condition", "policy", "policy_params", "lam",
                 "teacher_mode", "seed", "model", "finetune", "kd_loss"]


def as_paths(paths: Paths) -> list[Path]:
    """One path or several, as a non-empty list of Paths."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = [Path(p).expanduser() for p in paths]
    if not out:
        raise AnalysisError("no experiment given: pass one or more experiment directories")
    return out


def experiment_dir(path: PathLike) -> Path:
    """The experiment directory of a path (the directory itself, or a results.parquet's folder)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise AnalysisError(f"{p} does not exist")
    if p.is_file():
        if p.suffix != ".parquet":
            raise AnalysisError(f"{p} is neither an experiment directory nor a results .parquet file")
        return p.parent
    if not (p / RESULTS_FILE).is_file() and not any(trial_dirs(p)):
        raise AnalysisError(f"{p} is not a lamtune experiment directory (no {RESULTS_FILE}, no Tune trial folders)")
    return p


def _is_stale(exp: Path) -> bool:
    """Whether a trial reported after results.parquet was written (a sweep still running)."""
    from trainables.trial_log import REPORTS_FILE, logged_trials

    written = (exp / RESULTS_FILE).stat().st_mtime
    files = [d / "result.json" for d in trial_dirs(exp)] + [d / REPORTS_FILE for d in logged_trials(exp)]
    return any(f.is_file() and f.stat().st_mtime > written for f in files)


def _read_results(path: Path) -> pd.DataFrame:
    if path.is_file():
        df = pd.read_parquet(path)
    elif (path / RESULTS_FILE).is_file() and not _is_stale(path):
        df = pd.read_parquet(path / RESULTS_FILE)
    else:
        df = collect(path)
    if missing := [c for c in COLUMNS if c not in df.columns]:
        raise AnalysisError(f"{path} is not a lamtune results table (missing column(s) {', '.join(missing)})")
    if df.empty:
        raise AnalysisError(f"{path} has no results yet (no trial has reported)")
    return df


def _names(dirs: list[Path]) -> list[str]:
    """Experiment names: folder names, or full paths where two folders share a name."""
    names = [d.name for d in dirs]
    return [str(d) if names.count(d.name) > 1 else d.name for d in dirs]


def load(paths: Paths, label_by_experiment: bool = False) -> pd.DataFrame:
    """The tidy results of one or several experiments, with an `experiment` column first.

    Trials of different experiments that share a label are pooled (as more seeds) unless
    `label_by_experiment`, which prefixes each label with its experiment ('smoke/sft')."""
    given = as_paths(paths)
    dirs = [experiment_dir(p) for p in given]
    frames = []
    for path, exp, name in zip(given, dirs, _names(dirs)):
        df = _read_results(path if path.is_file() else exp)
        df.insert(0, "experiment", name)
        if label_by_experiment:
            df["label"] = name + "/" + df["label"].astype(str)
        frames.append(df)
    _disambiguate_trials(frames)
    return pd.concat(frames, ignore_index=True)


def _disambiguate_trials(frames: list[pd.DataFrame]) -> None:
    """Trial ids shared by two experiments become '<experiment>:<trial_id>' in the later ones."""
    seen: set[str] = set()
    for df in frames:
        ids = set(df["trial_id"])
        if ids & seen:
            df["trial_id"] = df["experiment"] + ":" + df["trial_id"].astype(str)
        seen |= set(df["trial_id"])


def _trial_info(results: pd.DataFrame) -> pd.DataFrame:
    return results[TRIAL_COLUMNS].drop_duplicates("trial_id")


def load_predictions(paths: Paths, split: str | None = "test", label_by_experiment: bool = False) -> pd.DataFrame:
    """Per-example predictions of every trial (split 'test', 'dev', or None for both), with trial columns.

    Columns: the trial's (experiment, trial_id, label, condition, policy, λ, teacher mode, seed, …),
    split, task, lang, example_id, output, prediction and reference (JSON text), parse_failed."""
    if split not in ("test", "dev", None):
        raise AnalysisError(f"split must be 'test', 'dev' or None, got {split!r}")
    given = as_paths(paths)
    dirs = [experiment_dir(p) for p in given]
    results = load(given, label_by_experiment=label_by_experiment)
    frames = []
    for exp, name in zip(dirs, _names(dirs)):
        info = _trial_info(results[results["experiment"] == name])
        files = sorted((exp / PREDICTIONS_DIR).glob(f"*/{split or '*'}.parquet"))
        if not files:
            raise AnalysisError(f"{exp} has no per-example predictions ({PREDICTIONS_DIR}/<trial>/{split or '<split>'}"
                                ".parquet; were they saved? eval.save_predictions)")
        parts = []
        for f in files:
            df = pd.read_parquet(f)
            if missing := [c for c in PREDICTION_COLUMNS if c not in df.columns]:
                raise AnalysisError(f"{f} is not a predictions file (missing column(s) {', '.join(missing)})")
            df.insert(0, "split", f.stem)
            trial = f.parent.name
            df.insert(0, "trial_id", trial if trial in set(info["trial_id"]) else f"{name}:{trial}")
            parts.append(df)
        preds = pd.concat(parts, ignore_index=True)
        frames.append(info.merge(preds, on="trial_id", how="inner"))
    out = pd.concat(frames, ignore_index=True)
    if out.empty:
        raise AnalysisError("the predictions belong to no trial in the results (stale results.parquet?)")
    return out
