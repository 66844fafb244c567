"""XNLI (task nli): premise, hypothesis, label. The English training set is MultiNLI train.

local: `xnli/{split}-{lang}.tsv` (premise, hypothesis, label; train-en from MultiNLI).
hub:   google/xtreme `XNLI` (validation, test; filtered by `language`), nyu-mll/multi_nli train.
"""

from __future__ import annotations

from pathlib import Path

from trainables.tasks.loaders.errors import DataFormatError, DataUnavailable
from trainables.tasks.loaders.hub import XTREME, column, label_names, load_hub_split
from trainables.tasks.loaders.layout import split_file
from trainables.tasks.loaders.naming import record_id
from trainables.tasks.loaders.tsv import read_rows
from trainables.tasks.schema import NLI_LABELS, Record

FIELDS = ("premise", "hypothesis", "label")
#: MultiNLI's spelling, which XTREME's preprocessing maps to XNLI's.
_ALIASES = {"contradictory": "contradiction"}
_TRAIN_HINT = ("xnli/train-en.tsv is MultiNLI train as XTREME's download script writes it; "
               "or train on the English dev split with data.train_split=dev")


def nli_label(value: object, at: str) -> str:
    """An NLI label string checked against entailment | neutral | contradiction."""
    text = str(value).strip().lower()
    text = _ALIASES.get(text, text)
    if text not in NLI_LABELS:
        raise DataFormatError(f"{at}: bad NLI label {value!r}; allowed: {', '.join(NLI_LABELS)}")
    return text


def _record(lang: str, split: str, i: int, premise: str, hypothesis: str, label: str) -> Record:
    return {"id": record_id("nli", lang, split, i), "premise": premise, "hypothesis": hypothesis, "label": label}


def load_local(root: Path, lang: str, split: str) -> list[Record]:
    """XNLI records from `<root>/xnli/{split}-{lang}.tsv`."""
    path = split_file(root, "xnli", split, lang, _TRAIN_HINT if (split, lang) == ("train", "en") else "")
    return [_record(lang, split, i, r.fields[0], r.fields[1], nli_label(r.fields[2], f"{path}:{r.line}"))
            for i, r in enumerate(read_rows(path, FIELDS))]


def load_hub(lang: str, split: str) -> list[Record]:
    """XNLI records from the hub (English train: MultiNLI)."""
    if split == "train":
        if lang != "en":
            raise DataUnavailable(f"data.source=hub: no nli training set in {lang} (MultiNLI train is English); "
                                  "set data.train_lang=en")
        ds = load_hub_split("nyu-mll/multi_nli", None, "train")
        names = label_names(ds, "label") or NLI_LABELS
        rows = zip(column(ds, "premise"), column(ds, "hypothesis"), column(ds, "label"))
        # MultiNLI marks pairs without a gold label with -1: they cannot be trained on.
        kept = [(p, h, names[y]) for p, h, y in rows if y is not None and int(y) >= 0]
        return [_record(lang, split, i, p, h, nli_label(y, f"nyu-mll/multi_nli train row {i}"))
                for i, (p, h, y) in enumerate(kept)]
    ds = load_hub_split(XTREME, "XNLI", split)
    rows = [r for r in zip(column(ds, "language"), column(ds, "sentence1"), column(ds, "sentence2"),
                           column(ds, "gold_label")) if r[0] == lang]
    if not rows:
        raise DataUnavailable(f"data.source=hub: {XTREME} XNLI {split} has no rows for language {lang!r}")
    return [_record(lang, split, i, p, h, nli_label(y, f"{XTREME} XNLI {split} {lang} row {i}"))
            for i, (_, p, h, y) in enumerate(rows)]
