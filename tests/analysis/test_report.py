"""write_report and `python -m analysis report`: files on disk, one-line errors with exit code 2."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis import AnalysisError
from analysis.__main__ import main
from analysis.report import write_report
from tests.analysis import synth


def test_markdown_report_links_plots_and_writes_every_table(experiment, tmp_path):
    page = write_report(experiment, tmp_path / "out", n_boot=50)
    assert page == tmp_path / "out" / "report.md"
    text = page.read_text()
    for heading in ("## 1. Δ vs SFT by task", "## 2. Per language", "## 3. The λ sweep", "## 4. λ per task",
                    "## 5. Dist − Ctrl gap", "## 6. Teacher vs student CE"):
        assert heading in text
    assert "| **Avg** |" in text and "†" in text and "50 resamples" in text
    for name in ("lambda_sweep", "language_heatmaps", "training_curves", "ce_curves"):
        assert f"](plots/{name}.png)" in text
        assert (tmp_path / "out" / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    for ext in ("md", "csv", "tex", "html"):
        assert (tmp_path / "out" / "tables" / f"delta.{ext}").is_file()
    delta = pd.read_csv(tmp_path / "out" / "tables" / "delta.csv")
    assert delta["task"].tolist() == ["nli", "qa", "ner", "pos", "Avg"]


def test_html_report_inlines_images(experiment):
    page = write_report(experiment, fmt="html", n_boot=20)
    assert page == experiment / "report" / "report.html"  # default folder
    html = page.read_text()
    assert html.startswith("<!doctype html>") and html.count("data:image/png;base64,") == 4
    assert "<caption>Δ vs sft by task" in html and "<sup>†</sup>" in html


def test_tables_only_report(experiment, tmp_path):
    text = write_report(experiment, tmp_path, n_boot=20, figures=False).read_text()
    assert "| **Avg** |" in text and ".png" not in text and not (tmp_path / "plots").exists()


def test_report_without_predictions_or_controls_says_what_is_missing(tmp_path):
    exp = synth.write_experiment(tmp_path, with_predictions=False, with_control=False)
    text = write_report(exp, n_boot=10, figures=False).read_text()
    section1 = text.split("## 1.")[1].split("## 2.")[0]
    assert "- intervals: none (" in text and "†" not in section1 and "[" not in section1
    assert "_Not available: a Dist − Ctrl gap needs both distill and control trials_" in text


def test_report_needs_its_baseline(tmp_path):
    exp = synth.write_experiment(tmp_path, with_sft=False)
    with pytest.raises(AnalysisError, match="no 'sft' baseline"):
        write_report(exp, n_boot=10)
    with pytest.raises(AnalysisError, match="unknown report format"):
        write_report(exp, fmt="pdf")


def test_cli_prints_the_page_path(experiment, tmp_path, capsys):
    assert main(["report", str(experiment), "--out", str(tmp_path / "r"), "--n-boot", "20", "--format", "html",
                 "--no-plots"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "r" / "report.html")


@pytest.mark.parametrize("case,message", [
    ("plain", "is not a lamtune experiment directory"),
    ("missing", "does not exist"),
    ("no_sft", "no 'sft' baseline"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case, message):
    path = tmp_path / case
    if case == "plain":
        path.mkdir()
    elif case == "no_sft":
        path = synth.write_experiment(tmp_path, case, with_sft=False)
    assert main(["report", str(path), "--n-boot", "5", "--no-plots"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and message in captured.err and captured.err.count("\n") == 1
