"""XNLI: premise/hypothesis → entailment | neutral | contradiction (accuracy)."""

from __future__ import annotations

from trainables.tasks.base import Parsed, TaskSpec
from trainables.tasks.parsing import parse_label
from trainables.tasks.schema import NLI_LABELS, Record


def _user(r: Record) -> str:
    return f"Premise: {r['premise']}\nHypothesis: {r['hypothesis']}"


def _parse(text: str, r: Record) -> Parsed:
    label = parse_label(text, NLI_LABELS)
    return Parsed(label, label is None)


TASK = TaskSpec(
    name="nli",
    system=(
        "Natural language inference: decide whether the premise entails the hypothesis, "
        "contradicts it, or neither. Answer with one word: entailment, neutral or contradiction."
    ),
    user_turn=_user,
    answer=lambda r: r["label"],
    reference=lambda r: r["label"],
    parse=_parse,
    choices=NLI_LABELS,
    choice_prediction=lambda c: c,
)
