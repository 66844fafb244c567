"""render(table, fmt): markdown, CSV, LaTeX and HTML of the same numbers, rounded only here."""

from __future__ import annotations

import io
import math

import pandas as pd
import pytest

from analysis import AnalysisError, Table, render
from analysis.tables import to_markdown

NAN = math.nan


def _table() -> Table:
    idx = pd.Index(["nli", "ner", "Avg"], name="task")
    values = pd.DataFrame({"sft": [50.0, 30.04, 40.02], "distill λ=0.05": [63.0, 29.96, 46.48],
                           "Δ distill λ=0.05": [13.0, -0.08, 6.46]}, index=idx)
    std = pd.DataFrame({"sft": [1.25, NAN, 0.5], "distill λ=0.05": [2.0, 0.1, 0.25],
                        "Δ distill λ=0.05": [0.75, 0.2, 0.4]}, index=idx)
    low = pd.DataFrame({"Δ distill λ=0.05": [4.0, -3.1, 1.2]}, index=idx)
    high = pd.DataFrame({"Δ distill λ=0.05": [21.9, 2.2, 11.0]}, index=idx)
    return Table(values, title="Δ vs sft & co_1", note="a note", std=std, low=low, high=high)


def test_markdown_rounds_bolds_best_signs_deltas_and_marks_intervals():
    md = render(_table(), "md").splitlines()
    assert md[0] == "| Task | sft | distill λ=0.05 | Δ distill λ=0.05 |"
    assert md[2] == "| NLI (Acc) | 50.0 ± 1.2 | **63.0 ± 2.0** | +13.0 ± 0.8† [+4.0, +21.9] |"
    assert md[3] == "| NER (F1) | **30.0** | 30.0 ± 0.1 | -0.1 ± 0.2 [-3.1, +2.2] |"  # best by value, not rounding
    assert md[4] == "| **Avg** | 40.0 ± 0.5 | **46.5 ± 0.2** | +6.5 ± 0.4† [+1.2, +11.0] |"
    assert md[-1] == "a note"


def test_plain_dataframe_and_the_sweep_helper_render_alike():
    t = _table()
    plain = render(t.values, "markdown")
    assert plain == to_markdown(t.values)
    assert "| **Avg** | 40.0 | **46.5** | +6.5 |" in plain
    assert "| **Avg** | 40.02 | **46.48** | +6.46 |" in to_markdown(t.values, digits=2)
    assert "**" not in to_markdown(t.values, bold_best=False).replace("**Avg**", "")


def test_csv_keeps_full_precision_and_adds_std_and_interval_columns():
    back = pd.read_csv(io.StringIO(render(_table(), "csv")))
    assert list(back.columns) == ["task", "sft", "sft std", "distill λ=0.05", "distill λ=0.05 std",
                                  "Δ distill λ=0.05", "Δ distill λ=0.05 std", "Δ distill λ=0.05 ci_low",
                                  "Δ distill λ=0.05 ci_high"]
    assert back["sft"].tolist() == [50.0, 30.04, 40.02]
    assert back["Δ distill λ=0.05 ci_low"].tolist() == [4.0, -3.1, 1.2]
    assert math.isnan(back.at[1, "sft std"])


def test_latex_is_a_booktabs_table_with_escaped_symbols():
    tex = render(_table(), "latex")
    assert r"\caption{$\Delta$ vs sft \& co\_1}" in tex
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\begin{tabular}{lccc}" in tex
    assert r"Task & sft & distill $\lambda$=0.05 & $\Delta$ distill $\lambda$=0.05 \\" in tex
    assert r"NLI (Acc) & 50.0 $\pm$ 1.2 & \textbf{63.0 $\pm$ 2.0} & +13.0 $\pm$ 0.8$^\dagger$ {\scriptsize [+4.0, +21.9]} \\" in tex
    assert "\\midrule\nAvg & " in tex


def test_html_escapes_and_marks():
    page = render(_table(), "html")
    assert "<caption>Δ vs sft &amp; co_1</caption>" in page
    assert "<td><b>63.0 ± 2.0</b></td>" in page
    assert "<td>+13.0 ± 0.8<sup>†</sup> <small>[+4.0, +21.9]</small></td>" in page
    assert "<th><b>Avg</b></th>" in page and '<p class="note">a note</p>' in page


def test_best_per_column_formats_and_missing_values():
    values = pd.DataFrame({"EN": [10.0, 20.0], "HI": [NAN, 5.0], "best λ": [0.05, 0.5]},
                          index=pd.Index(["sft", "distill"], name="condition"))
    md = render(Table(values, best="column", best_columns=["EN", "HI"], formats={"best λ": "g"}), "md")
    assert "| sft | 10.0 | – | 0.05 |" in md and "| distill | **20.0** | 5.0 | 0.5 |" in md  # a lone value is no best


def test_unknown_format_is_an_analysis_error():
    with pytest.raises(AnalysisError, match="unknown table format 'pdf'"):
        render(_table(), "pdf")


def test_a_row_of_equal_values_has_no_best():
    values = pd.DataFrame({"a": [7.0, 1.0], "b": [7.0, 2.0], "c": [3.0, 2.0]}, index=pd.Index(["x", "y"], name="task"))
    md = render(Table(values), "md")
    assert "| x | **7.0** | **7.0** | 3.0 |" in md and "| y | 1.0 | **2.0** | **2.0** |" in md
    assert "| z |" not in md and Table(values.iloc[:, :1]).best_cells() == set()
    flat = pd.DataFrame({"a": [5.0], "b": [5.0]}, index=pd.Index(["x"], name="task"))
    assert Table(flat).best_cells() == set()
