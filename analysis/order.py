"""The study's order of conditions, read from the trial columns of results.parquet.

A label ('distill λ=0.05', 'smoke/sft', or whatever a variant's `label` says) is only a name: the
order comes from the trial's `condition` (base, fewshot, sft, control, distill), then its fixed
`lam` (ascending; other policies after), then the label itself.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import pandas as pd

CONDITION_ORDER = ("base", "fewshot", "sft", "control", "distill")
#: The column of a scores frame (see analysis.tables.headline_scores) holding its label's rank.
ORDER_COLUMN = "order"


def label_ranks(results: pd.DataFrame) -> pd.Series:
    """Each label's place (0, 1, …) in the study's order, from its first trial's condition and λ."""
    info = results.drop_duplicates("label")
    keys = sorted(
        (CONDITION_ORDER.index(c) if c in CONDITION_ORDER else len(CONDITION_ORDER),
         math.inf if pd.isna(lam) else float(lam), str(label))
        for label, c, lam in zip(info["label"], info["condition"], info["lam"]))
    return pd.Series(range(len(keys)), index=[k[2] for k in keys], name=ORDER_COLUMN, dtype=int)


def ordered(labels: Iterable[str], ranks: Mapping[str, float]) -> list[str]:
    """The labels in the order of `ranks` (label → rank, see `label_ranks`); unranked ones last, by name."""

    def key(label: str) -> tuple[float, str]:
        rank = ranks.get(label, math.nan)
        return (math.inf if pd.isna(rank) else float(rank), str(label))

    return sorted(labels, key=key)
