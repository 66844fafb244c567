"""A sweep report: every table (md/csv/latex/html files) and figure (PNG), in one markdown or HTML page.

The page follows the study: §1 Δ vs SFT by task, §2 per language, §3 the λ sweep, §4 λ per task,
§5 the Dist − Ctrl gap, §6 teacher vs student CE. A table or figure the data cannot make is
replaced by the one-line reason; only a missing Δ-vs-baseline table is an error.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

import pandas as pd
from matplotlib.figure import Figure

from analysis import plots
from analysis.errors import AnalysisError
from analysis.load import Paths, as_paths, experiment_dir, load, load_predictions
from analysis.render import Table, render
from analysis.stats import Bootstrap, bootstrap
from analysis.study import study_tables
from analysis.render import TASK_TITLES
from trainables.tasks.schema import TASKS

REPORT_FORMATS = ("md", "html")
TABLE_FORMATS = {"md": "md", "csv": "csv", "latex": "tex", "html": "html"}


@dataclass
class _Figure:
    name: str
    path: Path | None
    reason: str = ""


Block = Union[str, Table, _Figure]


def _figures(results: pd.DataFrame, split: str, baseline: str, out: Path) -> dict[str, _Figure]:
    makers: dict[str, Callable[[], Figure]] = {
        "lambda_sweep": lambda: plots.lambda_sweep(results, split, baseline),
        "language_heatmaps": lambda: plots.language_heatmaps(results, split),
        "training_curves": lambda: plots.training_curves(results),
        "ce_curves": lambda: plots.ce_curves(results),
    }
    figs = {}
    for name, make in makers.items():
        try:
            figs[name] = _Figure(name, plots.save(make(), out / "plots" / f"{name}.png"))
        except AnalysisError as err:
            figs[name] = _Figure(name, None, str(err))
    return figs


def _summary(results: pd.DataFrame, split: str, baseline: str, boot: Bootstrap | None, why_no_ci: str) -> str:
    trials = results.drop_duplicates("trial_id")
    seeds = trials.groupby("label")["seed"].nunique()
    per = f"{seeds.max()} seed(s) each" if seeds.min() == seeds.max() else f"{seeds.min()}–{seeds.max()} seeds each"
    ci = (f"paired bootstrap over the evaluation examples, {boot.n_boot} resamples, seed {boot.seed}"
          if boot is not None else f"none ({why_no_ci})")
    return "\n".join([
        f"- experiments: {', '.join(sorted(results['experiment'].unique()))}",
        f"- model: {', '.join(sorted(map(str, trials['model'].unique())))}; {len(trials)} trials, "
        f"{trials['label'].nunique()} conditions, {per}",
        f"- scores: {split} split, final evaluation, headline metric per task "
        f"({', '.join(TASK_TITLES[t] for t in TASKS if t in set(results['task']))}), 0–100; Δ vs `{baseline}`",
        f"- intervals: {ci}",
    ])


def _sections(tables: dict[str, Table | str], figs: dict[str, _Figure]) -> list[tuple[str, list[Block]]]:
    langs = [tables[k] for k in tables if k.startswith("lang_")]
    sections: list[tuple[str, list[Block | None]]] = [
        ("1. Δ vs SFT by task", [tables["delta"]]),
        ("2. Per language", [*langs, figs.get("language_heatmaps")]),
        ("3. The λ sweep", [tables["best_lambda"], figs.get("lambda_sweep")]),
        ("4. λ per task", [tables["learned_lambda"], figs.get("training_curves")]),
        ("5. Dist − Ctrl gap", [tables["gap"]]),
        ("6. Teacher vs student CE", [tables["ce"], figs.get("ce_curves")]),
    ]
    return [(heading, [b for b in blocks if b is not None]) for heading, blocks in sections]


def _write_tables(tables: dict[str, Table | str], out: Path) -> None:
    for name, t in tables.items():
        if isinstance(t, Table):
            for fmt, ext in TABLE_FORMATS.items():
                (out / "tables").mkdir(parents=True, exist_ok=True)
                (out / "tables" / f"{name}.{ext}").write_text(render(t, fmt), encoding="utf-8")


def _md_page(title: str, summary: str, sections: list[tuple[str, list[Block]]], out: Path) -> str:
    parts = [f"# {title}", "", summary, ""]
    for heading, blocks in sections:
        parts += [f"## {heading}", ""]
        for b in blocks:
            if isinstance(b, Table):
                parts += [f"**{b.title}**", "", render(b, "md"), ""]
            elif isinstance(b, _Figure):
                parts += [f"![{b.name}]({b.path.relative_to(out).as_posix()})" if b.path else
                          f"_No {b.name.replace('_', ' ')} figure: {b.reason}_", ""]
            else:
                parts += [f"_Not available: {b}_", ""]
    return "\n".join(parts)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}
table.lamtune{border-collapse:collapse;margin:1em 0}table.lamtune td,table.lamtune th{border-bottom:1px solid #ddd;
padding:.25em .6em;text-align:center}table.lamtune th:first-child{text-align:left}caption{font-weight:bold;
text-align:left;padding:.3em 0}p.note{font-size:.85em;color:#555}img{max-width:100%}"""


def _html_page(title: str, summary: str, sections: list[tuple[str, list[Block]]], out: Path, inline: bool) -> str:
    items = "".join(f"<li>{html.escape(line[2:])}</li>" for line in summary.splitlines())
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>", f"<ul>{items}</ul>"]
    for heading, blocks in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        for b in blocks:
            if isinstance(b, Table):
                parts.append(render(b, "html"))
            elif isinstance(b, _Figure) and b.path:
                src = ("data:image/png;base64," + base64.b64encode(b.path.read_bytes()).decode("ascii")
                       if inline else b.path.relative_to(out).as_posix())
                parts.append(f'<p><img alt="{b.name}" src="{src}"></p>')
            else:
                reason = b.reason if isinstance(b, _Figure) else b
                parts.append(f"<p><em>Not available: {html.escape(str(reason))}</em></p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(paths: Paths, out_dir: str | Path | None = None, fmt: str = "md", n_boot: int = 1000,
                 seed: int = 0, split: str = "test", baseline: str = "sft", level: float = 0.95,
                 inline_images: bool = True, figures: bool = True) -> Path:
    """Write the report of one or several experiments and return the page's path.

    Default folder: <first experiment>/report; tables go to tables/, figures (unless
    `figures=False`) to plots/."""
    if fmt not in REPORT_FORMATS:
        raise AnalysisError(f"unknown report format {fmt!r}; allowed: {', '.join(REPORT_FORMATS)}")
    given = as_paths(paths)
    results = load(given)
    boot, why_no_ci = None, ""
    try:
        boot = bootstrap(load_predictions(given, split), n_boot, seed)
    except AnalysisError as err:
        why_no_ci = str(err)
    tables = study_tables(results, boot, baseline, split, level)
    if isinstance(tables["delta"], str):
        raise AnalysisError(tables["delta"])
    out = Path(out_dir).expanduser() if out_dir else experiment_dir(given[0]) / "report"
    out.mkdir(parents=True, exist_ok=True)
    figs = _figures(results, split, baseline, out) if figures else {}
    _write_tables(tables, out)
    title = "lamtune report — " + ", ".join(sorted(results["experiment"].unique()))
    summary = _summary(results, split, baseline, boot, why_no_ci)
    sections = _sections(tables, figs)
    if fmt == "md":
        page = out / "report.md"
        page.write_text(_md_page(title, summary, sections, out), encoding="utf-8")
    else:
        page = out / "report.html"
        page.write_text(_html_page(title, summary, sections, out, inline_images), encoding="utf-8")
    return page
