"""PAWS-X (task pa): two sentences and whether they are paraphrases (label 1) or not (0).

local: `pawsx/{split}-{lang}.tsv` (sentence1, sentence2, label; train-en = PAWS English train).
hub:   google/xtreme `PAWS-X.<lang>` (train, validation, test). PAWS-X has no Hindi.
"""

from __future__ import annotations

from pathlib import Path

from trainables.tasks.loaders.errors import DataFormatError
from trainables.tasks.loaders.hub import XTREME, column, label_names, load_hub_split
from trainables.tasks.loaders.layout import split_file
from trainables.tasks.loaders.naming import record_id
from trainables.tasks.loaders.tsv import read_rows
from trainables.tasks.schema import Record

FIELDS = ("sentence1", "sentence2", "label")
_TRAIN_HINT = ("pawsx/train-en.tsv is PAWS-X English train as XTREME's download script writes it; "
               "or train on the English dev split with data.train_split=dev")


def pa_label(value: object, at: str) -> int:
    """A PAWS-X label, 0 or 1, from an int or its string."""
    text = str(value).strip()
    if text not in ("0", "1"):
        raise DataFormatError(f"{at}: bad paraphrase label {value!r}; allowed: 0, 1")
    return int(text)


def _record(lang: str, split: str, i: int, s1: str, s2: str, label: int) -> Record:
    return {"id": record_id("pa", lang, split, i), "sentence1": s1, "sentence2": s2, "label": label}


def load_local(root: Path, lang: str, split: str) -> list[Record]:
    """PAWS-X records from `<root>/pawsx/{split}-{lang}.tsv`."""
    path = split_file(root, "pawsx", split, lang, _TRAIN_HINT if (split, lang) == ("train", "en") else "")
    return [_record(lang, split, i, r.fields[0], r.fields[1], pa_label(r.fields[2], f"{path}:{r.line}"))
            for i, r in enumerate(read_rows(path, FIELDS))]


def load_hub(lang: str, split: str) -> list[Record]:
    """PAWS-X records from google/xtreme `PAWS-X.<lang>`."""
    config = f"PAWS-X.{lang}"
    ds = load_hub_split(XTREME, config, split)
    names = label_names(ds, "label")
    rows = zip(column(ds, "sentence1"), column(ds, "sentence2"), column(ds, "label"))
    return [_record(lang, split, i, s1, s2, pa_label(names[y] if names else y, f"{XTREME} {config} {split} row {i}"))
            for i, (s1, s2, y) in enumerate(rows)]
