"""PAN-X / WikiANN (task ner): tokens with IOB2 tags O, B-/I-PER, B-/I-ORG, B-/I-LOC.

local: `panx/{split}-{lang}.tsv` (one `token<TAB>tag` per line; a `<lang>:` token prefix is removed).
hub:   google/xtreme `PAN-X.<lang>` (train, validation, test).
"""

from __future__ import annotations

from pathlib import Path

from trainables.tasks.loaders.hub import tagged_sentences
from trainables.tasks.loaders.layout import split_file
from trainables.tasks.loaders.naming import record_id
from trainables.tasks.loaders.tsv import read_sentences
from trainables.tasks.schema import NER_TAGS, Record


def _record(lang: str, split: str, i: int, tokens: list[str], tags: list[str]) -> Record:
    return {"id": record_id("ner", lang, split, i), "tokens": tokens, "ner_tags": tags}


def load_local(root: Path, lang: str, split: str) -> list[Record]:
    """PAN-X records from `<root>/panx/{split}-{lang}.tsv`."""
    path = split_file(root, "panx", split, lang)
    return [_record(lang, split, i, s.tokens, s.tags) for i, s in enumerate(read_sentences(path, NER_TAGS, lang))]


def load_hub(lang: str, split: str) -> list[Record]:
    """PAN-X records from google/xtreme `PAN-X.<lang>`."""
    sentences = tagged_sentences(f"PAN-X.{lang}", split, "ner_tags", NER_TAGS)
    return [_record(lang, split, i, toks, tags) for i, (toks, tags) in enumerate(sentences)]
