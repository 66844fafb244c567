"""Names shared by every task: task ids, languages, label sets and the record schema.

Every data source (synthetic, local XTREME folders, the Hugging Face hub) returns records
in exactly these shapes, so prompts, parsers and metrics never care where data came from.

    nli: {"id", "premise", "hypothesis", "label": "entailment" | "neutral" | "contradiction"}
    pa:  {"id", "sentence1", "sentence2", "label": 0 | 1}          (1 = paraphrase)
    qa:  {"id", "context", "question", "answers": {"text": [str, ...], "answer_start": [int, ...]}}
    ner: {"id", "tokens": [str, ...], "ner_tags": [str, ...]}      (IOB2 over NER_TAGS)
    pos: {"id", "tokens": [str, ...], "pos_tags": [str, ...]}      (UPOS_TAGS)
"""

from __future__ import annotations

from typing import Any, Literal

TaskName = Literal["nli", "pa", "qa", "ner", "pos"]
Lang = Literal["en", "hi", "es", "de", "fr", "zh"]
Split = Literal["train", "dev", "test"]

TASKS: tuple[str, ...] = ("nli", "pa", "qa", "ner", "pos")
LANGS: tuple[str, ...] = ("en", "hi", "es", "de", "fr", "zh")
SPLITS: tuple[str, ...] = ("train", "dev", "test")

#: The languages each real XTREME task has among LANGS (PAWS-X has no Hindi, MLQA no French).
XTREME_LANGS: dict[str, tuple[str, ...]] = {
    "nli": LANGS,
    "pa": ("en", "es", "de", "fr", "zh"),
    "qa": ("en", "hi", "es", "de", "zh"),
    "ner": LANGS,
    "pos": LANGS,
}

NLI_LABELS: tuple[str, ...] = ("entailment", "neutral", "contradiction")
PA_ANSWERS: tuple[str, ...] = ("no", "yes")  # index = PAWS-X label id
NER_TAGS: tuple[str, ...] = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
UPOS_TAGS: tuple[str, ...] = (
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM",
    "PART", "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X",
)

#: The headline metric of each task (the number the study's tables show).
HEADLINE_METRIC: dict[str, str] = {"nli": "acc", "pa": "acc", "qa": "f1", "ner": "f1", "pos": "acc"}

#: Demonstrations shown to the few-shot teacher (the study: 5 per task, 3 for QA).
DEFAULT_SHOTS: dict[str, int] = {"nli": 5, "pa": 5, "qa": 3, "ner": 5, "pos": 5}

#: Greedy-decoding budget per task (the seed study's values).
DEFAULT_MAX_NEW_TOKENS: dict[str, int] = {"nli": 8, "pa": 4, "qa": 80, "ner": 150, "pos": 150}

Record = dict[str, Any]
