"""Readers for XTREME's tab-separated files: sentence-pair rows (XNLI, PAWS-X, written by Python's
csv.writer: TAB, CRLF, '"'-quoting) and token-per-line sentence blocks (PAN-X, UDPOS: one
`token<TAB>tag` per line, a blank line between sentences).

Both raise DataUnavailable for a file without its label column (XTREME strips test labels) and
DataFormatError, naming the file and line, for anything else that does not fit.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from trainables.tasks.loaders.errors import DataFormatError, DataUnavailable, where

#: What to do when a split has no labels (appended to the DataUnavailable message).
UNLABELLED_ADVICE = "evaluate on dev instead (eval.test_split=dev)"


@dataclass(frozen=True)
class Row:
    """One row of a sentence-pair file: its first line number and its fields."""

    line: int
    fields: list[str]


@dataclass(frozen=True)
class Sentence:
    """One sentence of a token-per-line file: its first line number, tokens and tags."""

    line: int
    tokens: list[str]
    tags: list[str]


def read_text(path: Path) -> str:
    """A file's UTF-8 text with its line ends untouched (a quoted CRLF inside a field stays CRLF)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataFormatError(f"{where(path, line)}: not UTF-8 text ({err.reason})") from None


def read_rows(path: Path, fields: Sequence[str], advice: str = UNLABELLED_ADVICE) -> list[Row]:
    """The rows of a csv.writer TSV, each with exactly `fields` (the last one being the label)."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter="\t", quotechar='"', strict=True)
    rows: list[Row] = []
    start = 1
    try:
        for values in reader:
            if values:  # blank lines (e.g. trailing ones) carry no row
                rows.append(Row(start, values))
            start = reader.line_num + 1
    except csv.Error as err:
        raise DataFormatError(f"{where(path, start)}: bad TSV quoting in the row starting here ({err})") from None
    if not rows:
        raise DataFormatError(f"{path}: no rows (an empty file)")
    n = len(fields)
    if all(len(r.fields) == n - 1 for r in rows):
        raise DataUnavailable(f"{path} has no {fields[-1]} column (XTREME strips test labels); {advice}")
    for r in rows:
        if len(r.fields) != n:
            raise DataFormatError(f"{where(path, r.line)}: expected {n} TAB-separated fields "
                                  f"({', '.join(fields)}), got {len(r.fields)}")
    return rows


def read_sentences(path: Path, allowed: Sequence[str], lang: str, advice: str = UNLABELLED_ADVICE) -> list[Sentence]:
    """The sentences of a `token<TAB>tag` file (a `<lang>:` token prefix, when the file has one, removed)."""
    allowed_set = set(allowed)
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    first = 0
    widths: set[int] = set()
    for number, raw in enumerate(read_text(path).split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            if tokens:
                sentences.append(Sentence(first, tokens, tags))
                tokens, tags = [], []
            continue
        parts = line.split("\t")
        widths.add(len(parts))
        if len(parts) == 1:  # a token without its tag: only legal if the whole file is unlabelled
            tokens.append(parts[0])
            tags.append("")
        elif len(parts) == 2:
            tag = parts[1].strip()
            if tag not in allowed_set:
                raise DataFormatError(f"{where(path, number)}: unknown tag {tag!r}; allowed: {', '.join(allowed)}")
            tokens.append(parts[0])
            tags.append(tag)
        else:
            raise DataFormatError(f"{where(path, number)}: expected token<TAB>tag, got {len(parts)} fields")
        if not parts[0]:
            raise DataFormatError(f"{where(path, number)}: empty token")
        if len(tokens) == 1:
            first = number
    if tokens:
        sentences.append(Sentence(first, tokens, tags))
    if not sentences:
        raise DataFormatError(f"{path}: no sentences (an empty file)")
    if widths == {1}:
        raise DataUnavailable(f"{path} has no tag column (XTREME strips test labels); {advice}")
    if 1 in widths:
        bad = next(s.line + i for s in sentences for i, t in enumerate(s.tags) if not t)
        raise DataFormatError(f"{where(path, bad)}: expected token<TAB>tag, got a token without a tag")
    return _strip_lang_prefix(path, sentences, lang)


def _strip_lang_prefix(path: Path, sentences: list[Sentence], lang: str) -> list[Sentence]:
    """Remove the `<lang>:` token prefix some XTREME versions write, when the file uses it."""
    prefix = f"{lang}:"
    if not sentences or not sentences[0].tokens[0].startswith(prefix):
        return sentences
    out = []
    for s in sentences:
        for i, tok in enumerate(s.tokens):
            if not tok.startswith(prefix) or len(tok) == len(prefix):
                raise DataFormatError(f"{where(path, s.line + i)}: token {tok!r} lacks the {prefix!r} prefix "
                                      f"the file's first token has")
        out.append(Sentence(s.line, [t[len(prefix):] for t in s.tokens], s.tags))
    return out
