"""UDPOS: universal part-of-speech tags, one per token (token accuracy; seqeval F1 too)."""

from __future__ import annotations

from trainables.tasks.base import Parsed, TaskSpec
from trainables.tasks.parsing import parse_tags
from trainables.tasks.schema import UPOS_TAGS, Record


def _parse(text: str, r: Record) -> Parsed:
    # Unknown tags become X, as the seed study did.
    tp = parse_tags(text, len(r["tokens"]), UPOS_TAGS, unknown="X")
    return Parsed(tp.tags, tp.failed)


TASK = TaskSpec(
    name="pos",
    system=(
        "Part-of-speech tagging: tag every token with one universal POS tag: "
        + ", ".join(UPOS_TAGS)
        + ". Output exactly one tag per token, separated by spaces."
    ),
    user_turn=lambda r: "Tokens: " + " ".join(r["tokens"]),
    answer=lambda r: " ".join(r["pos_tags"]),
    reference=lambda r: list(r["pos_tags"]),
    parse=_parse,
)
