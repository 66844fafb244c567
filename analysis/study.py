"""The study's tables with their statistics: point estimates (tables.py), ± std over seeds and
paired bootstrap intervals for every Δ (stats.py), assembled as renderable `Table`s.

    delta_table          §1  Δ vs SFT by task
    language_table       §2  one task per language, Δ vs SFT
    gap_table            §5  Dist − Ctrl gap by task
    best_lambda_table        best fixed λ per task in a sweep
    learned_lambda_table §4  last reported λ per task
    ce_table             §6  teacher vs student CE and the crossover step
    sweep_delta_table        §1 for one experiment folder, as the sweep prints it
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis import tables as tb
from analysis.errors import AnalysisError
from analysis.load import load, load_predictions
from analysis.render import TASK_TITLES, Table
from analysis.stats import Bootstrap, bootstrap, seed_std
from trainables.tasks.schema import TASKS


def _n_seeds(results: pd.DataFrame) -> int:
    return int(results.groupby("label")["seed"].nunique().max()) if len(results) else 0


def _note(results: pd.DataFrame, boot: Bootstrap | None, level: float, has_delta: bool = True) -> str:
    parts = []
    if _n_seeds(results) > 1:
        parts.append(f"± std over seeds (up to {_n_seeds(results)} per condition).")
    if boot is not None and has_delta:
        parts.append(f"Δ [low, high]: {level:.0%} paired bootstrap interval over the evaluation examples "
                     f"({boot.n_boot} resamples, seed {boot.seed}); † the interval excludes 0.")
    return " ".join(parts)


def _empty_like(values: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(float("nan"), index=values.index, columns=values.columns)


def _intervals(values: pd.DataFrame, boot: Bootstrap | None, cells: dict[tuple, tuple[str, str, str]],
               level: float) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Low/high frames: cells maps (row, column) → (condition a, condition b, task) of Δ = a − b."""
    if boot is None:
        return None, None
    low, high = _empty_like(values), _empty_like(values)
    cache: dict[tuple[str, str], pd.DataFrame] = {}
    for (r, c), (a, b, task) in cells.items():
        if (a, b) not in cache:
            cache[(a, b)] = boot.interval(a, b, level)
        iv = cache[(a, b)]
        if task in iv.index:
            low.at[r, c], high.at[r, c] = iv.at[task, "low"], iv.at[task, "high"]
    return low, high


def _std(std: pd.DataFrame | None, values: pd.DataFrame) -> pd.DataFrame | None:
    return None if std is None else std.reindex(index=values.index, columns=values.columns)


def delta_table(results: pd.DataFrame, boot: Bootstrap | None = None, baseline: str = "sft",
                split: str = "test", level: float = 0.95) -> Table:
    """§1: rows tasks + Avg, columns conditions then Δ vs the baseline, best per row in bold."""
    values = tb.delta_vs_sft(tb.headline_scores(results, split), baseline)
    by_seed = tb.headline_scores(results, split, by_seed=True)
    std = seed_std(by_seed, lambda s: tb.delta_vs_sft(s, baseline), keep=[baseline])
    deltas = {c: c[2:] for c in values.columns if str(c).startswith("Δ ")}
    cells = {(r, c): (cond, baseline, r) for c, cond in deltas.items() for r in values.index}
    low, high = _intervals(values, boot, cells, level)
    return Table(values, title=f"Δ vs {baseline} by task ({split}; task = mean over languages, Avg = mean over tasks)",
                 note=_note(results, boot, level), std=_std(std, values), low=low, high=high,
                 best_columns=[c for c in values.columns if c not in deltas])


def sweep_delta_table(experiment: str | Path, baseline: str = "sft", split: str = "test", n_boot: int = 1000,
                      seed: int = 0, level: float = 0.95) -> Table:
    """§1 of one experiment with the paired bootstrap interval of each Δ (none, and a note why, when
    the trials saved no per-example predictions)."""
    results = load(experiment)
    try:
        boot: Bootstrap | None = bootstrap(load_predictions(experiment, split), n_boot, seed)
        why = ""
    except AnalysisError as err:
        boot, why = None, f"No bootstrap interval: {err}"
    table = delta_table(results, boot, baseline, split, level)
    table.note = " ".join(x for x in (table.note, why) if x)
    return table


def language_table(results: pd.DataFrame, task: str, boot: Bootstrap | None = None, baseline: str = "sft",
                   split: str = "test", level: float = 0.95) -> Table:
    """§2: one task; rows conditions, columns EN … ZH, Avg and Δ vs the baseline; best per column in bold."""
    values = tb.per_language(tb.headline_scores(results, split), task, baseline)
    by_seed = tb.headline_scores(results, split, by_seed=True)
    std = seed_std(by_seed, lambda s: tb.per_language(s, task, baseline), keep=[baseline])
    col = f"Δ vs {baseline}"
    cells = {(r, col): (r, baseline, task) for r in values.index if r != baseline}
    low, high = _intervals(values, boot, cells, level)
    return Table(values, title=f"{TASK_TITLES[task]} per language ({split})", note=_note(results, boot, level),
                 std=_std(std, values), low=low, high=high, best="column",
                 best_columns=[c for c in values.columns if c != col])


def gap_table(results: pd.DataFrame, boot: Bootstrap | None = None, split: str = "test",
              level: float = 0.95) -> Table:
    """§5: rows tasks + Avg; one column per distill label: its score − its paired control's."""
    pairs = tb.control_pairs(results)
    values = tb.dist_ctrl_gap(tb.headline_scores(results, split), pairs)
    by_seed = tb.headline_scores(results, split, by_seed=True)
    std = seed_std(by_seed, lambda s: tb.dist_ctrl_gap(s, pairs), keep=sorted(set(pairs.values())))
    cells = {(r, tb.gap_name(d, c)): (d, c, r) for d, c in pairs.items() if tb.gap_name(d, c) in values.columns
             for r in values.index}
    low, high = _intervals(values, boot, cells, level)
    return Table(values, title=f"Dist − Ctrl gap by task ({split}; distill paired with the control at its λ "
                 "where there is one)", note=_note(results, boot, level), std=_std(std, values),
                 low=low, high=high, best=None)


def best_lambda_table(results: pd.DataFrame, boot: Bootstrap | None = None, baseline: str = "sft",
                      split: str = "test", level: float = 0.95) -> Table:
    """Best fixed λ per task: rows tasks + Avg, columns each λ's distill score, best λ, Δ best vs baseline."""
    lams = tb.fixed_lambdas(results)
    values = tb.best_lambda(tb.headline_scores(results, split), lams, baseline)
    by_seed = tb.headline_scores(results, split, by_seed=True)
    std = _std(seed_std(by_seed, lambda s: tb.best_lambda(s, lams, baseline), keep=[baseline]), values)
    if std is not None:
        std["best λ"] = float("nan")
    col = f"Δ best vs {baseline}"
    best = tb.best_labels(values, lams)
    cells = {(r, col): (best[r], baseline, r) for r in values.index if col in values.columns and pd.notna(best[r])}
    low, high = _intervals(values, boot, cells, level)
    lam_cols = [c for c in values.columns if c not in ("best λ", baseline, col)]
    return Table(values, title=f"Best fixed λ per task (distill, {split})", note=_note(results, boot, level),
                 std=std, low=low, high=high, best_columns=lam_cols, formats={"best λ": "g"})


def learned_lambda_table(results: pd.DataFrame) -> Table:
    """§4: rows conditions reporting λ, columns tasks: the last reported λ per task."""
    values = tb.learned_lambda(results)
    return Table(values, title="λ per task at the last report (mean over the answer tokens of each task)",
                 note=_note(results, None, 0.95, has_delta=False), std=_std(tb.learned_lambda(results, "std"), values),
                 best=None, digits=3, task_titles=False)


def ce_table(results: pd.DataFrame) -> Table:
    """§6: rows (condition, task): teacher CE, student CE first → last report, crossover step."""
    values = tb.ce_crossover(results)
    return Table(values, title="Teacher vs student CE on the answer tokens, and the crossover step",
                 note="crossover step: first step at which the student's smoothed CE falls below the teacher's "
                      "(– never). " + _note(results, None, 0.95, has_delta=False),
                 std=_std(tb.ce_crossover(results, "std"), values), best=None, digits=3, task_titles=False,
                 formats={tb.CE_COLUMNS["crossover_step"]: ".0f"})


def study_tables(results: pd.DataFrame, boot: Bootstrap | None = None, baseline: str = "sft",
                 split: str = "test", level: float = 0.95) -> dict[str, Table | str]:
    """Every table the data can make, by name; a table it cannot make maps to the one-line reason."""
    makers = {"delta": lambda: delta_table(results, boot, baseline, split, level)}
    tasks = [t for t in TASKS if t in set(results.loc[results["split"] == split, "task"])]
    for task in tasks:
        makers[f"lang_{task}"] = lambda task=task: language_table(results, task, boot, baseline, split, level)
    makers.update({
        "gap": lambda: gap_table(results, boot, split, level),
        "best_lambda": lambda: best_lambda_table(results, boot, baseline, split, level),
        "learned_lambda": lambda: learned_lambda_table(results),
        "ce": lambda: ce_table(results),
    })
    out: dict[str, Table | str] = {}
    for name, make in makers.items():
        try:
            out[name] = make()
        except tb.TableError as err:
            out[name] = str(err)
    return out
