"""Real XTREME loaders: the sample files read in place, hand-checked records, the CoNLL-U fallback,
every malformed-file error naming its file and line, and the hub's one-line failure offline."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.conftest import RECORD_FIELDS, XTREME_SAMPLE
from trainables.tasks.loaders import DataFormatError, DataUnavailable, load_split, missing_reason
from trainables.tasks.loaders.conllu import read_conllu
from trainables.tasks.loaders.tsv import read_sentences
from trainables.tasks.schema import NER_TAGS, NLI_LABELS, UPOS_TAGS

SAMPLE = f"local:{XTREME_SAMPLE}"

# (task, lang, split) → records, as SOURCES.md lists them (udpos de test: the GSD .conllu, 977 sentences).
SAMPLE_COUNTS = {
    **{("nli", lang, "dev"): 2000 for lang in ("en", "hi", "es", "de", "fr", "zh")},
    ("nli", "de", "test"): 2000,
    **{("pa", lang, "dev"): 2000 for lang in ("en", "es", "de", "fr", "zh")},
    ("pa", "de", "test"): 2000, ("pa", "zh", "test"): 2000,
    ("qa", "en", "dev"): 1148, ("qa", "hi", "dev"): 507, ("qa", "es", "dev"): 500,
    ("qa", "de", "dev"): 512, ("qa", "zh", "dev"): 504,
    ("ner", "en", "train"): 2000,
    **{("ner", lang, split): 2000 for lang in ("en", "es", "de", "fr", "zh") for split in ("dev", "test")},
    ("ner", "hi", "dev"): 1000, ("ner", "hi", "test"): 1000,
    ("pos", "en", "train"): 2000,
    ("pos", "en", "dev"): 2000, ("pos", "hi", "dev"): 1659, ("pos", "es", "dev"): 1400,
    ("pos", "de", "dev"): 799, ("pos", "fr", "dev"): 1476, ("pos", "zh", "dev"): 500,
    ("pos", "en", "test"): 2000, ("pos", "hi", "test"): 1684, ("pos", "es", "test"): 426,
    ("pos", "de", "test"): 977, ("pos", "fr", "test"): 416, ("pos", "zh", "test"): 500,
}

pytestmark = pytest.mark.skipif(not XTREME_SAMPLE.is_dir(), reason="shared XTREME sample not present")


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


# =========================================================================== the sample, in place


@pytest.mark.parametrize(("task", "lang", "split"), sorted(SAMPLE_COUNTS))
def test_every_sample_split_loads_with_its_documented_count(task, lang, split):
    records = load_split(SAMPLE, task, lang, split)
    assert len(records) == SAMPLE_COUNTS[(task, lang, split)]
    ids = [r["id"] for r in records]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith(f"{task}-{lang}-{split}-") for i in ids)
    for r in records:
        assert set(r) == RECORD_FIELDS[task]
        if task == "nli":
            assert r["label"] in NLI_LABELS and not r["hypothesis"].endswith("\r")
        elif task == "pa":
            assert r["label"] in (0, 1) and not r["sentence2"].endswith("\r")
        elif task == "qa":
            ans = r["answers"]
            assert ans["text"] and len(ans["text"]) == len(ans["answer_start"])
            # MLQA's offsets point at the answer text in the context.
            assert r["context"][ans["answer_start"][0]:][: len(ans["text"][0])] == ans["text"][0]
        else:
            tags = r["ner_tags"] if task == "ner" else r["pos_tags"]
            assert len(tags) == len(r["tokens"]) > 0
            assert set(tags) <= set(NER_TAGS if task == "ner" else UPOS_TAGS)
            assert all(t and "\t" not in t and "\r" not in t for t in r["tokens"])


def test_ids_are_stable_across_loads():
    assert load_split(SAMPLE, "ner", "de", "dev") == load_split(SAMPLE, "ner", "de", "dev")
    assert load_split(SAMPLE, "qa", "en", "dev")[0]["id"] == "qa-en-dev-569666f4dc3983dab5624e989212c1d9d0cd1798"


def test_first_records_hand_checked():
    # xnli/dev-en.tsv line 1 (CRLF): "And he said, Mama, I'm home.<TAB>He called his mom ...<TAB>neutral".
    assert load_split(SAMPLE, "nli", "en", "dev")[0] == {
        "id": "nli-en-dev-000000", "premise": "And he said, Mama, I'm home.",
        "hypothesis": "He called his mom as soon as the school bus dropped him off.", "label": "neutral"}
    assert load_split(SAMPLE, "nli", "zh", "dev")[0] == {
        "id": "nli-zh-dev-000000", "premise": "他说，妈妈，我回来了。",
        "hypothesis": "校车把他放下后，他立即给他妈妈打了电话。", "label": "neutral"}
    # xnli/test-de.tsv is the one labelled XNLI test file.
    de = load_split(SAMPLE, "nli", "de", "test")[0]
    assert de["hypothesis"] == "Ich habe nicht wieder mit ihm gesprochen." and de["label"] == "contradiction"
    assert load_split(SAMPLE, "pa", "en", "dev")[0] == {
        "id": "pa-en-dev-000000",
        "sentence1": "From the merger of the Four Rivers Council and the Audubon Council , the Shawnee Trails Council "
                     "was born .",
        "sentence2": "Shawnee Trails Council was formed from the merger of the Four Rivers Council and the Audubon "
                     "Council .",
        "label": 1}
    zh = load_split(SAMPLE, "pa", "zh", "test")[0]
    assert zh["sentence1"].startswith("2005 年末至 2009 年期间是例外") and zh["label"] == 1
    qa = load_split(SAMPLE, "qa", "zh", "dev")[0]
    assert qa["question"] == "吉尔吉斯斯坦的主要宗教为什么是伊斯兰教？"
    assert qa["answers"] == {"text": ["宪法保障宗教自由"], "answer_start": [18]}
    assert load_split(SAMPLE, "ner", "en", "train")[0] == {
        "id": "ner-en-train-000000",
        "tokens": ["R.H.", "Saunders", "(", "St.", "Lawrence", "River", ")", "(", "968", "MW", ")"],
        "ner_tags": ["B-ORG", "I-ORG", "O", "B-ORG", "I-ORG", "I-ORG", "O", "O", "O", "O", "O"]}
    assert load_split(SAMPLE, "ner", "hi", "test")[0]["tokens"] == ["नन्दा", "देवी", "पर्वत"]
    assert load_split(SAMPLE, "pos", "en", "dev")[0] == {
        "id": "pos-en-dev-000000", "tokens": ["From", "the", "AP", "comes", "this", "story", ":"],
        "pos_tags": ["ADP", "DET", "PROPN", "VERB", "DET", "NOUN", "PUNCT"]}
    zh_pos = load_split(SAMPLE, "pos", "zh", "test")[0]
    assert zh_pos["tokens"][:4] == ["然而", "，", "這樣", "的"] and zh_pos["pos_tags"][:4] == ["ADV", "PUNCT", "PRON", "PART"]


def test_csv_quoting_is_undone():
    # pawsx/dev-fr.tsv line 10: both sentences are "-quoted with "" inside.
    r = load_split(SAMPLE, "pa", "fr", "dev")[9]
    assert r["sentence1"] == ('Aamir Khan a de suite accepté de jouer après avoir lu le script de Mehra dans '
                              '"Rang De Basanti".')
    assert r["sentence2"] == ('Mehra a accepté de jouer dans "Rang de Basanti" juste après avoir lu le scénario '
                              "d'Aamir Khan.")
    assert r["label"] == 0
    # pawsx/dev-es.tsv line 9: sentence 1 really is "NS"; sentence 2 is quoted (two '' and "" pairs).
    r = load_split(SAMPLE, "pa", "es", "dev")[8]
    assert r["sentence1"] == "NS"
    assert r["sentence2"].startswith("El Cementerio Machpelah, también escrito como ''Cementerio Macpelah\" o ")


def test_german_pos_test_comes_from_the_conllu_treebank():
    # No udpos/test-de.tsv in the sample: de_gsd-ud-test.conllu is read. Sentence test-s2 has the
    # multiword token 19-20 "im" = in (ADP, head 22) + dem (DET, head 22): equal depth → first → "im ADP".
    records = load_split(SAMPLE, "pos", "de", "test")
    assert records[0]["tokens"] == ["Der", "Hauptgang", "war", "in", "Ordnung", ",", "aber", "alles", "andere",
                                    "als", "umwerfend", "."]
    s2 = list(zip(records[1]["tokens"], records[1]["pos_tags"]))
    assert s2[17:21] == [("noch", "ADV"), ("im", "ADP"), ("selben", "DET"), ("Jahr", "NOUN")]
    assert len(records[1]["tokens"]) == 28  # 29 words, one fused pair


@pytest.mark.parametrize(("split", "lang", "treebank"), [
    ("dev", "en", "en_ewt"), ("dev", "es", "es_gsd"), ("dev", "de", "de_gsd"), ("dev", "fr", "fr_gsd"),
    ("dev", "zh", "zh_gsd"), ("test", "en", "en_ewt"), ("test", "es", "es_gsd"), ("test", "fr", "fr_gsd"),
    ("test", "zh", "zh_gsd"),
])
def test_conllu_reading_reproduces_xtremes_udpos_files(split, lang, treebank):
    # Each sample udpos TSV is XTREME's conversion of these treebanks (en: its first 2000 sentences).
    tsv = read_sentences(XTREME_SAMPLE / "udpos" / f"{split}-{lang}.tsv", UPOS_TAGS, lang)
    conllu = read_conllu(XTREME_SAMPLE / "udpos" / "ud-v2.5-conllu" / f"{treebank}-ud-{split}.conllu")
    assert len(conllu) >= len(tsv)
    mismatches = [i for i, (a, b) in enumerate(zip(tsv, conllu)) if (a.tokens, a.tags) != (b.tokens, b.tags)]
    assert mismatches == []


# =========================================================================== what the sample lacks


@pytest.mark.parametrize(("task", "lang", "name"), [
    ("nli", "en", "xnli/test-en.tsv"), ("nli", "hi", "xnli/test-hi.tsv"), ("nli", "zh", "xnli/test-zh.tsv"),
    ("pa", "en", "pawsx/test-en.tsv"), ("pa", "es", "pawsx/test-es.tsv"), ("pa", "fr", "pawsx/test-fr.tsv"),
])
def test_unlabelled_test_files_say_so_in_one_line(task, lang, name):
    with pytest.raises(DataUnavailable) as err:
        load_split(SAMPLE, task, lang, "test")
    msg = one_line(err)
    assert str(XTREME_SAMPLE / name) in msg
    assert "has no label column" in msg and "eval.test_split=dev" in msg


@pytest.mark.parametrize(("task", "missing"), [
    ("nli", "xnli/train-en.tsv"), ("pa", "pawsx/train-en.tsv"), ("qa", "squad/train-v1.1.json"),
])
def test_missing_training_sets_name_the_file(task, missing):
    with pytest.raises(DataUnavailable) as err:
        load_split(SAMPLE, task, "en", "train")
    msg = one_line(err)
    assert f"missing file {XTREME_SAMPLE / missing}" in msg and "data.train_split=dev" in msg


def test_missing_files_and_pairs():
    with pytest.raises(DataUnavailable, match=r"missing file mlqa/\*\*/test-context-en-question-en\.json"):
        load_split(SAMPLE, "qa", "en", "test")
    with pytest.raises(DataUnavailable, match=r"missing file .*panx/train-de\.tsv$"):
        load_split(SAMPLE, "ner", "de", "train")
    with pytest.raises(DataUnavailable, match=r"no udpos/\*\*/hi_\*-ud-train\.conllu"):
        load_split(SAMPLE, "pos", "hi", "train")
    with pytest.raises(DataUnavailable, match=r"^pa hi: PAWS-X has no Hindi"):
        load_split(SAMPLE, "pa", "hi", "dev")
    with pytest.raises(DataUnavailable, match=r"^qa fr: MLQA has no French"):
        load_split("hub", "qa", "fr", "test")
    assert missing_reason("pa", "hi") == "PAWS-X has no Hindi"
    assert missing_reason("qa", "fr") == "MLQA has no French"
    assert missing_reason("ner", "hi") is None


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"unknown task 'xnli'; allowed: nli, pa, qa, ner, pos"):
        load_split(SAMPLE, "xnli", "en", "dev")
    with pytest.raises(ValueError, match=r"unknown language 'ja'; allowed: en, hi, es, de, fr, zh"):
        load_split(SAMPLE, "nli", "ja", "dev")
    with pytest.raises(ValueError, match=r"unknown split 'validation'; allowed: train, dev, test"):
        load_split(SAMPLE, "nli", "en", "validation")
    with pytest.raises(ValueError, match=r"'hub' or 'local:<dir>'"):
        load_split("s3://bucket", "nli", "en", "dev")
    with pytest.raises(DataUnavailable, match=r"is not a directory"):
        load_split("local:/nonexistent/xtreme", "nli", "en", "dev")


# =========================================================================== malformed files (tmp)


def write(root: Path, rel: str, text: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def assert_format_error(root: Path, rel: str, text: str, task: str, lang: str, where: str, message: str) -> None:
    """Loading `text` written at `rel` fails with one line that starts `<path><where>` and says `message`."""
    path = write(root, rel, text)
    with pytest.raises(DataFormatError) as err:
        load_split(f"local:{root}", task, lang, "dev")
    msg = one_line(err)
    assert msg.startswith(f"{path}{where}") and message in msg


def test_tsv_rows_crlf_quoting_newlines_and_blank_lines(tmp_path):
    # What csv.writer writes for a TAB, a newline and a quote inside fields, then trailing blank lines.
    write(tmp_path, "xnli/dev-en.tsv",
          'a b\tc d\tentailment\r\n"tab\there"\t"two\r\nlines"\tneutral\r\n"say ""hi"""\tx\tcontradictory\r\n\r\n\r\n')
    rows = load_split(f"local:{tmp_path}", "nli", "en", "dev")
    assert [(r["premise"], r["hypothesis"], r["label"]) for r in rows] == [
        ("a b", "c d", "entailment"), ("tab\there", "two\r\nlines", "neutral"), ('say "hi"', "x", "contradiction")]
    assert [r["id"] for r in rows] == ["nli-en-dev-000000", "nli-en-dev-000001", "nli-en-dev-000002"]


@pytest.mark.parametrize(("text", "line", "message"), [
    ("a\tb\tneutral\r\na\tb\r\n", 2, "expected 3 TAB-separated fields (premise, hypothesis, label), got 2"),
    ("a\tb\tneutral\r\na\tb\tneutral\tx\r\n", 2, "got 4"),
    ("a\tb\tneutral\r\na\tb\tmaybe\r\n", 2, "bad NLI label 'maybe'; allowed: entailment, neutral, contradiction"),
    # The record on lines 2-3 spans a quoted newline: the bad one starts on line 4.
    ('a\tb\tneutral\r\n"x\r\ny"\tb\tneutral\r\na\tb\t\r\n', 4, "bad NLI label ''"),
    ('a\tb\tneutral\r\n"unclosed\tb\tneutral\r\na\tb\tneutral\r\n', 2, "bad TSV quoting"),
])
def test_malformed_xnli_names_file_and_line(tmp_path, text, line, message):
    assert_format_error(tmp_path, "xnli/dev-en.tsv", text, "nli", "en", f":{line}: ", message)


@pytest.mark.parametrize(("rel", "task", "message"), [
    ("xnli/dev-en.tsv", "nli", "no rows (an empty file)"),
    ("panx/dev-en.tsv", "ner", "no sentences (an empty file)"),
    ("udpos/en_x-ud-dev.conllu", "pos", "no sentences (an empty treebank)"),
    ("mlqa/dev-context-en-question-en.json", "qa", "data: no questions"),
])
def test_empty_files_are_errors(tmp_path, rel, task, message):
    path = write(tmp_path, rel, '{"data": []}' if rel.endswith(".json") else "\r\n\n")
    with pytest.raises(DataFormatError) as err:
        load_split(f"local:{tmp_path}", task, "en", "dev")
    assert one_line(err) == f"{path}: {message}"


def test_malformed_pawsx_and_encoding(tmp_path):
    path = write(tmp_path, "pawsx/dev-de.tsv", "a\tb\t1\r\na\tb\t2\r\n")
    with pytest.raises(DataFormatError, match=rf"^{path}:2: bad paraphrase label '2'; allowed: 0, 1$"):
        load_split(f"local:{tmp_path}", "pa", "de", "dev")
    path = write(tmp_path, "pawsx/dev-fr.tsv", "a\tb\t1\r\n".encode() + b"caf\xe9\tb\t0\r\n")
    with pytest.raises(DataFormatError, match=rf"^{path}:2: not UTF-8 text"):
        load_split(f"local:{tmp_path}", "pa", "fr", "dev")


def test_token_files_tolerate_crlf_blank_runs_and_strip_lang_prefix(tmp_path):
    write(tmp_path, "panx/dev-de.tsv", "de:Berlin\tB-LOC\r\nde:ist\tO\r\n\r\n\r\nde:a:b\tO\r\n\r\n\r\n")
    records = load_split(f"local:{tmp_path}", "ner", "de", "dev")
    assert [(r["tokens"], r["ner_tags"]) for r in records] == [(["Berlin", "ist"], ["B-LOC", "O"]), (["a:b"], ["O"])]
    # Without the prefix, a colon in a token is kept as it is.
    write(tmp_path, "panx/dev-fr.tsv", "fr\tO\nde:x\tO\n")
    assert load_split(f"local:{tmp_path}", "ner", "fr", "dev")[0]["tokens"] == ["fr", "de:x"]


@pytest.mark.parametrize(("text", "line", "message"), [
    ("en:A\tO\n\nB\tO\n", 3, "token 'B' lacks the 'en:' prefix"),
    ("A\tO\nB\tB-MISC\n", 2, "unknown tag 'B-MISC'; allowed: O, B-PER"),
    ("A\tO\nB\tO\tx\n", 2, "expected token<TAB>tag, got 3 fields"),
    ("A\tO\n\tO\n", 2, "empty token"),
    ("A\tO\n\nB\nC\tO\n", 3, "got a token without a tag"),
])
def test_malformed_panx_names_file_and_line(tmp_path, text, line, message):
    assert_format_error(tmp_path, "panx/dev-en.tsv", text, "ner", "en", f":{line}: ", message)


def test_tokens_only_files_are_unlabelled(tmp_path):
    path = write(tmp_path, "panx/test-en.tsv", "A\nB\n\nC\n")
    with pytest.raises(DataUnavailable, match=rf"^{path} has no tag column .*eval.test_split=dev"):
        load_split(f"local:{tmp_path}", "ner", "en", "test")


CONLLU = """# sent_id = s1
# text = Im Haus 2 001.
1-2\tIm\t_\t_\t_\t_\t_\t_\t_\t_
1\tIn\tin\tADP\t_\t_\t3\tcase\t_\t_
2\tdem\tder\tDET\t_\t_\t3\tdet\t_\t_
3\tHaus\tHaus\tNOUN\t_\t_\t0\troot\t_\t_
3.1\tist\tsein\tAUX\t_\t_\t_\t_\t3:cop\t_
4\t2 001\t2001\tNUM\t_\t_\t3\tnummod\t_\t_
5-6\tzum\t_\t_\t_\t_\t_\t_\t_\t_
5\tzu\tzu\tADP\t_\t_\t3\tcase\t_\t_
6\tdem\tder\tDET\t_\t_\t5\tdet\t_\t_

"""


def test_conllu_fallback_fused_forms_and_cleaning(tmp_path):
    # Tags of fused forms: "Im" = In (head 3, depth 2) + dem (head 3, depth 2) → tie → first → ADP;
    # "zum" = zu (head 3, depth 2) + dem (head 5, depth 3) → zu is higher → ADP. Empty node 3.1 skipped,
    # "2 001" loses its space.
    write(tmp_path, "udpos/ud/de_gsd-ud-test.conllu", CONLLU)
    write(tmp_path, "udpos/ud/de_hdt-ud-dev.conllu", "garbage")  # another split: never read
    (r,) = load_split(f"local:{tmp_path}", "pos", "de", "test")
    assert list(zip(r["tokens"], r["pos_tags"])) == [("Im", "ADP"), ("Haus", "NOUN"), ("2001", "NUM"), ("zum", "ADP")]
    # A tag-less TSV (XTREME's test files) also falls back to the treebank.
    write(tmp_path, "udpos/test-de.tsv", "Im\nHaus\n")
    assert load_split(f"local:{tmp_path}", "pos", "de", "test")[0]["tokens"] == ["Im", "Haus", "2001", "zum"]
    # A labelled TSV wins over the treebank.
    write(tmp_path, "udpos/test-de.tsv", "Im\tADP\n")
    assert load_split(f"local:{tmp_path}", "pos", "de", "test")[0]["tokens"] == ["Im"]
    # Several treebanks of a language are concatenated in file-name order (as XTREME does).
    write(tmp_path, "udpos/ud/de_hdt-ud-test.conllu", "1\tJa\tja\tINTJ\t_\t_\t0\troot\t_\t_\n")
    (tmp_path / "udpos/test-de.tsv").unlink()
    assert [r["tokens"] for r in load_split(f"local:{tmp_path}", "pos", "de", "test")] == [
        ["Im", "Haus", "2001", "zum"], ["Ja"]]


@pytest.mark.parametrize(("text", "line", "message"), [
    ("1\tA\ta\tNOUN\t_\t_\t0\troot\t_\n", 1, "expected 10 TAB-separated CoNLL-U columns, got 9"),
    ("# c\n1\tA\ta\tNOUNY\t_\t_\t0\troot\t_\t_\n", 2, "unknown UPOS 'NOUNY'"),
    ("1\tA\ta\tNOUN\t_\t_\t0\troot\t_\t_\n3\tB\tb\tNOUN\t_\t_\t1\tx\t_\t_\n", 2, "word id 3 out of order"),
    ("1\tA\ta\tNOUN\t_\t_\tx\troot\t_\t_\n", 1, "HEAD must be a word id or 0"),
    ("2-1\tAB\t_\t_\t_\t_\t_\t_\t_\t_\n", 1, "bad multiword range '2-1'"),
    ("1-2\tAB\t_\t_\t_\t_\t_\t_\t_\t_\n1\tA\ta\tNOUN\t_\t_\t2\tx\t_\t_\n2\tB\tb\tNOUN\t_\t_\t1\tx\t_\t_\n", 2,
     "HEAD links form a cycle"),
])
def test_malformed_conllu_names_file_and_line(tmp_path, text, line, message):
    assert_format_error(tmp_path, "udpos/de_x-ud-dev.conllu", text, "pos", "de", f":{line}: ", message)


def squad(*qas: str, context: str = "Paris is in France.") -> str:
    return '{"version": "1.0", "data": [{"title": "t", "paragraphs": [{"context": "%s", "qas": [%s]}]}]}' % (
        context, ", ".join(qas))


QA1 = ('{"id": "q1", "question": "Where?", "answers": [{"text": "France", "answer_start": 12}, '
       '{"text": "in France", "answer_start": 9}]}')


def test_mlqa_found_recursively_and_squad_train(tmp_path):
    write(tmp_path, "mlqa/MLQA_V1/dev/dev-context-de-question-de.json", squad(QA1))
    (r,) = load_split(f"local:{tmp_path}", "qa", "de", "dev")
    assert r == {"id": "qa-de-dev-q1", "context": "Paris is in France.", "question": "Where?",
                 "answers": {"text": ["France", "in France"], "answer_start": [12, 9]}}
    write(tmp_path, "squad/train-v1.1.json", squad(QA1))
    assert load_split(f"local:{tmp_path}", "qa", "en", "train")[0]["id"] == "qa-en-train-q1"
    with pytest.raises(DataUnavailable, match=r"no qa training set in de \(SQuAD v1.1 train is English\)"):
        load_split(f"local:{tmp_path}", "qa", "de", "train")
    write(tmp_path, "mlqa/copy/dev-context-de-question-de.json", squad(QA1))
    with pytest.raises(DataUnavailable, match=r"2 files match mlqa/\*\*/dev-context-de-question-de.json"):
        load_split(f"local:{tmp_path}", "qa", "de", "dev")


@pytest.mark.parametrize(("text", "where", "message"), [
    ('{"data": [\n  {"paragraphs": [}\n]}', ":2: not valid JSON", "Expecting value"),
    ('{"version": "1.0"}', ": top level: ", 'expected {"data": [...]}'),
    (squad('{"id": "q1", "question": "Where?", "answers": []}'), ": data[0].paragraphs[0].qas[0]: ",
     "expected at least one answer"),
    (squad(QA1, QA1), ": data[0].paragraphs[0].qas[1]: ", "duplicate question id 'q1'"),
    (squad('{"id": "q2", "question": "Where?", "answers": [{"text": "x", "answer_start": -1}]}'),
     ": data[0].paragraphs[0].qas[0].answers[0]: ", "answer_start ≥ 0"),
])
def test_malformed_mlqa_names_file_and_place(tmp_path, text, where, message):
    assert_format_error(tmp_path, "mlqa/dev-context-es-question-es.json", text, "qa", "es", where, message)


# =========================================================================== hub


@pytest.mark.parametrize(("task", "lang", "split", "what"), [
    ("ner", "en", "dev", "google/xtreme PAN-X.en"),
    ("nli", "de", "test", "google/xtreme XNLI"),
    ("pos", "hi", "dev", "google/xtreme udpos.Hindi"),
    ("qa", "en", "train", "rajpurkar/squad"),
])
def test_hub_offline_is_one_clear_line_fast(task, lang, split, what):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # tests/conftest.py
    t0 = time.perf_counter()
    with pytest.raises(DataUnavailable) as err:
        load_split("hub", task, lang, split)
    assert time.perf_counter() - t0 < 20
    assert one_line(err) == (
        f"data.source=hub: cannot reach the Hugging Face hub for {what} (ConnectionError); "
        "use data.source=local:<dir> (XTREME download layout) or data.source=synthetic")


@pytest.fixture
def fake_hub(monkeypatch):
    """Serve in-memory datasets (with the hub's features) instead of downloading."""
    import datasets

    served: dict[tuple, datasets.Dataset] = {}
    calls: list[tuple] = []

    def load(path, name, split):
        calls.append((path, name, split))
        return served[(path, name, split)]

    from trainables.tasks.loaders import hub, mlqa, pawsx, xnli
    for module in (hub, mlqa, pawsx, xnli):  # hub serves PAN-X and udpos (tagged_sentences)
        monkeypatch.setattr(module, "load_hub_split", load)
    return datasets, served, calls


def test_hub_records_map_labels_through_features(fake_hub):
    datasets, served, calls = fake_hub
    F = datasets.Features
    seq = datasets.Sequence
    served[("google/xtreme", "PAN-X.de", "dev")] = datasets.Dataset.from_dict(
        {"tokens": [["Berlin", "ist"]], "ner_tags": [[5, 0]], "langs": [["de", "de"]]},
        features=F({"tokens": seq(datasets.Value("string")), "ner_tags": seq(datasets.ClassLabel(names=list(NER_TAGS))),
                    "langs": seq(datasets.Value("string"))}))
    served[("google/xtreme", "udpos.Chinese", "test")] = datasets.Dataset.from_dict(
        {"tokens": [["然而", "，"]], "pos_tags": [[2, 12]]},
        features=F({"tokens": seq(datasets.Value("string")),
                    "pos_tags": seq(datasets.ClassLabel(names=list(UPOS_TAGS)))}))
    served[("google/xtreme", "XNLI", "dev")] = datasets.Dataset.from_dict(
        {"language": ["en", "de", "de"], "sentence1": ["p", "P1", "P2"], "sentence2": ["h", "H1", "H2"],
         "gold_label": ["neutral", "entailment", "contradiction"]})
    served[("nyu-mll/multi_nli", None, "train")] = datasets.Dataset.from_dict(
        {"premise": ["a", "b", "c"], "hypothesis": ["x", "y", "z"], "label": [2, -1, 0]},
        features=F({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                    "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"])}))
    served[("google/xtreme", "PAWS-X.fr", "test")] = datasets.Dataset.from_dict(
        {"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": ["1", "0"]})
    served[("google/xtreme", "MLQA.hi.hi", "dev")] = datasets.Dataset.from_dict(
        {"id": ["h1"], "title": ["t"], "context": ["नई दिल्ली भारत"], "question": ["क्या?"],
         "answers": [{"answer_start": [0], "text": ["नई दिल्ली"]}]})

    # ClassLabel ids 5, 0 → B-LOC, O (google/xtreme's PAN-X names are NER_TAGS' order).
    assert load_split("hub", "ner", "de", "dev") == [
        {"id": "ner-de-dev-000000", "tokens": ["Berlin", "ist"], "ner_tags": ["B-LOC", "O"]}]
    # UPOS ids 2, 12 → ADV, PUNCT.
    assert load_split("hub", "pos", "zh", "test")[0]["pos_tags"] == ["ADV", "PUNCT"]
    # XNLI is filtered by language; positions count within the language.
    assert load_split("hub", "nli", "de", "dev") == [
        {"id": "nli-de-dev-000000", "premise": "P1", "hypothesis": "H1", "label": "entailment"},
        {"id": "nli-de-dev-000001", "premise": "P2", "hypothesis": "H2", "label": "contradiction"}]
    # MultiNLI train: ClassLabel names, the unlabelled (-1) pair dropped.
    assert [(r["premise"], r["label"]) for r in load_split("hub", "nli", "en", "train")] == [
        ("a", "contradiction"), ("c", "entailment")]
    assert [r["label"] for r in load_split("hub", "pa", "fr", "test")] == [1, 0]
    assert load_split("hub", "qa", "hi", "dev")[0]["answers"] == {"text": ["नई दिल्ली"], "answer_start": [0]}
    assert ("google/xtreme", "PAN-X.de", "dev") in calls
    with pytest.raises(DataUnavailable, match=r"no nli training set in de"):
        load_split("hub", "nli", "de", "train")
    served[("google/xtreme", "XNLI", "test")] = served[("google/xtreme", "XNLI", "dev")]
    with pytest.raises(DataUnavailable, match=r"XNLI test has no rows for language 'zh'"):
        load_split("hub", "nli", "zh", "test")


def test_hub_bad_values_are_format_errors(fake_hub):
    datasets, served, _ = fake_hub
    served[("google/xtreme", "XNLI", "dev")] = datasets.Dataset.from_dict(
        {"language": ["es"], "sentence1": ["p"], "sentence2": ["h"], "gold_label": ["-"]})
    with pytest.raises(DataFormatError, match=r"^google/xtreme XNLI dev es row 0: bad NLI label '-'"):
        load_split("hub", "nli", "es", "dev")
    served[("google/xtreme", "PAN-X.es", "dev")] = datasets.Dataset.from_dict(
        {"tokens": [["a"]], "ner_tags": [["B-MISC"]]})
    with pytest.raises(DataFormatError, match=r"^google/xtreme PAN-X.es dev row 0: unknown tag 'B-MISC'"):
        load_split("hub", "ner", "es", "dev")


def test_hub_split_names_map_dev_to_validation(monkeypatch):
    import datasets

    from trainables.tasks.loaders import hub

    seen = []
    monkeypatch.setattr(datasets, "load_dataset", lambda path, name, split: seen.append((path, name, split)) or [])
    for split in ("train", "dev", "test"):
        hub.load_hub_split("google/xtreme", "PAN-X.en", split)
    assert seen == [("google/xtreme", "PAN-X.en", s) for s in ("train", "validation", "test")]

    def unknown(path, name, split):
        raise ValueError("BuilderConfig 'PAN-X.xx' not found.\nAvailable: ...")

    monkeypatch.setattr(datasets, "load_dataset", unknown)
    with pytest.raises(DataUnavailable) as err:
        hub.load_hub_split("google/xtreme", "PAN-X.xx", "dev")
    assert one_line(err) == ("data.source=hub: cannot load google/xtreme PAN-X.xx split 'validation' "
                             "(ValueError: BuilderConfig 'PAN-X.xx' not found.); use data.source=local:<dir> "
                             "(XTREME download layout) or data.source=synthetic")
