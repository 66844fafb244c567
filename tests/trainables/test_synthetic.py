"""The synthetic default dataset: schema, determinism, disjoint splits, balance and scripts."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from tests.conftest import RECORD_FIELDS
from trainables.tasks.schema import LANGS, NER_TAGS, NLI_LABELS, SPLITS, TASKS, UPOS_TAGS
from trainables.tasks.synthetic import _lexicon, corpus, generate

LATIN_LETTER = re.compile(r"[A-Za-z]")
DEVANAGARI = re.compile(r"[\u0900-\u097F]")
CJK = re.compile(r"[\u4E00-\u9FA5]")
PUNCT = {"en": ".,?", "es": ".,?", "de": ".,?", "fr": ".,?", "hi": "।,?", "zh": "。，？"}


def texts(task: str, r: dict) -> list[str]:
    """Every natural-language string in a record."""
    if task == "nli":
        return [r["premise"], r["hypothesis"]]
    if task == "pa":
        return [r["sentence1"], r["sentence2"]]
    if task == "qa":
        return [r["context"], r["question"], *r["answers"]["text"]]
    return list(r["tokens"])


def content(r: dict) -> str:
    """A record without its id, as a comparable string."""
    return repr(sorted((k, repr(v)) for k, v in r.items() if k != "id"))


def check_iob2(tags: list[str]) -> None:
    for prev, tag in zip(["O", *tags], tags):
        if tag.startswith("I-"):
            assert prev in (f"B-{tag[2:]}", tag), tags


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("task", TASKS)
def test_schema(task: str, lang: str, split: str) -> None:
    records = generate(task, lang, split, 40)
    assert len(records) == 40
    assert [r["id"] for r in records] == [f"syn-{task}-{lang}-{split}-{i:06d}" for i in range(40)]
    for r in records:
        assert set(r) == RECORD_FIELDS[task]
        if task == "nli":
            assert r["label"] in NLI_LABELS
            assert isinstance(r["premise"], str) and isinstance(r["hypothesis"], str)
            assert r["premise"] and r["hypothesis"]
        elif task == "pa":
            assert type(r["label"]) is int and r["label"] in (0, 1)
            assert r["sentence1"] != r["sentence2"]
        elif task == "qa":
            ans = r["answers"]
            assert set(ans) == {"text", "answer_start"}
            assert len(ans["text"]) == len(ans["answer_start"]) == 1
            text, start = ans["text"][0], ans["answer_start"][0]
            assert isinstance(start, int) and text
            assert r["context"][start:start + len(text)] == text
            assert r["question"].endswith(PUNCT[lang][2])
        else:
            tags = r[f"{task}_tags"]
            assert 4 <= len(r["tokens"]) <= 15
            assert len(tags) == len(r["tokens"])
            assert all(isinstance(t, str) and t and " " not in t for t in r["tokens"])
            assert set(tags) <= set(NER_TAGS if task == "ner" else UPOS_TAGS)
            if task == "ner":
                check_iob2(tags)
        for t in texts(task, r):
            assert t == t.strip() and "  " not in t


def test_determinism_and_seed() -> None:
    for task in TASKS:
        a = generate(task, "de", "dev", 30, seed=3)
        generate(task, "de", "train", 7, seed=1)  # other calls must not matter
        assert generate(task, "de", "dev", 30, seed=3) == a
        assert generate(task, "de", "dev", 10, seed=3) == a[:10]  # a prefix of a longer call
        other = generate(task, "de", "dev", 30, seed=4)
        assert [content(r) for r in other] != [content(r) for r in a]


def test_n_zero() -> None:
    assert generate("qa", "en", "train", 0) == []


@pytest.mark.parametrize("task", TASKS)
def test_splits_disjoint(task: str) -> None:
    for lang in ("en", "zh"):
        sets = {s: {content(r) for r in generate(task, lang, s, 300)} for s in SPLITS}
        assert not sets["train"] & sets["dev"]
        assert not sets["train"] & sets["test"]
        assert not sets["dev"] & sets["test"]
        assert len(sets["train"]) >= 290  # nearly no repeats inside a split either


def test_languages_are_parallel() -> None:
    en = generate("pos", "en", "train", 20)
    for lang in LANGS:
        other = generate("pos", lang, "train", 20)
        assert [r["pos_tags"] for r in other] == [r["pos_tags"] for r in en]


@pytest.mark.parametrize("task,labels", [("nli", NLI_LABELS), ("pa", (0, 1))])
def test_label_balance(task: str, labels: tuple) -> None:
    for n in (300, 301):
        counts = Counter(r["label"] for r in generate(task, "fr", "train", n))
        assert set(counts) == set(labels)
        assert max(counts.values()) - min(counts.values()) <= 1


def test_nli_surface_cues() -> None:
    neg = _lexicon("en")["neg"][0]

    def inside(h: list[str], p: list[str]) -> bool:
        return any(p[i:i + len(h)] == h for i in range(len(p)))

    def strip(words: list[str]) -> list[str]:
        return [w for w in words if w != neg]

    labels = Counter()
    for r in generate("nli", "en", "train", 300):
        p, h = r["premise"].rstrip(".").split(), r["hypothesis"].rstrip(".").split()
        labels[r["label"]] += 1
        assert inside(h, p) == (r["label"] == "entailment"), r  # a copied clause
        # contradiction = a copied clause with the negation word added or removed
        assert inside(strip(h), strip(p)) == (r["label"] != "neutral"), r
    assert set(labels) == set(NLI_LABELS)


def test_pa_pairs_share_words() -> None:
    for lang in ("en", "zh"):
        for r in generate("pa", lang, "train", 200):
            s1, s2 = r["sentence1"], r["sentence2"]
            if lang == "zh":
                assert Counter(s1.replace("，", "")) == Counter(s2.replace("，", ""))
            else:
                bag1, bag2 = (Counter(re.sub(r"[.,]", "", s).split()) for s in (s1, s2))
                assert bag1 == bag2
                if r["label"] == 1:  # a paraphrase keeps the subject in front
                    assert s1.split()[0] == s2.split()[0]


def test_qa_answers_are_names_or_phrases() -> None:
    kinds = Counter()
    for r in generate("qa", "en", "train", 300):
        ctx, ans = r["context"], r["answers"]["text"][0]
        assert 2 <= ctx.count(".") <= 4
        kinds[ans[0].isupper()] += 1
    assert kinds[True] > 0 and kinds[False] > 0  # names (who/where) and object phrases (what)


def test_pos_tags_follow_words() -> None:
    seen: dict[str, str] = {}
    for r in generate("pos", "en", "train", 300):
        for tok, tag in zip(r["tokens"], r["pos_tags"]):
            assert seen.setdefault(tok, tag) == tag
    assert {"DET", "NOUN", "VERB", "ADJ", "ADP", "PRON", "NUM", "PROPN", "PUNCT", "CCONJ",
            "AUX", "ADV", "PART"} <= set(seen.values())


def test_ner_has_every_entity_type() -> None:
    tags = Counter(t for r in generate("ner", "es", "train", 300) for t in r["ner_tags"])
    assert set(tags) == set(NER_TAGS)


@pytest.mark.parametrize("task", TASKS)
def test_scripts(task: str) -> None:
    for lang in ("hi", "zh"):
        for r in generate(task, lang, "test", 50):
            for t in texts(task, r):
                assert not LATIN_LETTER.search(t), t
                assert (DEVANAGARI if lang == "hi" else CJK).search(t) or t in PUNCT[lang], t
                if lang == "zh":
                    assert " " not in t
        for r in generate(task, "en", "test", 50):
            for t in texts(task, r):
                assert not DEVANAGARI.search(t) and not CJK.search(t)


def test_corpus_covers_languages_tags_and_words() -> None:
    lines = corpus(per_task=20)
    assert all(isinstance(line, str) and line for line in lines)
    text = "\n".join(lines)
    vocab = set(text.split())
    for marks, lang in (("ñáé", "es"), ("äöüß", "de"), ("éèç", "fr")):
        words = {t for r in generate("pos", lang, "train", 300) for t in r["tokens"]}
        assert words <= vocab
        assert set(marks) <= set("".join(words)), (lang, marks)
    assert DEVANAGARI.search(text) and CJK.search(text)
    assert set(NER_TAGS) | set(UPOS_TAGS) | set(NLI_LABELS) | {"yes", "no"} <= vocab
    for lang in LANGS:  # every word of unseen records is in the corpus
        for task in ("ner", "pos"):
            for r in generate(task, lang, "test", 100, seed=9):
                assert set(r["tokens"]) <= vocab, lang
        for r in generate("nli", lang, "dev", 50, seed=9):
            if lang != "zh":
                assert set(r["premise"].rstrip(".।").split()) <= vocab


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"task": "xnli", "lang": "en", "split": "train", "n": 1}, "task"),
        ({"task": "nli", "lang": "ja", "split": "train", "n": 1}, "lang"),
        ({"task": "nli", "lang": "en", "split": "validation", "n": 1}, "split"),
        ({"task": "nli", "lang": "en", "split": "train", "n": -1}, "n"),
    ],
)
def test_bad_inputs(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        generate(**kwargs)


def test_bad_input_lists_allowed_values() -> None:
    with pytest.raises(ValueError, match="en, hi, es, de, fr, zh"):
        generate("nli", "xx", "train", 1)


def test_many_records_quickly() -> None:
    for task in TASKS:
        assert len(generate(task, "en", "train", 2000)) == 2000
