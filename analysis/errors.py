"""The one error analysis raises for bad input: a one-line message a CLI can print as is."""

from __future__ import annotations


class AnalysisError(ValueError):
    """The input cannot be analysed (not an experiment, no baseline, no results); one line says why."""
