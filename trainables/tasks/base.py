"""The shape every task module fills in: prompt pieces, answer text, gold reference and output parser."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from trainables.tasks.schema import Record


@dataclass(frozen=True)
class Parsed:
    """A parsed model output: the prediction in the metric's terms, and whether parsing failed."""

    prediction: Any
    failed: bool


@dataclass(frozen=True)
class TaskSpec:
    """Everything task-specific that prompts, training and evaluation need."""

    name: str
    #: System message: names the task and lists the allowed outputs.
    system: str
    #: The query as the user turn (``Premise: …\nHypothesis: …``).
    user_turn: Callable[[Record], str]
    #: The gold answer as the assistant turn (label word, yes/no, first answer, tags).
    answer: Callable[[Record], str]
    #: The gold reference in the metric's terms (label, answer list, tag list).
    reference: Callable[[Record], Any]
    #: Generated text (and its record, for token counts) → prediction.
    parse: Callable[[str, Record], Parsed]
    #: For classification tasks: the answer strings ranked by `eval.mode: score`.
    choices: tuple[str, ...] | None = None
    #: Maps a chosen answer string back to a prediction (score mode).
    choice_prediction: Callable[[str], Any] | None = None
