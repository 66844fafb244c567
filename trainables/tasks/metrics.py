"""Task metrics on a 0–100 scale, computed the way XTREME's official scripts compute them.

* nli, pa: accuracy (an unparseable prediction, None, counts as wrong).
* qa: F1 and exact match of MLQA's official evaluation script (``mlqa_evaluation_v1.py``):
  per-language answer normalisation, bag-of-token F1, maximum over the gold answers.
* ner: seqeval entity-level micro precision / recall / F1 in its default (conlleval) mode,
  as XTREME's ``run_tag.py`` reports for PAN-X.
* pos: token accuracy (the seed study's number) and seqeval F1 on the raw UPOS sequences
  (XTREME's reported UDPOS number, computed with the same seqeval call as NER).
"""

from __future__ import annotations

import re
import string
import unicodedata
import warnings
from collections import Counter
from typing import Any, Sequence

from seqeval.metrics import f1_score as _seqeval_f1
from seqeval.metrics import precision_score as _seqeval_precision
from seqeval.metrics import recall_score as _seqeval_recall

from trainables.tasks.schema import LANGS, NLI_LABELS, PA_ANSWERS, TASKS

__all__ = [
    "accuracy",
    "metric",
    "mlqa_normalize",
    "ner_scores",
    "pos_scores",
    "qa_f1_em",
    "qa_scores",
]

# --------------------------------------------------------------------------- accuracy


def accuracy(predictions: Sequence[Any], references: Sequence[Any]) -> float:
    """Percentage of predictions equal to their reference (None is always wrong; empty → 0.0)."""
    _check_lengths(predictions, references)
    if not predictions:
        return 0.0
    correct = sum(p is not None and p == r for p, r in zip(predictions, references))
    return 100.0 * correct / len(predictions)


# --------------------------------------------------------------------------- MLQA

# Articles removed as whole words after punctuation removal. hi and zh have none.
# fr is not an MLQA language: its article list is this project's extension.
_ARTICLES: dict[str, tuple[str, ...]] = {
    "en": ("a", "an", "the"),
    "es": ("un", "una", "unos", "unas", "el", "la", "los", "las"),
    "de": ("ein", "eine", "einen", "einem", "eines", "einer", "der", "die", "das", "den", "dem", "des"),
    "fr": ("le", "la", "les", "un", "une", "des"),
    "hi": (),
    "zh": (),
}
_ARTICLE_PATTERNS: dict[str, re.Pattern[str] | None] = {
    lang: re.compile(r"\b(?:" + "|".join(words) + r")\b") if words else None
    for lang, words in _ARTICLES.items()
}
# Languages whose answers are split into CJK characters plus whitespace-separated runs.
_MIXED_SEGMENTATION_LANGS = frozenset({"zh"})


def _is_punct(ch: str) -> bool:
    """MLQA's punctuation: any Unicode P* category character, or ASCII string.punctuation."""
    return ch in string.punctuation or unicodedata.category(ch).startswith("P")


def _is_cjk(ch: str) -> bool:
    """The CJK range MLQA's mixed segmentation splits into single characters (U+4E00–U+9FA5)."""
    return "\u4e00" <= ch <= "\u9fa5"


def _mixed_tokens(text: str) -> list[str]:
    """Each CJK (or punctuation) character alone; the runs between them split on whitespace."""
    tokens: list[str] = []
    run_start = 0
    for i, ch in enumerate(text):
        if _is_cjk(ch) or _is_punct(ch):
            tokens.extend(text[run_start:i].split())
            tokens.append(ch)
            run_start = i + 1
    tokens.extend(text[run_start:].split())
    return tokens


def _check_lang(lang: str) -> None:
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {', '.join(LANGS)}; got {lang!r}")


def mlqa_normalize(text: str, lang: str) -> str:
    """An answer normalised as MLQA's official script does (fr: this project's extension).

    Lower-case, drop punctuation, drop the language's articles as whole words, then re-join
    the tokens (whitespace tokens; for zh, MLQA's mixed segmentation) with single spaces.
    French is not an MLQA language; here it is whitespace-tokenised with the articles
    le/la/les/un/une/des removed.
    """
    _check_lang(lang)
    text = "".join(ch for ch in text.lower() if not _is_punct(ch))
    pattern = _ARTICLE_PATTERNS[lang]
    if pattern is not None:
        text = pattern.sub(" ", text)
    tokens = _mixed_tokens(text) if lang in _MIXED_SEGMENTATION_LANGS else text.split()
    return " ".join(t for t in tokens if t.strip())


def _f1_one(prediction_tokens: list[str], gold_tokens: list[str]) -> float:
    overlap = sum((Counter(prediction_tokens) & Counter(gold_tokens)).values())
    if overlap == 0:  # as in MLQA: also when both are empty (exact match is then 1)
        return 0.0
    precision = overlap / len(prediction_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def qa_f1_em(prediction: str | None, gold_answers: Sequence[str], lang: str) -> tuple[float, float]:
    """(F1, exact match), each 0–1, of one answer against its best-matching gold answer."""
    _check_lang(lang)
    if isinstance(gold_answers, str):
        gold_answers = [gold_answers]
    if not gold_answers:
        return 0.0, 0.0
    pred_norm = mlqa_normalize(prediction or "", lang)
    pred_tokens = pred_norm.split()
    best_f1 = best_em = 0.0
    for gold in gold_answers:
        gold_norm = mlqa_normalize(gold, lang)
        best_f1 = max(best_f1, _f1_one(pred_tokens, gold_norm.split()))
        best_em = max(best_em, float(pred_norm == gold_norm))
    return best_f1, best_em


def qa_scores(
    predictions: Sequence[str | None], gold_answer_lists: Sequence[Sequence[str]], lang: str
) -> dict[str, float]:
    """MLQA F1, exact match and their mean (f1_em), averaged over examples, on a 0–100 scale."""
    _check_lang(lang)
    _check_lengths(predictions, gold_answer_lists)
    if not predictions:
        return {"f1": 0.0, "em": 0.0, "f1_em": 0.0}
    f1_sum = em_sum = 0.0
    for prediction, golds in zip(predictions, gold_answer_lists):
        if isinstance(golds, dict):  # a record's "answers" field
            golds = golds.get("text", [])
        f1, em = qa_f1_em(prediction, golds, lang)
        f1_sum += f1
        em_sum += em
    f1 = 100.0 * f1_sum / len(predictions)
    em = 100.0 * em_sum / len(predictions)
    return {"f1": f1, "em": em, "f1_em": (f1 + em) / 2}


# --------------------------------------------------------------------------- tagging

# Pads a too-short POS prediction: never equal to a UPOS tag, and seqeval closes no chunk of it.
_POS_PAD = "_"


def _fit(predictions: Sequence[Sequence[str] | None], references: Sequence[Sequence[str]], pad: str):
    """Per sentence: the prediction padded with `pad` or truncated to its gold length."""
    _check_lengths(predictions, references)
    preds, golds = [], []
    for pred, gold in zip(predictions, references):
        gold = [str(t) for t in gold]
        pred = [str(t) for t in (pred or [])][: len(gold)]
        pred += [pad] * (len(gold) - len(pred))
        preds.append(pred)
        golds.append(gold)
    return preds, golds


def _seqeval_prf(golds: list[list[str]], preds: list[list[str]]) -> tuple[float, float, float]:
    """seqeval's default-mode micro precision, recall, F1 (0–1), as XTREME's run_tag.py calls it."""
    if not any(golds) and not any(preds):
        return 0.0, 0.0, 0.0
    with warnings.catch_warnings():
        # Non-IOB tags (UPOS) warn once per token, and 0/0 warns: both are expected here.
        warnings.simplefilter("ignore")
        return (
            float(_seqeval_precision(golds, preds, zero_division=0)),
            float(_seqeval_recall(golds, preds, zero_division=0)),
            float(_seqeval_f1(golds, preds, zero_division=0)),
        )


def ner_scores(
    predictions: Sequence[Sequence[str] | None], references: Sequence[Sequence[str]]
) -> dict[str, float]:
    """seqeval entity-level micro F1, precision and recall (0–100) of IOB2 tag sequences."""
    preds, golds = _fit(predictions, references, pad="O")
    precision, recall, f1 = _seqeval_prf(golds, preds)
    return {"f1": 100.0 * f1, "precision": 100.0 * precision, "recall": 100.0 * recall}


def pos_scores(
    predictions: Sequence[Sequence[str] | None], references: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Token accuracy and seqeval F1 (XTREME's UDPOS number), both 0–100, of UPOS sequences."""
    preds, golds = _fit(predictions, references, pad=_POS_PAD)
    n_tokens = sum(len(g) for g in golds)
    correct = sum(p == g for pred, gold in zip(preds, golds) for p, g in zip(pred, gold))
    acc = 100.0 * correct / n_tokens if n_tokens else 0.0
    _, _, f1 = _seqeval_prf(golds, preds)
    return {"acc": acc, "f1": 100.0 * f1}


# --------------------------------------------------------------------------- dispatch


def _check_lengths(predictions: Sequence[Any], references: Sequence[Any]) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            "predictions and references must have the same length; "
            f"got {len(predictions)} and {len(references)}"
        )


def _canonical_label(value: Any, labels: Sequence[str]) -> str | None:
    """A label string from a label string (any case) or its index in `labels`; None if neither."""
    if isinstance(value, str):
        value = value.strip().lower()
        return value if value in labels else None
    if isinstance(value, int) and 0 <= value < len(labels):
        return labels[value]
    return None


def _label_accuracy(predictions: Sequence[Any], references: Sequence[Any], labels: Sequence[str], task: str):
    _check_lengths(predictions, references)
    golds = []
    for i, ref in enumerate(references):
        gold = _canonical_label(ref, labels)
        if gold is None:
            raise ValueError(
                f"references[{i}] for task {task!r} must be one of {', '.join(labels)} "
                f"or its index; got {ref!r}"
            )
        golds.append(gold)
    preds = [_canonical_label(p, labels) for p in predictions]
    return {"acc": accuracy(preds, golds)}


def metric(task: str, lang: str, predictions: list, references: list) -> dict[str, float]:
    """The task's scores (0–100) of parsed predictions against gold references in one language."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    _check_lang(lang)
    if task == "nli":
        return _label_accuracy(predictions, references, NLI_LABELS, task)
    if task == "pa":
        return _label_accuracy(predictions, references, PA_ANSWERS, task)
    if task == "qa":
        return qa_scores(predictions, references, lang)
    if task == "ner":
        return ner_scores(predictions, references)
    return pos_scores(predictions, references)
