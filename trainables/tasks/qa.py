"""MLQA / SQuAD: extractive question answering (MLQA-official F1 and EM)."""

from __future__ import annotations

from trainables.tasks.base import Parsed, TaskSpec
from trainables.tasks.parsing import parse_span
from trainables.tasks.schema import Record


def _user(r: Record) -> str:
    return f"Context: {r['context']}\nQuestion: {r['question']}"


def _parse(text: str, r: Record) -> Parsed:
    span = parse_span(text)
    return Parsed(span, span == "")


TASK = TaskSpec(
    name="qa",
    system=(
        "Extractive question answering: answer the question with the shortest span copied "
        "from the context. Answer only, no explanation."
    ),
    user_turn=_user,
    answer=lambda r: r["answers"]["text"][0],
    reference=lambda r: list(r["answers"]["text"]),
    parse=_parse,
)
