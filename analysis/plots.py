"""The study's figures as matplotlib Figures (no pyplot state; `save` writes PNG with Agg).

    lambda_sweep       task score vs λ (log scale), one panel per task + Avg, SFT as a line
    language_heatmaps  conditions × languages, one panel per task
    training_curves    CE, KD and λ per task vs step
    ce_curves          teacher vs student CE per task vs step, crossover marked
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from analysis import tables as tb
from analysis.errors import AnalysisError
from analysis.order import label_ranks, ordered
from analysis.render import TASK_TITLES
from trainables.tasks.schema import TASKS


def save(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write the figure as a PNG (Agg, whatever backend is active) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def colors(labels: list[str], ranks: pd.Series) -> dict[str, tuple]:
    """One stable color per condition label, in the study's condition order (`ranks`: label_ranks)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {lab: cmap(i % 10) for i, lab in enumerate(ordered(set(labels), ranks))}


def _grid(n: int, ncols: int, size: tuple[float, float]) -> tuple[Figure, list[Axes]]:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n)]
    return fig, axes


def task_scores_by_seed(results: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Columns condition, seed, task (tasks and 'Avg'), score: one row per condition × seed × task."""
    s = tb.headline_scores(results, split, by_seed=True)
    if s.empty:
        raise AnalysisError("no final scores: no trial finished its test evaluation")
    per_task = s.groupby(["condition", "seed", "task"], as_index=False, dropna=False)["score"].mean()
    avg = per_task.groupby(["condition", "seed"], as_index=False, dropna=False)["score"].mean().assign(task="Avg")
    return pd.concat([per_task, avg], ignore_index=True)


def _title(task: str) -> str:
    return TASK_TITLES.get(task, task)


def lambda_sweep(results: pd.DataFrame, split: str = "test", baseline: str = "sft") -> Figure:
    """Task score vs λ (log scale) for fixed-λ distill (and control) trials; SFT as a dashed line."""
    info = tb.label_info(results)
    fixed = info[(info["policy"] == "fixed") & info["condition"].isin(["distill", "control"]) & (info["lam"] > 0)]
    scores = task_scores_by_seed(results, split)
    stats = scores.groupby(["condition", "task"])["score"].agg(["mean", "std"]).reset_index()
    stats = stats.merge(fixed[["condition", "lam"]].rename(columns={"condition": "kind"}),
                        left_on="condition", right_index=True)
    if stats[stats["kind"] == "distill"].empty:
        raise AnalysisError("no fixed-λ distill trial with final scores: no λ sweep to plot")
    tasks = [t for t in (*TASKS, "Avg") if t in set(stats["task"])]
    lams = sorted(set(stats["lam"]))
    fig, axes = _grid(len(tasks), 3, (4.2, 3.2))
    base = scores[scores["condition"] == baseline].groupby("task")["score"].mean()
    for ax, task in zip(axes, tasks):
        for kind, style in (("distill", dict(marker="o", ls="-", color="C0")),
                            ("control", dict(marker="s", ls=":", color="C3"))):
            d = stats[(stats["task"] == task) & (stats["kind"] == kind)].groupby("lam")[["mean", "std"]].mean()
            if len(d):
                ax.errorbar(d.index.to_numpy(float), d["mean"].to_numpy(float), yerr=d["std"].fillna(0).to_numpy(float),
                            capsize=3, label=kind, **style)
        if task in base.index:
            ax.axhline(base[task], color="k", ls="--", lw=1, label=baseline)
        ax.set_xscale("log")
        ax.set_xticks(lams, [f"{v:g}" for v in lams])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(_title(task))
        ax.set_xlabel("λ (KD weight)")
        ax.set_ylabel("score")
    axes[0].legend(fontsize="small")
    fig.suptitle(f"λ sweep ({split}; mean ± std over seeds)")
    return fig


def language_heatmaps(results: pd.DataFrame, split: str = "test") -> Figure:
    """Conditions × languages heatmap of each task's score (one panel per task, values written in)."""
    scores = tb.headline_scores(results, split)
    if scores.empty:
        raise AnalysisError("no final scores: no trial finished its test evaluation")
    tasks = [t for t in TASKS if t in set(scores["task"])]
    fig, axes = _grid(len(tasks), 2, (6.0, 0.5 * scores["condition"].nunique() + 1.6))
    for ax, task in zip(axes, tasks):
        m = tb.per_language(scores, task, baseline=None)
        im = ax.imshow(m.to_numpy(dtype=float), cmap="viridis", aspect="auto", vmin=0,
                       vmax=max(1.0, float(np.nanmax(m.to_numpy(dtype=float)))))
        ax.set_xticks(range(m.shape[1]), m.columns)
        ax.set_yticks(range(m.shape[0]), m.index)
        for (i, j), v in np.ndenumerate(m.to_numpy(dtype=float)):
            if not math.isnan(v):
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=8,
                        color="white" if v < 0.6 * im.get_clim()[1] else "black")
        ax.set_title(_title(task))
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(f"Score per language ({split})")
    return fig


def _mean_curve(df: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per label and step."""
    return df.groupby(["label", "step"], as_index=False)["value"].mean()


def training_curves(results: pd.DataFrame) -> Figure:
    """CE and KD of training, and λ per task, vs step; one line per condition (mean over seeds)."""
    train = results[results["split"] == "train"]
    losses = train[(train["task"] == "all") & train["metric"].isin(["ce", "kd"])]
    if losses.empty:
        raise AnalysisError("no training losses (train/ce, train/kd) reported: nothing trained")
    lam = train[(train["metric"] == "lambda") & train["task"].isin(TASKS)]
    lam_tasks = [t for t in TASKS if t in set(lam["task"])]
    panels = [("ce", "CE"), ("kd", "KD"), *((t, f"λ {t.upper()}") for t in lam_tasks)]
    fig, axes = _grid(len(panels), 3, (4.2, 3.0))
    ranks = label_ranks(results)
    palette = colors(list(results["label"].unique()), ranks)
    for ax, (key, title) in zip(axes, panels):
        d = losses[losses["metric"] == key] if key in ("ce", "kd") else lam[lam["task"] == key]
        curves = _mean_curve(d)
        for label in ordered(set(curves["label"]), ranks):
            g = curves[curves["label"] == label]
            ax.plot(g["step"].to_numpy(float), g["value"].to_numpy(float), marker=".", color=palette[label],
                    label=label)
        ax.set_title(title)
        ax.set_xlabel("step")
    axes[0].legend(fontsize="small")
    fig.suptitle("Training curves (mean over seeds)")
    return fig


def ce_curves(results: pd.DataFrame) -> Figure:
    """Per task: student CE (solid) and teacher CE (dashed) vs step, the crossover step dotted."""
    train = results[(results["split"] == "train") & results["task"].isin(TASKS)]
    teacher = train[train["metric"] == "teacher_ce"]
    if teacher.empty:
        raise AnalysisError("no teacher-vs-student CE diagnostics: no trial with a teacher reported them")
    labels = sorted(set(teacher["label"]))
    tasks = [t for t in TASKS if t in set(teacher["task"])]
    fig, axes = _grid(len(tasks), 3, (4.2, 3.0))
    ranks = label_ranks(results)
    palette = colors(labels, ranks)
    cross = tb.ce_crossover(results)[tb.CE_COLUMNS["crossover_step"]]
    for ax, task in zip(axes, tasks):
        for label in ordered(labels, ranks):
            rows = train[(train["label"] == label) & (train["task"] == task)]
            for metric, ls in (("student_ce", "-"), ("teacher_ce", "--")):
                g = _mean_curve(rows[rows["metric"] == metric])
                if len(g):
                    ax.plot(g["step"].to_numpy(float), g["value"].to_numpy(float), ls=ls, marker=".",
                            color=palette[label], label=f"{label} ({metric.split('_')[0]})")
            step = cross.get((label, task), math.nan)
            if pd.notna(step):
                ax.axvline(step, color=palette[label], ls=":", lw=1)
        ax.set_title(task.upper())
        ax.set_xlabel("step")
        ax.set_ylabel("CE (nats)")
    axes[0].legend(fontsize="x-small")
    fig.suptitle("Teacher vs student CE (dotted: crossover step)")
    return fig
