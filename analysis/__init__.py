"""Experiment directories → tidy results → the study's tables (with seeds' spread and bootstrap
intervals), plots, a report and a notebook.

    import analysis
    results = analysis.load("~/lamtune_results/smoke")
    boot = analysis.bootstrap(analysis.load_predictions("~/lamtune_results/smoke"))
    print(analysis.render(analysis.delta_table(results, boot), "md"))
"""

from analysis.errors import AnalysisError
from analysis.load import load, load_predictions
from analysis.render import Table, render
from analysis.stats import Bootstrap, bootstrap
from analysis.study import (
    best_lambda_table,
    ce_table,
    delta_table,
    gap_table,
    language_table,
    learned_lambda_table,
    study_tables,
)
from analysis.tables import TableError, delta_vs_sft, headline_scores

__all__ = [
    "AnalysisError", "Bootstrap", "Table", "TableError", "best_lambda_table", "bootstrap", "ce_table",
    "delta_table", "delta_vs_sft", "gap_table", "headline_scores", "language_table", "learned_lambda_table",
    "load", "load_predictions", "render", "study_tables",
]
