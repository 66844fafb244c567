"""CoNLL-U treebanks read into the sentences XTREME's UDPOS files hold.

XTREME converts UD with ud-conversion-tools (`--replace_subtokens_with_fused_forms`), then
removes spaces inside tokens and U+200C. The same result, without its dependency graph library:

* comment lines and empty nodes (`8.1`) are skipped;
* a multiword token (`4-5 im`) becomes ONE token with the fused form, tagged with the UPOS of
  its word that is highest in the dependency tree (fewest HEAD steps to the root), the first
  such word on a tie (`im` → in/ADP + dem/DET → `im ADP`);
* every other word is one token with its FORM (column 2) and UPOS (column 4).

On the sample's en/es/de/fr/zh dev and test treebanks this reproduces XTREME's udpos files
sentence for sentence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from trainables.tasks.loaders.errors import DataFormatError, where
from trainables.tasks.loaders.tsv import Sentence, read_text
from trainables.tasks.schema import UPOS_TAGS

_WORD_ID = re.compile(r"^[1-9][0-9]*$")
_RANGE_ID = re.compile(r"^([1-9][0-9]*)-([1-9][0-9]*)$")
_EMPTY_ID = re.compile(r"^[0-9]+\.[1-9][0-9]*$")
_UPOS = frozenset(UPOS_TAGS)


@dataclass
class _Word:
    line: int
    form: str
    upos: str
    head: int


@dataclass
class _Block:
    """The words and multiword ranges of one sentence, as read."""

    line: int = 0
    words: dict[int, _Word] = field(default_factory=dict)
    ranges: list[tuple[int, int, str]] = field(default_factory=list)


def read_conllu(path: Path) -> list[Sentence]:
    """The sentences of a CoNLL-U file as XTREME's udpos files have them (see the module doc)."""
    lines = read_text(path).split("\n")
    sentences: list[Sentence] = []
    block = _Block()
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            if block.words:
                sentences.append(_sentence(path, block))
            block = _Block()
            continue
        if line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 10:
            raise DataFormatError(f"{where(path, number)}: expected 10 TAB-separated CoNLL-U columns, got {len(cols)}")
        _add(path, number, cols, block)
    if block.words:
        sentences.append(_sentence(path, block))
    if not sentences:
        raise DataFormatError(f"{path}: no sentences (an empty treebank)")
    return sentences


def _add(path: Path, number: int, cols: list[str], block: _Block) -> None:
    """Record one word or multiword-range line of the current sentence."""
    ident = cols[0]
    if _EMPTY_ID.match(ident):
        return
    if not block.words and not block.ranges:
        block.line = number
    if m := _RANGE_ID.match(ident):
        start, end = int(m[1]), int(m[2])
        if end <= start:
            raise DataFormatError(f"{where(path, number)}: bad multiword range {ident!r}")
        block.ranges.append((start, end, cols[1]))
        return
    if not _WORD_ID.match(ident):
        raise DataFormatError(f"{where(path, number)}: bad word id {ident!r}")
    index = int(ident)
    if index != len(block.words) + 1:
        raise DataFormatError(f"{where(path, number)}: word id {index} out of order (expected {len(block.words) + 1})")
    upos = cols[3]
    if upos not in _UPOS:
        raise DataFormatError(f"{where(path, number)}: unknown UPOS {upos!r}; allowed: {', '.join(UPOS_TAGS)}")
    if not cols[6].isdigit():
        raise DataFormatError(f"{where(path, number)}: HEAD must be a word id or 0, got {cols[6]!r}")
    block.words[index] = _Word(number, cols[1], upos, int(cols[6]))


def _sentence(path: Path, block: _Block) -> Sentence:
    """Tokens and tags of a finished sentence: fused forms for multiword tokens."""
    fused = {start: (end, form) for start, end, form in block.ranges}
    for start, end, _ in block.ranges:
        if end > len(block.words):
            raise DataFormatError(f"{where(path, block.line)}: multiword range {start}-{end} runs past the last word")
    tokens: list[str] = []
    tags: list[str] = []
    i = 1
    while i <= len(block.words):
        if i in fused:
            end, form = fused[i]
            span = range(i, end + 1)
            depths = [_depth(path, block, j) for j in span]
            head = span[depths.index(min(depths))]
            tokens.append(form)
            tags.append(block.words[head].upos)
            i = end + 1
        else:
            tokens.append(block.words[i].form)
            tags.append(block.words[i].upos)
            i += 1
    return Sentence(block.line, [_clean(t) for t in tokens], tags)


def _depth(path: Path, block: _Block, index: int) -> int:
    """HEAD steps from word `index` to the root (0)."""
    steps = 0
    while index != 0:
        word = block.words.get(index)
        if word is None:
            raise DataFormatError(f"{where(path, block.line)}: HEAD {index} is not a word of the sentence")
        index = word.head
        steps += 1
        if steps > len(block.words):
            raise DataFormatError(f"{where(path, word.line)}: HEAD links form a cycle")
    return steps


def _clean(token: str) -> str:
    """A token as XTREME writes it: no spaces inside (`2 001` → `2001`), no U+200C."""
    return "".join(token.replace("\u200c", "").split(" "))
