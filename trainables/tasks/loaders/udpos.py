"""UDPOS (task pos): tokens with the 17 universal POS tags (Universal Dependencies v2.5).

local: `udpos/{split}-{lang}.tsv` (one `token<TAB>UPOS` per line). When that file is missing or
       has no tags (XTREME strips test tags), the treebanks `udpos/**/{lang}_*-ud-{split}.conllu`
       are read instead, concatenated in file-name order as XTREME does (see conllu.py).
hub:   google/xtreme `udpos.<Language>` (English, Hindi, Spanish, German, French, Chinese).
"""

from __future__ import annotations

from pathlib import Path

from trainables.tasks.loaders.conllu import read_conllu
from trainables.tasks.loaders.errors import DataUnavailable
from trainables.tasks.loaders.hub import tagged_sentences
from trainables.tasks.loaders.naming import LANG_NAMES, record_id
from trainables.tasks.loaders.tsv import Sentence, read_sentences
from trainables.tasks.schema import UPOS_TAGS, Record


def _record(lang: str, split: str, i: int, tokens: list[str], tags: list[str]) -> Record:
    return {"id": record_id("pos", lang, split, i), "tokens": tokens, "pos_tags": tags}


def treebanks(root: Path, lang: str, split: str) -> list[Path]:
    """The CoNLL-U files of `lang` and `split` anywhere under `<root>/udpos`, in name order."""
    base = root / "udpos"
    if not base.is_dir():
        return []
    return sorted((p for p in base.rglob(f"{lang}_*-ud-{split}.conllu") if p.is_file()), key=lambda p: p.name)


def _sentences(root: Path, lang: str, split: str) -> list[Sentence]:
    """Sentences from the udpos TSV, else from the language's CoNLL-U treebanks."""
    path = root / "udpos" / f"{split}-{lang}.tsv"
    conllu = treebanks(root, lang, split)
    if path.is_file():
        try:
            return read_sentences(path, UPOS_TAGS, lang)
        except DataUnavailable:  # no tag column: the treebanks, if present, have the tags
            if not conllu:
                raise
    if not conllu:
        raise DataUnavailable(f"data.source=local:{root}: missing file {path} "
                              f"(and no udpos/**/{lang}_*-ud-{split}.conllu treebank to read instead)")
    return [s for p in conllu for s in read_conllu(p)]


def load_local(root: Path, lang: str, split: str) -> list[Record]:
    """UDPOS records from `<root>/udpos/{split}-{lang}.tsv` or the language's CoNLL-U treebanks."""
    return [_record(lang, split, i, s.tokens, s.tags) for i, s in enumerate(_sentences(root, lang, split))]


def load_hub(lang: str, split: str) -> list[Record]:
    """UDPOS records from google/xtreme `udpos.<Language>`."""
    sentences = tagged_sentences(f"udpos.{LANG_NAMES[lang]}", split, "pos_tags", UPOS_TAGS)
    return [_record(lang, split, i, toks, tags) for i, (toks, tags) in enumerate(sentences)]
