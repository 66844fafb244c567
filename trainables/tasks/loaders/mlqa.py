"""MLQA (task qa): extractive QA in SQuAD v1 JSON. The English training set is SQuAD v1.1 train.

local: `mlqa/**/{split}-context-{lang}-question-{lang}.json` (MLQA_V1/dev, MLQA_V1/test);
       train-en: `squad/**/train-v1.1.json`.
hub:   google/xtreme `MLQA.<lang>.<lang>` (validation, test), rajpurkar/squad train. MLQA has no French.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainables.tasks.loaders.errors import DataFormatError, DataUnavailable
from trainables.tasks.loaders.hub import XTREME, column, load_hub_split
from trainables.tasks.loaders.layout import find_unique
from trainables.tasks.loaders.naming import record_id
from trainables.tasks.schema import Record


def _record(lang: str, split: str, qid: str, context: str, question: str, texts: list[str],
            starts: list[int]) -> Record:
    return {"id": record_id("qa", lang, split, qid), "context": context, "question": question,
            "answers": {"text": texts, "answer_start": starts}}


def _need(cond: bool, path: Path, at: str, what: str) -> None:
    if not cond:
        raise DataFormatError(f"{path}: {at}: {what}")


def read_squad(path: Path, lang: str, split: str) -> list[Record]:
    """Every question of a SQuAD v1 JSON file, with all its gold answers."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{path}: not UTF-8 text ({err.reason})") from None
    _need(isinstance(doc, dict) and isinstance(doc.get("data"), list), path, "top level",
          'expected {"data": [...]} (SQuAD v1 JSON)')
    records: list[Record] = []
    seen: set[str] = set()
    for a, article in enumerate(doc["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        _need(isinstance(paragraphs, list), path, f"data[{a}]", "expected a list of paragraphs")
        for p, para in enumerate(paragraphs):
            at = f"data[{a}].paragraphs[{p}]"
            _need(isinstance(para, dict) and isinstance(para.get("context"), str)
                  and isinstance(para.get("qas"), list), path, at, "expected context (text) and qas (list)")
            for q, qa in enumerate(para["qas"]):
                records.append(_question(path, f"{at}.qas[{q}]", qa, para["context"], lang, split, seen))
    _need(bool(records), path, "data", "no questions")
    return records


def _question(path: Path, at: str, qa: Any, context: str, lang: str, split: str, seen: set[str]) -> Record:
    """One question object → a record (id, question and answers checked)."""
    _need(isinstance(qa, dict) and isinstance(qa.get("id"), str) and isinstance(qa.get("question"), str),
          path, at, "expected id and question (text)")
    _need(qa["id"] not in seen, path, at, f"duplicate question id {qa['id']!r}")
    seen.add(qa["id"])
    answers = qa.get("answers")
    _need(isinstance(answers, list) and len(answers) > 0, path, at,
          "expected at least one answer (SQuAD v1; unanswerable questions are not supported)")
    texts, starts = [], []
    for k, ans in enumerate(answers):
        ok = (isinstance(ans, dict) and isinstance(ans.get("text"), str) and ans["text"] != ""
              and isinstance(ans.get("answer_start"), int) and ans["answer_start"] >= 0)
        _need(ok, path, f"{at}.answers[{k}]", "expected non-empty text and answer_start ≥ 0")
        texts.append(ans["text"])
        starts.append(ans["answer_start"])
    return _record(lang, split, qa["id"], context, qa["question"], texts, starts)


def load_local(root: Path, lang: str, split: str) -> list[Record]:
    """MLQA records from `<root>/mlqa/**` (English train: `<root>/squad/**/train-v1.1.json`)."""
    if split == "train":
        if lang != "en":
            raise DataUnavailable(f"data.source=local:{root}: no qa training set in {lang} "
                                  "(SQuAD v1.1 train is English); set data.train_lang=en")
        path = find_unique(root, "squad", "train-v1.1.json")
        if path is None:
            raise DataUnavailable(f"data.source=local:{root}: missing file {root / 'squad' / 'train-v1.1.json'} "
                                  "(SQuAD v1.1 train, as XTREME's download script writes it); "
                                  "or train on the English dev split with data.train_split=dev")
        return read_squad(path, lang, split)
    name = f"{split}-context-{lang}-question-{lang}.json"
    path = find_unique(root, "mlqa", name)
    if path is None:
        raise DataUnavailable(f"data.source=local:{root}: missing file mlqa/**/{name} under {root}")
    return read_squad(path, lang, split)


def load_hub(lang: str, split: str) -> list[Record]:
    """MLQA records from google/xtreme `MLQA.<lang>.<lang>` (English train: SQuAD v1.1)."""
    if split == "train":
        if lang != "en":
            raise DataUnavailable(f"data.source=hub: no qa training set in {lang} (SQuAD v1.1 train is English); "
                                  "set data.train_lang=en")
        ds, what = load_hub_split("rajpurkar/squad", None, "train"), "rajpurkar/squad train"
    else:
        config = f"MLQA.{lang}.{lang}"
        ds, what = load_hub_split(XTREME, config, split), f"{XTREME} {config} {split}"
    out = []
    rows = zip(column(ds, "id"), column(ds, "context"), column(ds, "question"), column(ds, "answers"))
    for i, (qid, context, question, answers) in enumerate(rows):
        texts, starts = _hub_answers(answers)
        if not texts:
            raise DataFormatError(f"{what} row {i}: question {qid!r} has no answer")
        out.append(_record(lang, split, str(qid), context, question, texts, starts))
    return out


def _hub_answers(answers: Any) -> tuple[list[str], list[int]]:
    """Answer texts and starts from the hub's dict of lists (or a list of dicts)."""
    if isinstance(answers, dict):
        return [str(t) for t in answers["text"]], [int(s) for s in answers["answer_start"]]
    return [str(a["text"]) for a in answers], [int(a["answer_start"]) for a in answers]
