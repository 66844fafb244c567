"""Spread over seeds and paired bootstrap intervals for every Δ.

Paired bootstrap: for each (task, language) the evaluation examples are resampled with
replacement, the SAME resample for every condition and seed; each trial's corpus-level metric
is recomputed on the resample, averaged over seeds, aggregated like the tables (mean over a
task's languages, Avg = mean over tasks), and Δ is taken per resample; the interval is the
percentiles of those Δ.

Vectorised: every supported metric is 100·Σnum/Σden over examples (accuracy: correct/1; QA F1:
F1/1; POS accuracy: correct tokens/tokens; NER micro-F1: 2·tp/(predicted + gold entities), with
the counts from seqeval's own get_entities), so a resample is a count-weighted sum. The per-example
numbers are checked against trainables.tasks.metrics.metric on the full set before use.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from seqeval.metrics.sequence_labeling import get_entities

from analysis.errors import AnalysisError
from analysis.tables import TableError
from trainables.tasks.metrics import metric, qa_f1_em
from trainables.tasks.schema import HEADLINE_METRIC, LANGS, TASKS

#: (task, metric) pairs the bootstrap can recompute.
SUPPORTED: frozenset[tuple[str, str]] = frozenset({
    ("nli", "acc"), ("pa", "acc"), ("qa", "f1"), ("qa", "em"), ("pos", "acc"),
    ("ner", "f1"), ("ner", "precision"), ("ner", "recall"),
})


# --------------------------------------------------------------------------- per-example statistics


def _fit(pred: Sequence[Any] | None, gold: Sequence[Any], pad: str) -> tuple[list[str], list[str]]:
    """The prediction padded or truncated to the gold length (as metrics.py scores tag sequences)."""
    g = [str(x) for x in gold]
    p = [str(x) for x in (pred or [])][: len(g)]
    return p + [pad] * (len(g) - len(p)), g


def _entities(tags: list[str]) -> set[tuple[str, int, int]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return set(get_entities([tags]))


def example_stats(task: str, lang: str, predictions: Sequence[Any], references: Sequence[Any],
                  name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-example (numerator, denominator) whose sums give the corpus metric: 100·Σnum/Σden.

    Raises AnalysisError if that differs from metric(task, lang, …)[name] on the full set."""
    name = name or HEADLINE_METRIC[task]
    if (task, name) not in SUPPORTED:
        raise AnalysisError(f"no bootstrap for {task} {name}; supported: "
                            + ", ".join(f"{t} {m}" for t, m in sorted(SUPPORTED)))
    n = len(predictions)
    num, den = np.zeros(n), np.ones(n)
    for i, (p, r) in enumerate(zip(predictions, references)):
        if task in ("nli", "pa"):
            num[i] = metric(task, lang, [p], [r])["acc"] / 100.0
        elif task == "qa":
            golds = r.get("text", []) if isinstance(r, dict) else r
            num[i] = qa_f1_em(p, golds, lang)[0 if name == "f1" else 1]
        elif task == "pos":
            pred, gold = _fit(p, r, pad="_")
            num[i], den[i] = sum(a == b for a, b in zip(pred, gold)), len(gold)
        else:
            pred, gold = _fit(p, r, pad="O")
            ep, eg = _entities(pred), _entities(gold)
            tp = len(ep & eg)
            num[i], den[i] = {"f1": (2 * tp, len(ep) + len(eg)), "precision": (tp, len(ep)),
                              "recall": (tp, len(eg))}[name]
    mine = ratio(num.sum(), den.sum())
    official = metric(task, lang, list(predictions), list(references))[name]
    if n and not math.isclose(mine, official, rel_tol=1e-9, abs_tol=1e-9):
        raise AnalysisError(f"bootstrap statistics for {task}/{lang} {name} ({mine}) disagree with "
                            f"metric() ({official})")
    return num, den


def ratio(num: Any, den: Any) -> Any:
    """100·num/den, 0 where den is 0 (works on scalars and arrays)."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    out = np.divide(100.0 * num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)
    return float(out) if out.ndim == 0 else out


# --------------------------------------------------------------------------- resampling


def resample_indices(n: int, n_boot: int, seed: int, task: str, lang: str) -> np.ndarray:
    """[n_boot, n] example indices drawn with replacement; a function of (seed, task, lang) only."""
    rng = np.random.default_rng([int(seed), TASKS.index(task), LANGS.index(lang)])
    return rng.integers(0, n, size=(n_boot, n))


def resample_counts(n: int, n_boot: int, seed: int, task: str, lang: str) -> np.ndarray:
    """[n_boot, n] how often each example is drawn in each resample of `resample_indices`."""
    idx = resample_indices(n, n_boot, seed, task, lang)
    flat = (idx + np.arange(n_boot)[:, None] * n).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(float)


def _decode(values: pd.Series) -> list[Any]:
    return [json.loads(v) if isinstance(v, str) else v for v in values]


def _aligned(group: pd.DataFrame, task: str, lang: str) -> tuple[list[str], dict[str, pd.DataFrame]]:
    """Each trial's rows in one shared example order; the example sets must be identical."""
    group = group.assign(_k=group.groupby(["trial_id", "example_id"]).cumcount())
    per_trial = {t: g.sort_values(["example_id", "_k"]) for t, g in group.groupby("trial_id", sort=True)}
    keys = None
    for trial, g in per_trial.items():
        k = list(zip(g["example_id"], g["_k"]))
        if keys is None:
            keys, first = k, trial
        elif k != keys:
            raise AnalysisError(f"trials {first} and {trial} were evaluated on different {task}/{lang} examples: "
                                "a paired bootstrap needs the same ones")
    return [str(k[0]) for k in keys or []], per_trial


@dataclass(frozen=True)
class Bootstrap:
    """Each condition's score on every resample: index (condition, task, lang), columns 0 … n_boot−1."""

    scores: pd.DataFrame
    n_boot: int
    seed: int

    def task_scores(self) -> pd.DataFrame:
        """Index (condition, task incl. 'Avg'), columns resamples: mean over languages, Avg over tasks."""
        per_task = self.scores.groupby(level=["condition", "task"]).mean()
        avg = per_task.groupby(level="condition").mean()
        avg.index = pd.MultiIndex.from_product([avg.index, ["Avg"]], names=["condition", "task"])
        return pd.concat([per_task, avg]).sort_index()

    def conditions(self) -> list[str]:
        """The conditions resampled."""
        return list(dict.fromkeys(self.scores.index.get_level_values("condition")))

    def interval(self, a: str, b: str, level: float = 0.95) -> pd.DataFrame:
        """Percentile interval of score(a) − score(b) per task and Avg: columns low, high."""
        if not 0 < level < 1:
            raise AnalysisError(f"level must be in (0, 1), got {level}")
        ts = self.task_scores()
        if a not in self.conditions() or b not in self.conditions():
            return pd.DataFrame(columns=["low", "high"], dtype=float)
        diff = (ts.xs(a, level="condition") - ts.xs(b, level="condition")).dropna(how="all")
        q = 100 * np.array([(1 - level) / 2, (1 + level) / 2])
        lo, hi = np.percentile(diff.to_numpy(), q, axis=1)
        order = [t for t in (*TASKS, "Avg") if t in diff.index]
        return pd.DataFrame({"low": lo, "high": hi}, index=diff.index).loc[order]


def bootstrap(predictions: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
              metrics: dict[str, str] | None = None) -> Bootstrap:
    """Paired bootstrap of every condition's per-language scores from per-example predictions.

    `predictions`: load_predictions' frame for ONE split (columns label, trial_id, task, lang,
    example_id, prediction, reference); `metrics`: task → metric (default: the headline)."""
    need = {"label", "trial_id", "task", "lang", "example_id", "prediction", "reference"}
    if missing := need - set(predictions.columns):
        raise AnalysisError(f"predictions lack column(s) {sorted(missing)}: use analysis.load_predictions")
    if predictions.empty:
        raise AnalysisError("no predictions to resample")
    if "split" in predictions.columns and predictions["split"].nunique() > 1:
        raise AnalysisError("predictions of several splits: pick one (load_predictions(split='test'))")
    if n_boot < 1:
        raise AnalysisError(f"n_boot must be ≥ 1, got {n_boot}")
    metrics = {**HEADLINE_METRIC, **(metrics or {})}
    label_of = predictions.drop_duplicates("trial_id").set_index("trial_id")["label"]
    blocks = []
    for (task, lang), group in predictions.groupby(["task", "lang"], sort=False):
        ids, per_trial = _aligned(group, task, lang)
        trials = list(per_trial)
        num = np.empty((len(ids), len(trials)))
        den = np.empty_like(num)
        for j, trial in enumerate(trials):
            g = per_trial[trial]
            num[:, j], den[:, j] = example_stats(task, lang, _decode(g["prediction"]), _decode(g["reference"]),
                                                 metrics[task])
        counts = resample_counts(len(ids), n_boot, seed, task, lang)  # [B, n]
        scores = ratio(counts @ num, counts @ den).T  # [trials, B]
        frame = pd.DataFrame(scores, index=pd.Index([label_of[t] for t in trials], name="condition"))
        frame = frame.groupby(level="condition").mean()  # seeds averaged, as in the tables
        frame.index = pd.MultiIndex.from_arrays(
            [frame.index, [task] * len(frame), [lang] * len(frame)], names=["condition", "task", "lang"])
        blocks.append(frame)
    return Bootstrap(pd.concat(blocks).sort_index(), n_boot, seed)


# --------------------------------------------------------------------------- seeds


def seed_std(scores: pd.DataFrame, build: Callable[[pd.DataFrame], pd.DataFrame],
             keep: Sequence[str] = ()) -> pd.DataFrame | None:
    """Sample std over seeds of every cell of `build(scores of one seed)`; None with fewer than 2 seeds.

    `scores` has a seed column (headline_scores(…, by_seed=True)). A condition in `keep` (a
    baseline) that a seed lacks is stood in for by its mean over seeds, and its own cells from
    that seed are left out of the spread."""
    if "seed" not in scores.columns:
        raise AnalysisError("scores lack a seed column: use headline_scores(results, by_seed=True)")
    seeds = list(scores["seed"].dropna().unique())
    if len(seeds) < 2:
        return None
    keys = ["condition", "task", "lang"]
    carried = {c: "first" for c in scores.columns if c not in (*keys, "score", "seed")}  # e.g. the order column
    mean = scores.groupby(keys, as_index=False).agg({"score": "mean", **carried})
    tables = []
    for s in seeds:
        part = scores[scores["seed"] == s].drop(columns="seed")
        stand_in = [c for c in keep if c not in set(part["condition"])]
        part = pd.concat([part, mean[mean["condition"].isin(stand_in)]], ignore_index=True)
        try:
            t = build(part)
        except TableError:
            continue
        for c in stand_in:
            if c in t.columns:
                t[c] = np.nan
            if c in t.index:
                t.loc[c] = np.nan
        tables.append(t)
    if len(tables) < 2:
        return None
    stacked = pd.concat(tables, keys=range(len(tables)), names=["_seed"])
    levels = list(range(1, stacked.index.nlevels))
    return stacked.groupby(level=levels).std(ddof=1)
