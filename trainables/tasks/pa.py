"""PAWS-X: sentence pair → paraphrase or not, answered yes/no (accuracy)."""

from __future__ import annotations

from trainables.tasks.base import Parsed, TaskSpec
from trainables.tasks.parsing import parse_label
from trainables.tasks.schema import PA_ANSWERS, Record


def _user(r: Record) -> str:
    return f"Sentence 1: {r['sentence1']}\nSentence 2: {r['sentence2']}"


def _parse(text: str, r: Record) -> Parsed:
    word = parse_label(text, PA_ANSWERS)
    return Parsed(None if word is None else PA_ANSWERS.index(word), word is None)


TASK = TaskSpec(
    name="pa",
    system=(
        "Paraphrase identification: do the two sentences mean the same thing? "
        "Answer with one word: yes or no."
    ),
    user_turn=_user,
    answer=lambda r: PA_ANSWERS[int(r["label"])],
    reference=lambda r: int(r["label"]),
    parse=_parse,
    choices=PA_ANSWERS,
    choice_prediction=lambda c: PA_ANSWERS.index(c),
)
