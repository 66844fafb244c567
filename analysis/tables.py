"""Tables a researcher publishes, as dataframes (rounded only when rendered).

`delta_vs_sft`: the study's §1 shape — rows are tasks plus Avg, columns the conditions, then
Δ = condition − baseline. A task's score is the mean over its available languages; Avg is the
mean over tasks.
"""

from __future__ import annotations

import pandas as pd

from trainables.tasks.schema import HEADLINE_METRIC, LANGS, TASKS

TASK_TITLES = {"nli": "NLI (Acc)", "pa": "PA (Acc)", "qa": "QA (F1)", "ner": "NER (F1)", "pos": "POS (Acc)"}
CONDITION_ORDER = ("base", "fewshot", "sft", "control", "distill")


class TableError(ValueError):
    """The data cannot make the requested table (one line says why)."""


def headline_scores(results: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Final headline score per trial label, task and language: columns condition, task, lang, score.

    `condition` is the trial's label (e.g. 'distill λ=0.05'); several seeds are averaged."""
    need = {"split", "task", "lang", "metric", "value", "label", "final"}
    if missing := need - set(results.columns):
        raise TableError(f"results lack column(s) {sorted(missing)}: is this a lamtune results.parquet?")
    df = results[(results["split"] == split) & results["final"] & results["lang"].isin(LANGS)
                 & results["task"].isin(TASKS)]
    df = df[df["metric"] == df["task"].map(HEADLINE_METRIC)]
    out = df.groupby(["label", "task", "lang"], as_index=False)["value"].mean()
    return out.rename(columns={"label": "condition", "value": "score"})


def _order(conditions: list[str], baseline: str) -> list[str]:
    def key(c: str) -> tuple[int, str]:
        head = c.split(" ")[0]
        return (CONDITION_ORDER.index(head) if head in CONDITION_ORDER else len(CONDITION_ORDER), c)

    return sorted(conditions, key=key)


def delta_vs_sft(scores: pd.DataFrame, baseline: str = "sft") -> pd.DataFrame:
    """Rows: tasks + 'Avg'; columns: each condition's score, then 'Δ <condition>' vs the baseline.

    Input columns: condition, task, lang, score (0–100)."""
    need = {"condition", "task", "lang", "score"}
    if missing := need - set(scores.columns):
        raise TableError(f"scores lack column(s) {sorted(missing)}; need condition, task, lang, score")
    if baseline not in set(scores["condition"]):
        raise TableError(f"no {baseline!r} baseline among the conditions {sorted(set(scores['condition']))}")
    per_task = scores.groupby(["task", "condition"])["score"].mean().unstack("condition")
    per_task = per_task.reindex([t for t in TASKS if t in per_task.index])
    per_task.loc["Avg"] = per_task.mean(axis=0)
    cols = _order(list(per_task.columns), baseline)
    table = per_task[cols]
    for c in cols:
        if c != baseline:
            table[f"Δ {c}"] = table[c] - table[baseline]
    table.index.name = "task"
    return table


def to_markdown(table: pd.DataFrame, digits: int = 1, bold_best: bool = True) -> str:
    """A markdown rendering; the best score of each row is bolded (Δ columns are signed)."""
    score_cols = [c for c in table.columns if not str(c).startswith("Δ ")]
    header = ["Task", *map(str, table.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([" :--- "] + [" ---: "] * len(table.columns)) + "|"]
    for idx, row in table.iterrows():
        best = row[score_cols].max() if bold_best and len(score_cols) > 1 else None
        cells = [TASK_TITLES.get(str(idx), f"**{idx}**" if idx == "Avg" else str(idx))]
        for c in table.columns:
            v = row[c]
            if pd.isna(v):
                cells.append("–")
            elif str(c).startswith("Δ "):
                cells.append(f"{v:+.{digits}f}")
            else:
                text = f"{v:.{digits}f}"
                cells.append(f"**{text}**" if best is not None and v == best else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
