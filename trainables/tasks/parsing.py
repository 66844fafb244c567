"""Turn a model's generated text into a prediction: a label, a tag sequence or an answer span.

Parsers never raise on odd model output; they report failure instead, so the caller can count
unparseable generations separately from wrong ones.
"""

from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass
from typing import Sequence

__all__ = ["TagParse", "parse_label", "parse_span", "parse_tags"]

# Characters dropped around each tag before it is looked up (e.g. "['B-PER'," or "NOUN.").
_TAG_EDGE_CHARS = "\"'`“”‘’«»[](){}.;:"
_TAG_SEPARATORS = re.compile(r"[\s,，、]+")


def _is_leading_junk(ch: str) -> bool:
    """Whitespace, punctuation (any Unicode P* category) or an ASCII punctuation symbol."""
    return ch.isspace() or ch in string.punctuation or unicodedata.category(ch).startswith("P")


def parse_label(text: str, labels: Sequence[str]) -> str | None:
    """The label (as spelled in `labels`) that the output starts with, or None when none does."""
    start = 0
    while start < len(text) and _is_leading_junk(text[start]):
        start += 1
    head = text[start:].lower()
    best: str | None = None
    for label in labels:
        key = label.lower()
        if key and head.startswith(key) and (best is None or len(key) > len(best)):
            best = label
    return best


@dataclass(frozen=True)
class TagParse:
    """A tag sequence parsed from a model output, with what went wrong on the way."""

    #: Exactly `n_tokens` tags: unknown ones replaced, padded or truncated.
    tags: list[str]
    #: Not a single allowed tag was found: the output is unparseable.
    failed: bool
    #: The output held a different number of tags than there are tokens.
    length_mismatch: bool
    #: How many of the kept (not padded, not truncated) tags were not allowed ones.
    n_unknown: int


def parse_tags(text: str, n_tokens: int, allowed: Sequence[str], unknown: str) -> TagParse:
    """Exactly `n_tokens` tags read from whitespace- or comma-separated output, unknown ones mapped."""
    if n_tokens < 0:
        raise ValueError(f"n_tokens must be >= 0; got {n_tokens}")
    by_upper = {tag.upper(): tag for tag in allowed}
    pieces = [p.strip(_TAG_EDGE_CHARS).upper() for p in _TAG_SEPARATORS.split(text)]
    produced = [p for p in pieces if p]
    found = [by_upper.get(p) for p in produced]
    kept = found[:n_tokens]
    tags = [unknown if tag is None else tag for tag in kept]
    tags += [unknown] * (n_tokens - len(tags))
    return TagParse(
        tags=tags,
        failed=all(tag is None for tag in found),
        length_mismatch=len(produced) != n_tokens,
        n_unknown=sum(tag is None for tag in kept),
    )


def parse_span(text: str) -> str:
    """The extractive answer: the first non-empty line of the output, stripped ("" if none)."""
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line
    return ""
