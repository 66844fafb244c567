"""The embedded default dataset: deterministic synthetic data for the five tasks in six languages.

Every language gets an invented vocabulary in its own script (Latin with per-language
phonotactics for en/es/de/fr, Devanagari for hi, CJK characters for zh) over one shared concept
lexicon. A tiny grammar builds each example at the concept level (lexicon class, index, UPOS tag,
IOB2 tag) and then spells it out in the requested language, so example ``i`` of a split is a word-
for-word translation of example ``i`` in every other language and each task means the same thing
everywhere. Answers rest on surface cues a tiny model can learn: copying (entailment, QA spans),
a negation word (contradiction), an added modifier or an unseen verb (neutral), which phrase
comes first (paraphrase) and word identity (tags; each word has one UPOS tag, names are their
own word classes).

Splits are disjoint by construction: each concept-level example is assigned to one split by a
stable hash of its content, and examples hashing to another split are redrawn.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping

from trainables.tasks.schema import (
    LANGS,
    NER_TAGS,
    NLI_LABELS,
    PA_ANSWERS,
    SPLITS,
    TASKS,
    UPOS_TAGS,
    Record,
)

#: One concept-level token: (lexicon class, index in the class, UPOS tag, IOB2 tag).
Tok = tuple[str, int, str, str]

# ---------------------------------------------------------------------------------------------
# Lexicon: concept classes, and their spelling in each language
# ---------------------------------------------------------------------------------------------

#: (class, number of words, word shape). Function words are one syllable, names and content
#: words two or three; zh names come from transliteration characters, like real foreign names.
_CLASSES: tuple[tuple[str, int, str], ...] = (
    ("det", 3, "function"), ("pron", 6, "function"), ("adp", 6, "function"),
    ("cconj", 2, "function"), ("neg", 1, "function"), ("aux", 1, "function"),
    ("wh", 3, "function"), ("num", 10, "short"), ("adv", 12, "content"),
    ("adj", 24, "content"), ("noun", 60, "content"), ("verb", 30, "content"),
    ("per_first", 30, "name"), ("per_last", 20, "name"), ("org_name", 20, "name"),
    ("org_suffix", 6, "content"), ("loc_name", 25, "name"), ("loc_suffix", 4, "content"),
)
_SIZE: Mapping[str, int] = MappingProxyType({kind: count for kind, count, _ in _CLASSES})
_PROPER = frozenset({"per_first", "per_last", "org_name", "org_suffix", "loc_name", "loc_suffix"})

#: Period, comma, question mark.
_PUNCT: Mapping[str, tuple[str, str, str]] = MappingProxyType({
    "en": (".", ",", "?"), "es": (".", ",", "?"), "de": (".", ",", "?"), "fr": (".", ",", "?"),
    "hi": ("।", ",", "?"), "zh": ("。", "，", "？"),
})
_PERIOD, _COMMA, _QUESTION = 0, 1, 2
#: Indices into the "wh" class.
_WHO, _WHAT, _WHERE = 0, 1, 2


@dataclass(frozen=True)
class _Latin:
    """Syllable inventory of one Latin-script language."""

    onsets: tuple[str, ...]
    nuclei: tuple[str, ...]
    codas: tuple[str, ...]
    coda_rate: float
    forbidden: str  # regex of spellings the language does not allow


_LATIN: Mapping[str, _Latin] = MappingProxyType({
    "en": _Latin(
        ("b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "y",
         "th", "sh", "ch", "st", "br", "tr", "pl", "gr", "fl"),
        ("a", "e", "i", "o", "u", "ee", "oo", "ea", "ai", "ou"),
        ("n", "t", "s", "r", "l", "ck", "ng", "nd", "st", "m", "sh"), 0.35, r"(.)\1\1"),
    "es": _Latin(
        ("b", "c", "d", "f", "g", "j", "l", "ll", "m", "n", "ñ", "p", "r", "s", "t", "v", "ch",
         "br", "tr", "pl", "gr"),
        ("a", "e", "i", "o", "u", "a", "e", "o", "á", "é", "í", "ó", "ú", "ue", "ie"),
        ("n", "s", "l", "r"), 0.25, r"[áéíóú].*[áéíóú]"),
    "de": _Latin(
        ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "w", "z", "sch", "st",
         "sp", "pf", "kr", "br", "tr", "gr", "fl"),
        ("a", "e", "i", "o", "u", "ä", "ö", "ü", "ei", "au", "ie", "eu"),
        ("n", "r", "t", "ch", "ß", "ck", "ng", "tz", "ld", "rn", "st", "l"), 0.35, r"[äöü]{2}"),
    "fr": _Latin(
        ("b", "c", "d", "f", "g", "j", "l", "m", "n", "p", "r", "s", "t", "v", "ch", "gr", "pr",
         "tr", "bl", "qu", "ç"),
        ("a", "e", "i", "o", "u", "ou", "ai", "oi", "au", "eau", "é", "è", "é"),
        ("n", "r", "s", "x", "t", "l", "lle"), 0.3, r"ç[^aou]|ç$|[éè].*[éè]"),
})

_HI_CONSONANTS = "कखगघचछजझटठडढतथदधनपफबभमयरलवशसह"
_HI_VOWELS = "अआइउएओ"
_HI_SIGNS = ("", "", "ा", "ा", "ि", "ी", "ु", "ू", "े", "ै", "ो", "ौ")  # "" = inherent vowel
_HI_NASAL = "ं"

_ZH_NAME_CHARS = "阿巴贝比波布达德迪多杜尔法菲弗格哈赫胡吉加杰卡凯科克库拉莱兰雷利林卢鲁罗马麦曼梅米莫穆纳内尼诺帕佩皮普奇萨塞斯索塔特提托瓦维沃乌西希谢亚扬伊尤扎泽"
_ZH_COMMON_CHARS = "".join(c for c in (
    "的一是在不了有和人这中大为上个我以要他时来用们生到作地于出就分对成会可主发年动同工也能下"
    "过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两"
    "体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内"
    "数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直"
    "题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她"
    "手角期根论运农指几九区强放决西被干做必战先回则任取据处队南给色光门即保治北造百规热领七海口东导"
    "器压志世金增争济阶油思术极交受联什认六共权收证改清己美再采转更单风切打白教速花带安场身车例真务"
) if c not in _ZH_NAME_CHARS)


def _latin_word(spec: _Latin, syllables: int, rng: random.Random) -> str:
    """A word of the given syllable count in a Latin-script language."""
    while True:
        parts = []
        for s in range(syllables):
            if s > 0 or rng.random() < 0.8:
                parts.append(rng.choice(spec.onsets))
            parts.append(rng.choice(spec.nuclei))
            if rng.random() < spec.coda_rate:
                parts.append(rng.choice(spec.codas))
        word = "".join(parts)
        if not re.search(spec.forbidden, word):
            return word


def _hindi_word(syllables: int, rng: random.Random) -> str:
    """A word of the given syllable count in Devanagari."""
    parts = []
    for s in range(syllables):
        if s == 0 and rng.random() < 0.15:
            parts.append(rng.choice(_HI_VOWELS))
        else:
            parts.append(rng.choice(_HI_CONSONANTS) + rng.choice(_HI_SIGNS))
        if rng.random() < 0.12:
            parts.append(_HI_NASAL)
    return "".join(parts)


def _make_word(lang: str, shape: str, rng: random.Random) -> str:
    """A fresh word of the given shape (function/short/content/name) in one language."""
    if lang == "zh":
        if shape == "name":
            return rng.choice(_ZH_NAME_CHARS) + rng.choice(_ZH_NAME_CHARS)
        length = 2 if shape == "content" and rng.random() > 0.15 else 1
        return "".join(rng.choice(_ZH_COMMON_CHARS) for _ in range(length))
    syllables = {"function": 1, "short": rng.randint(1, 2)}.get(shape, rng.choice((2, 2, 2, 3)))
    if lang == "hi":
        return _hindi_word(syllables, rng)
    return _latin_word(_LATIN[lang], syllables, rng)


def _spell(word: str, lang: str, kind: str) -> str:
    """The written form: proper names (and German nouns) capitalized in Latin script."""
    if lang in _LATIN and (kind in _PROPER or (lang == "de" and kind == "noun")):
        return word[:1].upper() + word[1:]
    return word


@functools.lru_cache(maxsize=None)
def _lexicon(lang: str) -> Mapping[str, tuple[str, ...]]:
    """Every word of one language by concept class; distinct words for distinct concepts."""
    seen = set(_PUNCT[lang])
    lexicon = {}
    for kind, count, shape in _CLASSES:
        words = []
        for i in range(count):
            rng = random.Random(f"lexicon/{lang}/{kind}/{i}")
            word = _make_word(lang, shape, rng)
            while word.lower() in seen:
                word = _make_word(lang, shape, rng)
            seen.add(word.lower())
            words.append(_spell(word, lang, kind))
        lexicon[kind] = tuple(words)
    lexicon["punct"] = _PUNCT[lang]
    return MappingProxyType(lexicon)


def _words(toks: list[Tok], lang: str) -> list[str]:
    """The surface words of concept tokens in one language."""
    lexicon = _lexicon(lang)
    return [lexicon[kind][idx] for kind, idx, _, _ in toks]


def _join(words: list[str], lang: str) -> tuple[str, list[int]]:
    """Running text (no spaces in zh, none before punctuation) and each word's start offset."""
    text, starts = "", []
    for word in words:
        if text and lang != "zh" and word not in _PUNCT[lang]:
            text += " "
        starts.append(len(text))
        text += word
    return text, starts


def _text(toks: list[Tok], lang: str) -> str:
    """Running text of concept tokens in one language."""
    return _join(_words(toks, lang), lang)[0]


# ---------------------------------------------------------------------------------------------
# Grammar (language-independent)
# ---------------------------------------------------------------------------------------------


def _tok(kind: str, idx: int, upos: str, ner: str = "O") -> Tok:
    return (kind, idx, upos, ner)


def _punct(idx: int) -> Tok:
    return _tok("punct", idx, "PUNCT")


def _pick(rng: random.Random, kind: str) -> int:
    return rng.randrange(_SIZE[kind])


def _entity(rng: random.Random, label: str) -> list[Tok]:
    """A name: PER (first [last]), ORG (name [name] suffix) or LOC (name [suffix])."""
    if label == "PER":
        kinds = ["per_first"] + (["per_last"] if rng.random() < 0.6 else [])
    elif label == "ORG":
        kinds = ["org_name"] * rng.randint(1, 2) + ["org_suffix"]
    else:
        kinds = ["loc_name"] + (["loc_suffix"] if rng.random() < 0.3 else [])
    return [_tok(k, _pick(rng, k), "PROPN", ("B-" if j == 0 else "I-") + label)
            for j, k in enumerate(kinds)]


def _common_np(rng: random.Random, noun: int | None = None) -> list[Tok]:
    """DET? (ADJ | NUM)? NOUN."""
    noun = _pick(rng, "noun") if noun is None else noun
    toks = [_tok("det", _pick(rng, "det"), "DET")] if rng.random() < 0.75 else []
    r = rng.random()
    if r < 0.3:
        toks.append(_tok("adj", _pick(rng, "adj"), "ADJ"))
    elif r < 0.4:
        toks.append(_tok("num", _pick(rng, "num"), "NUM"))
    return toks + [_tok("noun", noun, "NOUN")]


_SUBJECT = {"PER": 0.35, "ORG": 0.15, "LOC": 0.05, "NP": 0.3, "PRON": 0.15}
_OBJECT = {"PER": 0.2, "ORG": 0.1, "LOC": 0.1, "NP": 0.6}
_ARGUMENT = {"PER": 0.4, "ORG": 0.2, "LOC": 0.1, "NP": 0.3}  # no pronouns: roles can swap


def _np(rng: random.Random, weights: Mapping[str, float]) -> list[Tok]:
    """A noun phrase of a kind drawn from weights (entity, common noun phrase or pronoun)."""
    kind = rng.choices(list(weights), list(weights.values()))[0]
    if kind == "NP":
        return _common_np(rng)
    if kind == "PRON":
        return [_tok("pron", _pick(rng, "pron"), "PRON")]
    return _entity(rng, kind)


@dataclass(frozen=True)
class _Clause:
    """Subject, predicate (VERB object, or AUX ADJ), optional negation and droppable modifiers."""

    subj: tuple[Tok, ...]
    pred: tuple[Tok, ...]
    neg_at: int  # where the negation word goes inside pred
    negated: bool
    mods: tuple[Tok, ...] = ()

    def core(self, negated: bool | None = None) -> list[Tok]:
        neg = self.negated if negated is None else negated
        middle = [_tok("neg", 0, "PART")] if neg else []
        return [*self.subj, *self.pred[: self.neg_at], *middle, *self.pred[self.neg_at:]]

    def full(self) -> list[Tok]:
        return self.core() + list(self.mods)


def _verbal_pred(rng: random.Random, verb: int | None = None) -> tuple[Tok, ...]:
    verb = _pick(rng, "verb") if verb is None else verb
    return (_tok("verb", verb, "VERB"), *_np(rng, _OBJECT))


def _clause(rng: random.Random, negated: bool) -> _Clause:
    """A random clause; negated clauses carry no modifiers, so dropping them stays entailed."""
    subj = tuple(_np(rng, _SUBJECT))
    if rng.random() < 0.2:
        pred, neg_at = (_tok("aux", 0, "AUX"), _tok("adj", _pick(rng, "adj"), "ADJ")), 1
    else:
        pred, neg_at = _verbal_pred(rng), 0
    return _Clause(subj, pred, neg_at, negated, () if negated else _modifiers(rng, 0.5, 0.25))


def _modifiers(rng: random.Random, p_place: float, p_adverb: float) -> tuple[Tok, ...]:
    """Optional ADP phrase followed by an optional ADV."""
    place = _modifier(rng, "ADP") if rng.random() < p_place else []
    adverb = _modifier(rng, "ADV") if rng.random() < p_adverb else []
    return (*place, *adverb)


def _modifier(rng: random.Random, kind: str = "") -> list[Tok]:
    """One modifier: an ADP phrase (a place or a common noun phrase) or an ADV."""
    if (kind or rng.choice(("ADP", "ADV"))) == "ADV":
        return [_tok("adv", _pick(rng, "adv"), "ADV")]
    return [_tok("adp", _pick(rng, "adp"), "ADP"),
            *(_entity(rng, "LOC") if rng.random() < 0.6 else _common_np(rng))]


def _contains(toks: tuple[Tok, ...], part: list[Tok]) -> bool:
    """Whether part occurs as a contiguous run inside toks."""
    return any(list(toks[i:i + len(part)]) == part for i in range(len(toks) - len(part) + 1))


def _sentence(rng: random.Random, max_len: int = 15) -> list[Tok]:
    """A declarative sentence of one or two clauses, 4..max_len tokens long."""
    while True:
        toks = _clause(rng, rng.random() < 0.15).full()
        if rng.random() < 0.3:
            toks += [_punct(_COMMA)] if rng.random() < 0.5 else []
            toks += [_tok("cconj", _pick(rng, "cconj"), "CCONJ"),
                     *_clause(rng, rng.random() < 0.15).full()]
        toks.append(_punct(_PERIOD))
        if 4 <= len(toks) <= max_len:
            return toks


# ---------------------------------------------------------------------------------------------
# Tasks at the concept level: (rng, label) -> content
# ---------------------------------------------------------------------------------------------


def _nli(rng: random.Random, label: str) -> tuple[list[Tok], list[Tok]]:
    """Premise; hypothesis = one clause's core (entailment), its negation flipped (contradiction),
    or for neutral either a positive clause's core plus a new modifier (added information) or its
    subject with a verb and object the premise does not mention."""
    clauses = [_clause(rng, rng.random() < 0.2)]
    premise = clauses[0].full()
    if rng.random() < 0.5:
        clauses.append(_clause(rng, rng.random() < 0.2))
        premise += [_tok("cconj", _pick(rng, "cconj"), "CCONJ"), *clauses[1].full()]
    premise.append(_punct(_PERIOD))
    target = rng.choice(clauses)
    if label == "entailment":
        hyp = target.core()
    elif label == "contradiction":
        hyp = target.core(negated=not target.negated)
    elif not target.negated and rng.random() < 0.5:
        extra = _modifier(rng)
        while _contains(target.mods, extra):
            extra = _modifier(rng)
        hyp = target.core() + extra
    else:
        used = {idx for kind, idx, _, _ in premise if kind == "verb"}
        verb = rng.choice([v for v in range(_SIZE["verb"]) if v not in used])
        hyp = _Clause(target.subj, _verbal_pred(rng, verb), 0, rng.random() < 0.3).core()
    return premise, hyp + [_punct(_PERIOD)]


def _pa(rng: random.Random, label: int) -> tuple[list[Tok], list[Tok]]:
    """PAWS-style pair over the same words from "A VERB B and C [ADP LOC] .": swapping B and C keeps
    the meaning (label 1); exchanging the subject A with the object B-and-C changes it (label 0)."""
    while True:
        subj, obj1, obj2 = (_np(rng, _ARGUMENT) for _ in range(3))
        if len({tuple(subj), tuple(obj1), tuple(obj2)}) == 3:
            break
    verb, conj = _tok("verb", _pick(rng, "verb"), "VERB"), _tok("cconj", 0, "CCONJ")
    place = [_tok("adp", _pick(rng, "adp"), "ADP"), *_entity(rng, "LOC")]
    place = place if rng.random() < 0.4 else []
    first = [*subj, verb, *obj1, conj, *obj2, *place, _punct(_PERIOD)]
    if label == 1:
        second = [*subj, verb, *obj2, conj, *obj1, *place, _punct(_PERIOD)]
    else:
        obj1, obj2 = (obj2, obj1) if rng.random() < 0.5 else (obj1, obj2)
        second = [*obj1, conj, *obj2, verb, *subj, *place, _punct(_PERIOD)]
    return (first, second) if rng.random() < 0.5 else (second, first)


def _qa(rng: random.Random, qtype: str) -> tuple[list[Tok], list[Tok], tuple[int, int]]:
    """Context of 2-4 facts "PER VERB OBJ ADP LOC ." (names, verbs, objects, places all distinct)
    and a who/what/where question about one; returns (context, question, answer token span)."""
    k = rng.randint(2, 4)
    firsts, verbs, nouns, places = (rng.sample(range(_SIZE[c]), k)
                                    for c in ("per_first", "verb", "noun", "loc_name"))
    context: list[Tok] = []
    questions = []
    for j in range(k):
        person = [_tok("per_first", firsts[j], "PROPN", "B-PER"), *_entity(rng, "PER")[1:]]
        verb = _tok("verb", verbs[j], "VERB")
        obj = _common_np(rng, nouns[j])
        place = [_tok("loc_name", places[j], "PROPN", "B-LOC"), *_entity(rng, "LOC")[1:]]
        adp = _tok("adp", _pick(rng, "adp"), "ADP")
        at_verb = len(context) + len(person)
        at_place = at_verb + 1 + len(obj) + 1
        bare_obj = at_verb + 1 + (obj[0][0] == "det")  # the answer leaves out the determiner
        questions.append({
            "who": ([verb, *obj], (at_verb - len(person), at_verb)),
            "what": ([*person, verb], (bare_obj, at_verb + 1 + len(obj))),
            "where": ([*person, verb, *obj], (at_place, at_place + len(place))),
        }[qtype])
        context += [*person, verb, *obj, adp, *place, _punct(_PERIOD)]
    words, span = questions[rng.randrange(k)]
    wh = {"who": (_WHO, "PRON"), "what": (_WHAT, "PRON"), "where": (_WHERE, "ADV")}[qtype]
    return context, [_tok("wh", *wh), *words, _punct(_QUESTION)], span


def _tagged(rng: random.Random, _label: None) -> list[Tok]:
    """A sentence for ner and pos (its tokens carry both tag sets)."""
    return _sentence(rng)


_BUILDERS: Mapping[str, Callable[[random.Random, Any], Any]] = MappingProxyType({
    "nli": _nli, "pa": _pa, "qa": _qa, "ner": _tagged, "pos": _tagged,
})
#: Labels each record is balanced over (for qa: the question type).
_LABELS: Mapping[str, tuple[Any, ...]] = MappingProxyType({
    "nli": NLI_LABELS, "pa": (0, 1), "qa": ("who", "what", "where"), "ner": (None,), "pos": (None,),
})
#: Share of the concept space each split owns (out of 5 hash buckets).
_SPLIT_BUCKETS: Mapping[str, tuple[int, ...]] = MappingProxyType(
    {"train": (0, 1, 2), "dev": (3,), "test": (4,)})


def _split_of(key: object) -> str:
    """The split that owns a concept-level example (stable hash of its content)."""
    digest = hashlib.blake2b(repr(key).encode("utf-8"), digest_size=8).digest()
    bucket = int.from_bytes(digest, "big") % 5
    return next(s for s, buckets in _SPLIT_BUCKETS.items() if bucket in buckets)


def _concept(task: str, split: str, i: int, seed: int) -> tuple[Any, Any]:
    """Label and language-independent content of example i of a split."""
    labels = _LABELS[task]
    order = list(labels)
    random.Random(f"{seed}/{task}/{split}/labels/{i // len(labels)}").shuffle(order)
    label = order[i % len(labels)]
    rng = random.Random(f"{seed}/{task}/{split}/{i}")
    while True:
        content = _BUILDERS[task](rng, label)
        if _split_of((task, label, content)) == split:
            return label, content


# ---------------------------------------------------------------------------------------------
# Records in one language
# ---------------------------------------------------------------------------------------------


def _record(task: str, lang: str, rid: str, label: Any, content: Any) -> Record:
    """The schema.py record for one concept-level example spelled out in one language."""
    if task == "nli":
        premise, hypothesis = (_text(toks, lang) for toks in content)
        return {"id": rid, "premise": premise, "hypothesis": hypothesis, "label": label}
    if task == "pa":
        sentence1, sentence2 = (_text(toks, lang) for toks in content)
        return {"id": rid, "sentence1": sentence1, "sentence2": sentence2, "label": label}
    if task == "qa":
        context, question, (a, b) = content
        words = _words(context, lang)
        text, starts = _join(words, lang)
        start, end = starts[a], starts[b - 1] + len(words[b - 1])
        return {"id": rid, "context": text, "question": _text(question, lang),
                "answers": {"text": [text[start:end]], "answer_start": [start]}}
    tags = [ner if task == "ner" else upos for _, _, upos, ner in content]
    return {"id": rid, "tokens": _words(content, lang), f"{task}_tags": tags}


def _check(field: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {field} {value!r}; expected one of: {', '.join(allowed)}")


def generate(task: str, lang: str, split: str, n: int, seed: int = 0) -> list[Record]:
    """Return n deterministic synthetic records of one task, language and split."""
    _check("task", task, TASKS)
    _check("lang", lang, LANGS)
    _check("split", split, SPLITS)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    return [
        _record(task, lang, f"syn-{task}-{lang}-{split}-{i:06d}", *_concept(task, split, i, seed))
        for i in range(n)
    ]


def _record_lines(task: str, r: Record) -> list[str]:
    if task == "nli":
        return [r["premise"], r["hypothesis"], r["label"]]
    if task == "pa":
        return [r["sentence1"], r["sentence2"]]
    if task == "qa":
        return [r["context"], r["question"], r["answers"]["text"][0]]
    return [" ".join(r["tokens"]), " ".join(r[f"{task}_tags"])]


def corpus(seed: int = 0, per_task: int = 200) -> list[str]:
    """Return plain-text lines covering every word, label and tag the synthetic data can contain."""
    label_sets = (NLI_LABELS, PA_ANSWERS, ("0", "1"), NER_TAGS, UPOS_TAGS)
    lines = [" ".join(labels) for labels in label_sets]
    for lang in LANGS:
        lines += [" ".join(words) for words in _lexicon(lang).values()]
    for task in TASKS:
        for lang in LANGS:
            for r in generate(task, lang, "train", per_task, seed):
                lines += _record_lines(task, r)
    return lines
