"""PAN-X / WikiANN: IOB2 named-entity tags, one per token (seqeval entity F1)."""

from __future__ import annotations

from trainables.tasks.base import Parsed, TaskSpec
from trainables.tasks.parsing import parse_tags
from trainables.tasks.schema import NER_TAGS, Record


def _parse(text: str, r: Record) -> Parsed:
    # Unknown tags become O (no entity), as the seed study did.
    tp = parse_tags(text, len(r["tokens"]), NER_TAGS, unknown="O")
    return Parsed(tp.tags, tp.failed)


TASK = TaskSpec(
    name="ner",
    system=(
        "Named entity recognition: tag every token with one of O, B-PER, I-PER, B-ORG, I-ORG, "
        "B-LOC, I-LOC. Output exactly one tag per token, separated by spaces."
    ),
    user_turn=lambda r: "Tokens: " + " ".join(r["tokens"]),
    answer=lambda r: " ".join(r["ner_tags"]),
    reference=lambda r: list(r["ner_tags"]),
    parse=_parse,
)
