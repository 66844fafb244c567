"""Hand-worked checks of the output parsers and the task metrics (every expected number derived in a comment)."""

from __future__ import annotations

import dataclasses

import pytest

from trainables.tasks.metrics import (
    accuracy,
    metric,
    mlqa_normalize,
    ner_scores,
    pos_scores,
    qa_f1_em,
    qa_scores,
)
from trainables.tasks.parsing import TagParse, parse_label, parse_span, parse_tags
from trainables.tasks.schema import NER_TAGS, NLI_LABELS, PA_ANSWERS, UPOS_TAGS

approx = pytest.approx


# =========================================================================== parse_label


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" Entailment.", "entailment"),  # leading space stripped, case folded
        ('"Contradiction"', "contradiction"),  # leading quote stripped
        ("**Neutral** because", "neutral"),  # markdown asterisks are ASCII punctuation
        ("«neutral»", "neutral"),  # Unicode quote (category Pi)
        ("neutralish", "neutral"),  # pure prefix match: no word boundary is required
        ("I think it is entailment", None),  # label not at the start
        ("maybe", None),
        ("", None),
        ("  ...  ", None),
    ],
)
def test_parse_label_nli(text, expected):
    assert parse_label(text, NLI_LABELS) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("yes, because both say the same", "yes"),
        ("No.", "no"),
        ("\n'YES'", "yes"),
        ("Perhaps", None),
    ],
)
def test_parse_label_pa(text, expected):
    assert parse_label(text, PA_ANSWERS) == expected


def test_parse_label_longest_match_and_original_spelling():
    # "none" and "no" both prefix "None of them"; the longer one wins.
    assert parse_label("None of them", ("no", "none")) == "none"
    assert parse_label("no way", ("no", "none")) == "no"
    # The label comes back as spelled in `labels`, not as the model wrote it.
    assert parse_label("yes", ("Yes", "No")) == "Yes"
    # An empty label never matches everything.
    assert parse_label("anything", ("", "yes")) is None


# =========================================================================== parse_tags


def test_parse_tags_exact():
    tp = parse_tags("B-PER I-PER O", 3, NER_TAGS, unknown="O")
    assert tp == TagParse(tags=["B-PER", "I-PER", "O"], failed=False, length_mismatch=False, n_unknown=0)


def test_parse_tags_lower_case_and_commas():
    # "b-per," "o," "O" → upper-cased, comma-separated, no spaces needed after commas.
    tp = parse_tags("b-per, o,O", 3, NER_TAGS, unknown="O")
    assert tp.tags == ["B-PER", "O", "O"]
    assert not tp.failed and not tp.length_mismatch and tp.n_unknown == 0


def test_parse_tags_quotes_and_brackets():
    tp = parse_tags("['B-LOC', 'O']", 2, NER_TAGS, unknown="O")
    assert tp.tags == ["B-LOC", "O"]
    assert tp.n_unknown == 0


def test_parse_tags_padding():
    # 2 tags for 4 tokens: padded with the unknown tag; padding is not counted as unknown.
    tp = parse_tags("NOUN VERB", 4, UPOS_TAGS, unknown="X")
    assert tp.tags == ["NOUN", "VERB", "X", "X"]
    assert tp.length_mismatch and not tp.failed and tp.n_unknown == 0


def test_parse_tags_truncation():
    tp = parse_tags("NOUN VERB DET ADJ", 2, UPOS_TAGS, unknown="X")
    assert tp.tags == ["NOUN", "VERB"]
    assert tp.length_mismatch and not tp.failed


def test_parse_tags_unknown():
    # FOO is not a UPOS tag → X; 1 unknown among the 3 kept tags.
    tp = parse_tags("NOUN FOO VERB", 3, UPOS_TAGS, unknown="X")
    assert tp.tags == ["NOUN", "X", "VERB"]
    assert tp.n_unknown == 1 and not tp.failed and not tp.length_mismatch


def test_parse_tags_failed():
    # "I", "CANNOT", "DO", "THAT": none is a NER tag ("I" alone is not "I-PER").
    tp = parse_tags("I cannot do that", 4, NER_TAGS, unknown="O")
    assert tp.tags == ["O", "O", "O", "O"]
    assert tp.failed and not tp.length_mismatch and tp.n_unknown == 4
    # Empty output: failed, and 0 produced tags ≠ 2 tokens.
    tp = parse_tags("", 2, NER_TAGS, unknown="O")
    assert tp == TagParse(tags=["O", "O"], failed=True, length_mismatch=True, n_unknown=0)
    # "O O" is made of allowed tags even though O is also the unknown tag: not failed.
    assert not parse_tags("O O", 2, NER_TAGS, unknown="O").failed


def test_parse_tags_frozen_and_bad_count():
    tp = parse_tags("O", 1, NER_TAGS, unknown="O")
    with pytest.raises(dataclasses.FrozenInstanceError):
        tp.failed = True  # type: ignore[misc]
    with pytest.raises(ValueError, match="n_tokens"):
        parse_tags("O", -1, NER_TAGS, unknown="O")


# =========================================================================== parse_span


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  Paris \nbecause it is the capital", "Paris"),
        ("\n\n  Berlin  ", "Berlin"),
        ("", ""),
        ("   \n \t ", ""),
    ],
)
def test_parse_span(text, expected):
    assert parse_span(text) == expected


# =========================================================================== accuracy


def test_accuracy():
    # correct: a, b → 2 of 4; None never counts even against a None reference.
    assert accuracy(["a", None, "b", "c"], ["a", "a", "b", "b"]) == approx(50.0)
    assert accuracy([None], [None]) == 0.0
    assert accuracy([], []) == 0.0
    with pytest.raises(ValueError, match="same length"):
        accuracy(["a"], ["a", "b"])


# =========================================================================== MLQA normalisation


def test_normalize_en_articles_and_punctuation():
    # lower → "the theatre, an apple!" → no punct → "the theatre an apple" → drop whole-word
    # "the", "an" (not the "the" inside "theatre") → collapse spaces.
    assert mlqa_normalize("The theatre, an apple!", "en") == "theatre apple"
    # Punctuation inside words is deleted, not replaced by a space.
    assert mlqa_normalize("U.S.A. rock-n-roll", "en") == "usa rocknroll"
    assert mlqa_normalize("  the   cat  ", "en") == "cat"


def test_normalize_es_de_fr():
    # es: "la" and "los" are articles; "de" is not.
    assert mlqa_normalize("La Casa de los Espíritus", "es") == "casa de espíritus"
    # de: "der" and "den" removed, "dieser" is not a whole-word article.
    assert mlqa_normalize("Der Hund, den dieser sah.", "de") == "hund dieser sah"
    # fr (our extension): le/les removed; the elided "l'" is glued on once "'" is removed.
    assert mlqa_normalize("Le Louvre, les musées", "fr") == "louvre musées"
    assert mlqa_normalize("L'Hôtel", "fr") == "lhôtel"
    # Articles are language-specific: "the" stays in German, "der" stays in English.
    assert mlqa_normalize("the der", "de") == "the"
    assert mlqa_normalize("the der", "en") == "der"


def test_normalize_hi():
    # Devanagari danda "।" (U+0964) is Unicode punctuation (Po) and goes; no Hindi articles.
    assert mlqa_normalize("भारत की राजधानी।", "hi") == "भारत की राजधानी"
    assert mlqa_normalize("the taj", "hi") == "the taj"


def test_normalize_zh_mixed_segmentation():
    # Each CJK character is a token; "。" is punctuation and removed.
    assert mlqa_normalize("北京大学。", "zh") == "北 京 大 学"
    # Latin/digit runs between CJK characters are whitespace-split, and lower-cased.
    assert mlqa_normalize("iPhone 15手机", "zh") == "iphone 15 手 机"
    # The CJK range ends at U+9FA5: U+9FA6 is treated as an ordinary (non-split) character.
    assert mlqa_normalize("\u9fa5\u9fa5", "zh") == "\u9fa5 \u9fa5"
    assert mlqa_normalize("\u9fa6\u9fa6", "zh") == "\u9fa6\u9fa6"
    # No articles in zh.
    assert mlqa_normalize("the 猫", "zh") == "the 猫"


def test_normalize_unknown_language():
    with pytest.raises(ValueError, match="lang must be one of en, hi, es, de, fr, zh"):
        mlqa_normalize("x", "vi")


# =========================================================================== MLQA F1 / EM


def test_qa_en():
    # Both normalise to "eiffel tower".
    assert qa_f1_em("The Eiffel Tower!", ["Eiffel Tower"], "en") == (1.0, 1.0)
    # pred [big, red, dog] vs gold [red, dog]: overlap 2, P = 2/3, R = 1, F1 = 2·(2/3)/(5/3) = 0.8.
    f1, em = qa_f1_em("a big red dog.", ["the red dog"], "en")
    assert f1 == approx(0.8) and em == 0.0


def test_qa_es_de():
    # es: pred [casa] vs gold [casa, blanca]: P = 1, R = 1/2, F1 = 2·(1/2)/(3/2) = 2/3.
    f1, em = qa_f1_em("una casa", ["la casa blanca"], "es")
    assert f1 == approx(2 / 3) and em == 0.0
    # de: "dem Mann" and "einem Mann" both normalise to "mann".
    assert qa_f1_em("dem Mann", ["einem Mann"], "de") == (1.0, 1.0)


def test_qa_hi():
    # The danda is removed, so this is an exact match.
    assert qa_f1_em("नई दिल्ली।", ["नई दिल्ली"], "hi") == (1.0, 1.0)
    # pred [नई, दिल्ली, शहर] vs gold [नई, दिल्ली]: P = 2/3, R = 1, F1 = 0.8.
    f1, em = qa_f1_em("नई दिल्ली शहर", ["नई दिल्ली"], "hi")
    assert f1 == approx(0.8) and em == 0.0


def test_qa_zh_characters():
    # pred [北, 京, 大, 学] vs gold [北, 京]: overlap 2, P = 2/4, R = 2/2, F1 = 2·0.5·1/1.5 = 2/3.
    f1, em = qa_f1_em("北京大学", ["北京"], "zh")
    assert f1 == approx(2 / 3) and em == 0.0
    # Whitespace-tokenised zh would give [北京大学] vs [北京]: F1 0. Characters matter.


def test_qa_zh_mixed_runs():
    # pred [苹, 果, iphone] vs gold [iphone, 手, 机]: overlap 1, P = R = 1/3, F1 = 1/3.
    f1, em = qa_f1_em("苹果iPhone", ["iPhone手机"], "zh")
    assert f1 == approx(1 / 3) and em == 0.0
    # "iPhone 15" is two tokens: pred [iphone, 15] vs gold [iphone, 15, 手, 机]: P = 1, R = 1/2, F1 = 2/3.
    f1, _ = qa_f1_em("iPhone 15", ["iPhone 15手机"], "zh")
    assert f1 == approx(2 / 3)


def test_qa_fr():
    # fr is our extension ("la", "une" are articles). pred [tour, eiffel] vs gold
    # [tour, eiffel, à, paris] ("à" is neither punctuation nor an article):
    # P = 1, R = 2/4, F1 = 2·1·0.5/1.5 = 2/3.
    f1, em = qa_f1_em("la Tour Eiffel", ["Une tour Eiffel à Paris"], "fr")
    assert f1 == approx(2 / 3) and em == 0.0


def test_qa_empty_prediction():
    assert qa_f1_em("", ["Paris"], "en") == (0.0, 0.0)
    assert qa_f1_em(None, ["Paris"], "en") == (0.0, 0.0)


def test_qa_empty_gold_after_normalisation():
    # Gold "The." normalises to "". As in MLQA's script: EM compares "" == "" → 1, while
    # F1 has no common token → 0 (not 1 as SQuAD v2 would give).
    assert qa_f1_em("", ["The."], "en") == (0.0, 1.0)
    assert qa_f1_em("an", ["The."], "en") == (0.0, 1.0)
    assert qa_f1_em("Paris", ["The."], "en") == (0.0, 0.0)


def test_qa_multiple_gold_answers_take_max():
    # pred [red, dog]; vs [dog]: P = 1/2, R = 1, F1 = 2/3; vs [big, red, dog]: P = 1, R = 2/3, F1 = 0.8.
    f1, em = qa_f1_em("the red dog", ["dog", "a big red dog"], "en")
    assert f1 == approx(0.8) and em == 0.0
    # A matching gold anywhere in the list gives EM 1.
    assert qa_f1_em("the red dog", ["dog", "Red dog"], "en") == (1.0, 1.0)
    # No gold answers at all: scores 0.
    assert qa_f1_em("dog", [], "en") == (0.0, 0.0)


def test_qa_scores_average():
    # Example 1: F1 0.8, EM 0 (see test_qa_en); example 2: F1 1, EM 1.
    # f1 = 100·(0.8 + 1)/2 = 90; em = 100·(0 + 1)/2 = 50; f1_em = (90 + 50)/2 = 70.
    scores = qa_scores(["a big red dog.", "Paris"], [["the red dog"], ["paris"]], "en")
    assert scores == approx({"f1": 90.0, "em": 50.0, "f1_em": 70.0})
    assert qa_scores([], [], "en") == {"f1": 0.0, "em": 0.0, "f1_em": 0.0}
    # A record's answers dict is accepted as the gold list.
    assert qa_scores(["Paris"], [{"text": ["Paris"], "answer_start": [0]}], "en")["em"] == 100.0
    with pytest.raises(ValueError, match="same length"):
        qa_scores(["a"], [], "en")


# =========================================================================== NER


def test_ner_partial_entity_match():
    # gold entities: PER(0-1), LOC(3)                       → 2
    # pred entities: PER(0) (partial: wrong span), ORG(2), LOC(3) → 3, of which LOC correct
    # P = 1/3, R = 1/2, F1 = 2·(1/6)/(5/6) = 0.4
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    pred = [["B-PER", "O", "B-ORG", "B-LOC"]]
    scores = ner_scores(pred, gold)
    assert scores == approx({"f1": 40.0, "precision": 100 / 3, "recall": 50.0})


def test_ner_default_mode_is_lenient():
    # seqeval's default (conlleval) mode: an I- after O starts an entity, so I-PER I-PER = PER(0-1).
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    pred = [["I-PER", "I-PER", "O", "B-LOC"]]
    assert ner_scores(pred, gold) == approx({"f1": 100.0, "precision": 100.0, "recall": 100.0})


def test_ner_length_mismatch():
    # Sentence 1: pred padded with O → [B-PER, I-PER, O, O]: PER(0-1) right, LOC(3) missed.
    # Sentence 2: pred truncated → [B-ORG, O]: ORG(0) right; the extra B-LOC is dropped.
    # gold entities 3, predicted 2, correct 2: P = 1, R = 2/3, F1 = 2·(2/3)/(5/3) = 0.8.
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER"], ["B-ORG", "O", "B-LOC"]]
    assert ner_scores(pred, gold) == approx({"f1": 80.0, "precision": 100.0, "recall": 200 / 3})
    # A missing prediction (None) is all O: no entity predicted → P = R = F1 = 0.
    assert ner_scores([None], [["B-PER"]]) == {"f1": 0.0, "precision": 0.0, "recall": 0.0}


def test_ner_empty():
    assert ner_scores([], []) == {"f1": 0.0, "precision": 0.0, "recall": 0.0}
    # No entities anywhere: 0/0 is 0, without a warning escaping.
    assert ner_scores([["O"]], [["O"]]) == {"f1": 0.0, "precision": 0.0, "recall": 0.0}


# =========================================================================== POS


def test_pos_acc_and_seqeval_f1():
    # acc: DET, NOUN right, VERB→NOUN wrong: 2/3.
    # seqeval reads "DET" as prefix D + type "ET", "NOUN" as N + "OUN", "VERB" as V + "ERB";
    # a run of equal tags is one chunk. gold chunks: ET(0), OUN(1), ERB(2) → 3;
    # pred [DET, NOUN, NOUN]: ET(0), OUN(1-2) → 2, of which ET(0) correct.
    # P = 1/2, R = 1/3, F1 = 2·(1/6)/(5/6) = 0.4.
    scores = pos_scores([["DET", "NOUN", "NOUN"]], [["DET", "NOUN", "VERB"]])
    assert scores == approx({"acc": 200 / 3, "f1": 40.0})


def test_pos_length_mismatch():
    # Sentence 1: [PRON, VERB] padded → [PRON, VERB, _]: 2 of 3 tokens right.
    # Sentence 2: [PROPN, PUNCT, X] truncated → [PROPN, PUNCT]: 2 of 2 right.
    # acc = 4/5 = 80.
    # seqeval: gold chunks RON(0), ERB(1), OUN(2), ROPN, UNCT → 5. The pad "_" opens a chunk
    # that seqeval never closes (it has the same empty type as O), so it is not counted:
    # predicted 4, all correct. P = 1, R = 4/5, F1 = 2·0.8/1.8 = 8/9.
    gold = [["PRON", "VERB", "NOUN"], ["PROPN", "PUNCT"]]
    pred = [["PRON", "VERB"], ["PROPN", "PUNCT", "X"]]
    assert pos_scores(pred, gold) == approx({"acc": 80.0, "f1": 800 / 9})


def test_pos_empty():
    assert pos_scores([], []) == {"acc": 0.0, "f1": 0.0}


# =========================================================================== metric()


def test_metric_nli():
    # entailment right, None wrong, neutral≠contradiction: 1/3.
    scores = metric("nli", "fr", ["entailment", None, "neutral"], ["entailment", "neutral", "contradiction"])
    assert scores == approx({"acc": 100 / 3})


def test_metric_pa_ints_and_words():
    # pa.py parses to label ids (1 = yes); None = unparseable. Right: 1=1, 1=1 → 2/4.
    assert metric("pa", "de", [1, 0, None, 1], [1, 1, 0, 1]) == approx({"acc": 50.0})
    # Label words and ids compare equal: "yes" ≡ 1, "No" ≡ 0.
    assert metric("pa", "en", ["yes", "No"], [1, 0]) == {"acc": 100.0}


def test_metric_qa_ner_pos():
    # zh: F1 2/3, EM 0 (see test_qa_zh_characters) → f1 66.67, em 0, f1_em 33.33.
    assert metric("qa", "zh", ["北京大学"], [["北京"]]) == approx({"f1": 200 / 3, "em": 0.0, "f1_em": 100 / 3})
    assert set(metric("ner", "hi", [["O"]], [["O"]])) == {"f1", "precision", "recall"}
    assert metric("pos", "es", [["NOUN"]], [["NOUN"]]) == {"acc": 100.0, "f1": 100.0}


def test_metric_bad_inputs():
    with pytest.raises(ValueError, match=r"task must be one of nli, pa, qa, ner, pos; got 'xnli'"):
        metric("xnli", "en", [], [])
    with pytest.raises(ValueError, match=r"lang must be one of en, hi, es, de, fr, zh; got 'ja'"):
        metric("nli", "ja", [], [])
    with pytest.raises(ValueError, match="same length"):
        metric("ner", "en", [["O"]], [])
    with pytest.raises(ValueError, match=r"references\[0\]"):
        metric("pa", "en", [1], [2])
    with pytest.raises(ValueError, match=r"references\[1\]"):
        metric("nli", "en", ["neutral", "neutral"], ["neutral", "maybe"])


# =========================================================================== more languages and edge cases


def test_qa_de_quotes_and_articles():
    # „ (U+201E, Ps) and “ (U+201C, Pi) are Unicode punctuation; "die" is an article → both "mauer".
    assert qa_f1_em("„Die Mauer“", ["die Mauer"], "de") == (1.0, 1.0)
    # pred "die berliner mauer fiel 1989." → [berliner, mauer, fiel, 1989]; gold "der Fall der Berliner
    # Mauer" → [fall, berliner, mauer]; overlap 2: P = 2/4, R = 2/3, F1 = 2·(1/3)/(7/6) = 4/7.
    f1, em = qa_f1_em("Die Berliner Mauer fiel 1989.", ["der Fall der Berliner Mauer"], "de")
    assert f1 == approx(4 / 7) and em == 0.0


def test_qa_es_inverted_punctuation():
    # ¡ ¿ ! ? are punctuation; el/la are articles, "está" is not.
    assert mlqa_normalize("¡El Prado!", "es") == "prado"
    assert mlqa_normalize("¿Dónde está la casa?", "es") == "dónde está casa"


def test_qa_hi_multiple_golds():
    # pred [दिल्ली, का, किला]. vs [लाल, किला]: overlap 1, P = 1/3, R = 1/2, F1 = 0.4;
    # vs [दिल्ली]: overlap 1, P = 1/3, R = 1, F1 = 0.5 → the max, 0.5. "का" is not an article.
    f1, em = qa_f1_em("दिल्ली का किला", ["लाल किला", "दिल्ली"], "hi")
    assert f1 == approx(0.5) and em == 0.0


def test_qa_zh_spaces_brackets_and_multiple_golds():
    # Characters are tokens whatever the spacing; 《》 are punctuation.
    assert qa_f1_em("北 京", ["北京"], "zh") == (1.0, 1.0)
    assert qa_f1_em("《红楼梦》", ["红楼梦"], "zh") == (1.0, 1.0)
    # [红, 楼] vs [曹, 雪, 芹]: 0; vs [红, 楼, 梦]: P = 1, R = 2/3, F1 = 0.8 → 0.8.
    f1, em = qa_f1_em("红楼", ["曹雪芹", "红楼梦"], "zh")
    assert f1 == approx(0.8) and em == 0.0


def test_qa_fr_curly_apostrophe_and_blank_prediction():
    # ’ (U+2019, Pf) is removed like ASCII "'": the elided article stays glued on.
    assert mlqa_normalize("l’Hôtel de Ville", "fr") == "lhôtel de ville"
    assert qa_f1_em("   ", ["Paris"], "en") == (0.0, 0.0)


def test_tagging_empty_predictions():
    # [] is padded to the gold length: all O (NER) → no entity; all "_" (POS) → no token right.
    assert ner_scores([[]], [["B-PER", "I-PER"]]) == {"f1": 0.0, "precision": 0.0, "recall": 0.0}
    assert pos_scores([[]], [["NOUN", "VERB"]]) == {"acc": 0.0, "f1": 0.0}
    # Two sentences, one empty prediction: gold PER(0-1) and LOC(0); predicted only LOC(0) → P = 1, R = 1/2, F1 = 2/3.
    scores = ner_scores([[], ["B-LOC"]], [["B-PER", "I-PER"], ["B-LOC"]])
    assert scores == approx({"f1": 200 / 3, "precision": 100.0, "recall": 50.0})
