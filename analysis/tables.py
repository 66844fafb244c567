"""Tables a researcher publishes, as dataframes of point estimates (rounded only when rendered).

Scores are the final headline metric per trial label ("condition"), task and language, averaged
over seeds. A task's score is the mean over its available languages; Avg is the mean over tasks.
Conditions appear in the study's order, read from the trial columns (analysis.order), never from
a label's text.

    delta_vs_sft     §1: rows tasks + Avg, columns conditions, then Δ = condition − baseline
    per_language     §2: rows conditions, columns EN … ZH, Avg, Δ vs baseline (one task)
    dist_ctrl_gap    §5: rows tasks + Avg, one column per distill − control pair
    learned_lambda   §4: rows λ-reporting conditions, columns tasks: last reported λ per task
    best_lambda      λ sweep: rows tasks + Avg, columns fixed-λ distill scores, best λ, Δ vs baseline
    ce_crossover     §6: rows (condition, task): teacher CE, student CE first/last, crossover step
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.order import ORDER_COLUMN, label_ranks, ordered
from analysis.render import Table, render
from trainables.tasks.schema import HEADLINE_METRIC, LANGS, TASKS

LABEL_COLUMNS = ["condition", "policy", "policy_params", "lam", "teacher_mode"]
CE_COLUMNS = {"teacher_ce": "teacher CE (avg)", "student_first": "student CE (first)",
              "student_last": "student CE (last)", "crossover_step": "crossover step"}


class TableError(AnalysisError):
    """The data cannot make the requested table (one line says why)."""


def _require(df: pd.DataFrame, need: set[str], what: str) -> None:
    if missing := need - set(df.columns):
        raise TableError(f"{what} lack column(s) {sorted(missing)}: is this a lamtune results.parquet?")


def headline_scores(results: pd.DataFrame, split: str = "test", by_seed: bool = False) -> pd.DataFrame:
    """Final headline score per trial label, task and language: columns condition, task, lang, score, order.

    `condition` is the trial's label (e.g. 'distill λ=0.05'); `order` its rank in the study's order
    (analysis.order.label_ranks); seeds are averaged, or kept apart in a `seed` column when `by_seed`."""
    _require(results, {"split", "task", "lang", "metric", "value", "label", "condition", "lam", "final",
                       *(["seed"] if by_seed else [])}, "results")
    df = results[(results["split"] == split) & results["final"].astype(bool) & results["lang"].isin(LANGS)
                 & results["task"].isin(TASKS)]
    df = df[df["metric"] == df["task"].map(HEADLINE_METRIC)]
    keys = ["label", "seed", "task", "lang"] if by_seed else ["label", "task", "lang"]
    out = df.groupby(keys, as_index=False, dropna=False)["value"].mean()
    out[ORDER_COLUMN] = out["label"].map(label_ranks(results))
    return out.rename(columns={"label": "condition", "value": "score"})


def score_ranks(scores: pd.DataFrame) -> pd.Series:
    """Condition → rank of a scores frame (its `order` column; none without one: conditions by name)."""
    if ORDER_COLUMN not in scores.columns:
        return pd.Series(dtype=float)
    return scores.groupby("condition")[ORDER_COLUMN].min()


def _check_scores(scores: pd.DataFrame) -> None:
    _require(scores, {"condition", "task", "lang", "score"}, "scores")
    if scores.empty:
        raise TableError("no final scores: no trial finished its test evaluation")


def _check_baseline(scores: pd.DataFrame, baseline: str) -> None:
    if baseline not in set(scores["condition"]):
        among = ordered(set(scores["condition"]), score_ranks(scores))
        raise TableError(f"no {baseline!r} baseline among the conditions {among}")


def task_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """Rows: tasks + 'Avg'; columns: conditions; a task's score is the mean over its languages."""
    _check_scores(scores)
    per_task = scores.groupby(["task", "condition"])["score"].mean().unstack("condition")
    per_task = per_task.reindex([t for t in TASKS if t in per_task.index])
    per_task.loc["Avg"] = per_task.mean(axis=0)
    per_task = per_task[ordered(per_task.columns, score_ranks(scores))]
    per_task.index.name, per_task.columns.name = "task", None
    return per_task


def delta_vs_sft(scores: pd.DataFrame, baseline: str = "sft") -> pd.DataFrame:
    """Rows: tasks + 'Avg'; columns: each condition's score, then 'Δ <condition>' vs the baseline.

    Input columns: condition, task, lang, score (0–100)."""
    _check_scores(scores)
    _check_baseline(scores, baseline)
    table = task_scores(scores)
    for c in list(table.columns):
        if c != baseline:
            table[f"Δ {c}"] = table[c] - table[baseline]
    return table


def per_language(scores: pd.DataFrame, task: str, baseline: str | None = "sft") -> pd.DataFrame:
    """Rows: conditions; columns: EN … ZH (those present), Avg, then 'Δ vs <baseline>' of Avg
    (NaN on the baseline's own row)."""
    _check_scores(scores)
    if task not in TASKS:
        raise TableError(f"unknown task {task!r}; allowed: {', '.join(TASKS)}")
    df = scores[scores["task"] == task]
    if df.empty:
        raise TableError(f"no {task} scores among the results")
    wide = df.pivot_table(index="condition", columns="lang", values="score", aggfunc="mean")
    wide = wide[[lang for lang in LANGS if lang in wide.columns]]
    wide.columns = [lang.upper() for lang in wide.columns]
    wide["Avg"] = wide.mean(axis=1)
    wide = wide.loc[ordered(wide.index, score_ranks(df))]
    wide.index.name, wide.columns.name = "condition", None
    if baseline is not None:
        _check_baseline(df, baseline)
        wide[f"Δ vs {baseline}"] = wide["Avg"] - wide.loc[baseline, "Avg"]
        wide.loc[baseline, f"Δ vs {baseline}"] = math.nan  # the baseline is not compared with itself
    return wide


def label_info(results: pd.DataFrame) -> pd.DataFrame:
    """One row per label: condition, policy, policy_params, λ (fixed policies) and teacher mode."""
    _require(results, {"label", *LABEL_COLUMNS}, "results")
    return results.drop_duplicates("label").set_index("label")[LABEL_COLUMNS]


def control_pairs(results: pd.DataFrame) -> dict[str, str]:
    """Each distill label → the control it is compared with.

    The control with the same λ policy and parameters where there is one, else the sweep's only
    control, else the control whose λ is nearest (in log scale)."""
    info = label_info(results)
    distills = info[info["condition"] == "distill"]
    controls = info[info["condition"] == "control"]
    if distills.empty or controls.empty:
        raise TableError("a Dist − Ctrl gap needs both distill and control trials")
    pairs: dict[str, str] = {}
    ranks = label_ranks(results)
    for d, row in distills.iterrows():
        same = controls[(controls["policy"] == row["policy"]) & (controls["policy_params"] == row["policy_params"])]
        if len(same):
            pairs[d] = ordered(same.index, ranks)[0]
        elif len(controls) == 1:
            pairs[d] = controls.index[0]
        else:
            dist = (np.log(controls["lam"].astype(float)) - np.log(float(row["lam"]))).abs()
            pairs[d] = dist.idxmin() if dist.notna().any() else ordered(controls.index, ranks)[0]
    return pairs


def gap_name(distill: str, control: str) -> str:
    """The column name of a Dist − Ctrl gap."""
    return f"{distill} − {control}"


def dist_ctrl_gap(scores: pd.DataFrame, pairs: Mapping[str, str]) -> pd.DataFrame:
    """Rows: tasks + 'Avg'; one column per (distill, control) pair: distill score − control score."""
    per_task = task_scores(scores)
    usable = {d: c for d, c in pairs.items() if d in per_task.columns and c in per_task.columns}
    if not usable:
        raise TableError("no distill/control pair has final scores for both sides")
    table = pd.DataFrame({gap_name(d, c): per_task[d] - per_task[c] for d, c in usable.items()})
    table.index.name = "task"
    return table


def best_lambda(scores: pd.DataFrame, lams: Mapping[str, float], baseline: str | None = "sft") -> pd.DataFrame:
    """Rows: tasks + 'Avg'; columns: each fixed-λ distill condition's score ('λ=…'), 'best λ' (argmax;
    ties go to the smaller λ), then the baseline's score and 'Δ best vs <baseline>' when it is present.

    `lams`: label → λ of the fixed-λ distill conditions (see `fixed_lambdas`)."""
    per_task = task_scores(scores)
    labels = sorted((lab for lab in lams if lab in per_task.columns), key=lambda lab: (lams[lab], lab))
    if not labels:
        raise TableError("no fixed-λ distill trial has final scores: no λ sweep to read")
    values = [lams[lab] for lab in labels]
    names = [f"λ={v:g}" for v in values] if len(set(values)) == len(values) else labels
    table = per_task[labels].set_axis(names, axis=1)
    grid = table.to_numpy(dtype=float)
    has = ~np.isnan(grid).all(axis=1)
    best = np.full(len(table), -1)
    best[has] = np.nanargmax(grid[has], axis=1)
    table["best λ"] = [values[i] if i >= 0 else math.nan for i in best]
    if baseline is not None and baseline in per_task.columns:
        table[baseline] = per_task[baseline]
        top = np.array([grid[r, i] if i >= 0 else math.nan for r, i in enumerate(best)])
        table[f"Δ best vs {baseline}"] = top - per_task[baseline].to_numpy(dtype=float)
    return table


def best_labels(table: pd.DataFrame, lams: Mapping[str, float]) -> pd.Series:
    """The label of the best λ in each row of a `best_lambda` table (NaN where none)."""
    by_lam = {v: lab for lab, v in lams.items()}
    return table["best λ"].map(by_lam)


def fixed_lambdas(results: pd.DataFrame) -> dict[str, float]:
    """Label → λ of every fixed-λ distill condition."""
    info = label_info(results)
    fixed = info[(info["condition"] == "distill") & (info["policy"] == "fixed") & info["lam"].notna()]
    return {str(k): float(v) for k, v in fixed["lam"].items()}


def _last_per_trial(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["step", "eval_index"]).groupby(["trial_id", "task"], as_index=False).last()


def learned_lambda(results: pd.DataFrame, agg: str = "mean") -> pd.DataFrame:
    """Rows: conditions that report λ per task; columns: tasks; the last reported λ (mean over seeds).

    `agg='std'` gives the spread over seeds instead."""
    _require(results, {"split", "metric", "task", "step", "eval_index", "trial_id", "label", "condition", "lam",
                       "value"}, "results")
    lam = results[(results["split"] == "train") & (results["metric"] == "lambda") & results["task"].isin(TASKS)]
    if lam.empty:
        raise TableError("no trial reported λ per task (lambda/<task>/mean): only distill/control trials do")
    last = _last_per_trial(lam)
    table = last.pivot_table(index="label", columns="task", values="value", aggfunc=agg)
    table = table.reindex(index=ordered(table.index, label_ranks(results)),
                          columns=[t for t in TASKS if t in table.columns])
    table.index.name, table.columns.name = "condition", None
    return table


def ce_crossover(results: pd.DataFrame, agg: str = "mean") -> pd.DataFrame:
    """Rows: (condition, task) of trials with a teacher; columns: teacher CE (avg over reports),
    student CE at the first and last report, and the crossover step (NaN: never crossed).

    Seeds are averaged (`agg='std'`: their spread)."""
    _require(results, {"split", "metric", "task", "step", "eval_index", "trial_id", "label", "condition", "lam",
                       "value"}, "results")
    d = results[(results["split"] == "train") & results["task"].isin(TASKS)
                & results["metric"].isin(["teacher_ce", "student_ce", "crossover_step"])]
    teacher = d[d["metric"] == "teacher_ce"]
    if teacher.empty:
        raise TableError("no teacher-vs-student CE diagnostics (diag/<task>/teacher_ce): "
                         "only trials with a teacher report them")
    d = d[d["trial_id"].isin(set(teacher["trial_id"]))].sort_values(["step", "eval_index"])
    keys = ["label", "trial_id", "task"]
    student = d[d["metric"] == "student_ce"].groupby(keys)["value"]
    per_trial = pd.DataFrame({
        "teacher_ce": teacher.groupby(keys)["value"].mean(),
        "student_first": student.first(),
        "student_last": student.last(),
        "crossover_step": d[d["metric"] == "crossover_step"].groupby(keys)["value"].last(),
    })
    per_trial = per_trial[per_trial["teacher_ce"].notna()]
    table = per_trial.groupby(level=["label", "task"]).agg(agg).rename(columns=CE_COLUMNS)
    labels = ordered(set(table.index.get_level_values(0)), label_ranks(results))
    rows = [(c, t) for c in labels for t in TASKS if (c, t) in table.index]
    table = table.loc[rows]
    table.index.names = ["condition", "task"]
    return table


def to_markdown(table: pd.DataFrame, digits: int = 1, bold_best: bool = True) -> str:
    """A markdown rendering; the best score of each row is bolded (Δ columns are signed)."""
    return render(Table(table, digits=digits, best="row" if bold_best else None), "md")
