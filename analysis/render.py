"""One table, four renderings: markdown, CSV, LaTeX, HTML (`render(table, fmt)`).

A `Table` is a dataframe of unrounded numbers plus what a published table shows around them:
a spread over seeds (± std), a confidence interval for Δ columns (with † where it excludes 0),
and the best value of each row (or column) in bold. Rounding happens here and nowhere else.
CSV keeps full precision and writes the spread and interval as extra columns.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from analysis.errors import AnalysisError
from trainables.tasks.schema import TASKS

#: Row titles of the task tables: the task and its headline metric.
TASK_TITLES = {"nli": "NLI (Acc)", "pa": "PA (Acc)", "qa": "QA (F1)", "ner": "NER (F1)", "pos": "POS (Acc)"}

FORMATS = ("md", "csv", "latex", "html")
_ALIASES = {"markdown": "md", "tex": "latex", "htm": "html"}
SIGNIFICANT = "†"


@dataclass
class Table:
    """Numbers of a publishable table and how to show them (nothing here is rounded)."""

    values: pd.DataFrame
    title: str = ""
    note: str = ""
    std: pd.DataFrame | None = None  # spread over seeds, same labels as values (NaN: not shown)
    low: pd.DataFrame | None = None  # confidence interval of Δ cells (NaN: none)
    high: pd.DataFrame | None = None
    best: Literal["row", "column"] | None = "row"  # which values compete for bold
    best_columns: list[str] | None = None  # default: every column that is not signed
    signed: list[str] | None = None  # columns shown with a sign; default: names starting with Δ or holding ' − '
    digits: int = 1
    task_titles: bool = True  # task rows as 'NLI (Acc)' (scores) or 'NLI' (anything else)
    formats: dict[str, str] = field(default_factory=dict)  # column → format spec, e.g. {'best λ': 'g'}

    def signed_columns(self) -> list[str]:
        """The columns shown with a + or − sign (differences)."""
        if self.signed is not None:
            return list(self.signed)
        return [c for c in self.values.columns if str(c).startswith("Δ") or " − " in str(c)]

    def best_cells(self) -> set[tuple[Any, Any]]:
        """(row, column) of every best value: the maximum per row or per column among best_columns
        (ties share it; a row or column where all are equal has none)."""
        if self.best is None:
            return set()
        signed = set(self.signed_columns())
        cols = (self.best_columns if self.best_columns is not None
                else [c for c in self.values.columns if c not in signed])
        block = self.values[cols].apply(pd.to_numeric, errors="coerce")
        if block.empty or (self.best == "row" and len(cols) < 2) or (self.best == "column" and len(block) < 2):
            return set()
        axis = 1 if self.best == "row" else 0
        top, bottom = block.max(axis=axis), block.min(axis=axis)
        cells = set()
        for r in block.index:
            for c in block.columns:
                key = r if self.best == "row" else c
                # A best that every competitor ties is no best: nothing is bolded there.
                if pd.notna(block.at[r, c]) and block.at[r, c] == top[key] and top[key] != bottom[key]:
                    cells.add((r, c))
        return cells


def _get(frame: pd.DataFrame | None, r: Any, c: Any) -> float:
    if frame is None or c not in frame.columns or r not in frame.index:
        return math.nan
    v = frame.at[r, c]
    return float(v) if pd.notna(v) else math.nan


@dataclass
class _Cell:
    text: str
    std: str = ""
    interval: tuple[str, str] | None = None
    mark: bool = False
    bold: bool = False


def _number(v: float, spec: str, signed: bool) -> str:
    if signed:
        spec = "+" + spec
    return format(v, spec)


def _cells(t: Table) -> list[tuple[list[str], list[_Cell]]]:
    """Per row: the index labels and the formatted cells."""
    signed = set(t.signed_columns())
    best = t.best_cells()
    rows = []
    for r in t.values.index:
        cells = []
        for c in t.values.columns:
            v = t.values.at[r, c]
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                cells.append(_Cell("–" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v)))
                continue
            if pd.isna(v):
                cells.append(_Cell("–"))
                continue
            spec = t.formats.get(str(c), f".{t.digits}f")
            cell = _Cell(_number(float(v), spec, c in signed), bold=(r, c) in best)
            s = _get(t.std, r, c)
            if not math.isnan(s):
                cell.std = format(s, spec)
            lo, hi = _get(t.low, r, c), _get(t.high, r, c)
            if not (math.isnan(lo) or math.isnan(hi)):
                cell.interval = (_number(lo, spec, c in signed), _number(hi, spec, c in signed))
                cell.mark = lo > 0 or hi < 0
            cells.append(cell)
        rows.append((_index_labels(t.values, r, t.task_titles), cells))
    return rows


def _index_names(df: pd.DataFrame) -> list[str]:
    return [str(n or "").capitalize() or "" for n in df.index.names]


def _index_labels(df: pd.DataFrame, r: Any, task_titles: bool) -> list[str]:
    keys = r if isinstance(r, tuple) else (r,)
    out = []
    for name, k in zip(df.index.names, keys):
        if name == "task" and str(k) in TASKS:
            out.append(TASK_TITLES[str(k)] if task_titles else str(k).upper())
        else:
            out.append(str(k))
    return out


def _headers(df: pd.DataFrame) -> list[str]:
    """Index names then column names; a column named by a task id shows as its upper-case name."""
    return [*_index_names(df), *(str(c).upper() if c in TASKS else str(c) for c in df.columns)]


def _is_avg(labels: list[str]) -> bool:
    return labels[-1] == "Avg"


# --------------------------------------------------------------------------- formats


def _md(t: Table) -> str:
    def cell(c: _Cell) -> str:
        text = f"{c.text} ± {c.std}" if c.std else c.text
        text = f"**{text}**" if c.bold else text
        text += SIGNIFICANT if c.mark else ""
        return text + (f" [{c.interval[0]}, {c.interval[1]}]" if c.interval else "")

    names = _index_names(t.values)
    header = _headers(t.values)
    align = [":---"] * len(names) + [":---:"] * len(t.values.columns)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    for labels, cells in _cells(t):
        if _is_avg(labels):
            labels = [*labels[:-1], "**Avg**"]
        lines.append("| " + " | ".join([*labels, *map(cell, cells)]) + " |")
    out = "\n".join(lines)
    return out + (f"\n\n{t.note}" if t.note else "")


def _csv(t: Table) -> str:
    out = pd.DataFrame(index=t.values.index)
    for c in t.values.columns:
        out[c] = t.values[c]
        for extra, frame in (("std", t.std), ("ci_low", t.low), ("ci_high", t.high)):
            if frame is not None and c in frame.columns:
                column = frame[c].reindex(out.index)
                if column.notna().any():
                    out[f"{c} {extra}"] = column
    return out.reset_index().to_csv(index=False)


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "Δ": r"$\Delta$", "λ": r"$\lambda$", "−": r"$-$", "±": r"$\pm$", "†": r"$^\dagger$",
                  "→": r"$\rightarrow$", "–": "--"}


def latex_escape(text: str) -> str:
    """Text safe inside a LaTeX tabular (Greek letters and symbols as math)."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def _latex(t: Table) -> str:
    def cell(c: _Cell) -> str:
        text = latex_escape(c.text) + (r" $\pm$ " + latex_escape(c.std) if c.std else "")
        text = rf"\textbf{{{text}}}" if c.bold else text
        text += r"$^\dagger$" if c.mark else ""
        return text + (rf" {{\scriptsize [{c.interval[0]}, {c.interval[1]}]}}" if c.interval else "")

    names = _index_names(t.values)
    spec = "l" * len(names) + "c" * len(t.values.columns)
    lines = [r"\begin{table}[t]", r"\centering"]
    if t.title:
        lines.append(rf"\caption{{{latex_escape(t.title)}}}")
    lines += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
              " & ".join(latex_escape(h) for h in _headers(t.values)) + r" \\", r"\midrule"]
    for labels, cells in _cells(t):
        if _is_avg(labels):
            lines.append(r"\midrule")
        lines.append(" & ".join([*map(latex_escape, labels), *map(cell, cells)]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if t.note:
        lines.append(rf"\par\smallskip{{\footnotesize {latex_escape(t.note)}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def _html(t: Table) -> str:
    def cell(c: _Cell) -> str:
        text = html.escape(c.text) + (f" ± {html.escape(c.std)}" if c.std else "")
        text = f"<b>{text}</b>" if c.bold else text
        text += f"<sup>{SIGNIFICANT}</sup>" if c.mark else ""
        return text + (f" <small>[{c.interval[0]}, {c.interval[1]}]</small>" if c.interval else "")

    out = ['<table class="lamtune">']
    if t.title:
        out.append(f"<caption>{html.escape(t.title)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in _headers(t.values))
               + "</tr></thead>")
    out.append("<tbody>")
    for labels, cells in _cells(t):
        heads = "".join(f"<th>{'<b>Avg</b>' if lab == 'Avg' else html.escape(lab)}</th>" for lab in labels)
        out.append(f"<tr>{heads}" + "".join(f"<td>{cell(c)}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    if t.note:
        out.append(f'<p class="note">{html.escape(t.note)}</p>')
    return "\n".join(out) + "\n"


_RENDERERS = {"md": _md, "csv": _csv, "latex": _latex, "html": _html}


def render(table: Table | pd.DataFrame, fmt: str = "md") -> str:
    """The table as markdown ('md'), 'csv', 'latex' or 'html' text."""
    key = _ALIASES.get(fmt, fmt)
    if key not in _RENDERERS:
        raise AnalysisError(f"unknown table format {fmt!r}; allowed: {', '.join(FORMATS)}")
    t = table if isinstance(table, Table) else Table(table)
    return _RENDERERS[key](t)
