"""The results vocabulary: every builder's exact key, the parser's reading of it, and no other
module spelling a key by hand."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from trainables.metric_keys import (
    ALL,
    AVG,
    KeyParts,
    diag_key,
    eval_key,
    gen_key,
    lambda_key,
    mem_key,
    on_test,
    parse_key,
    time_key,
    train_key,
)

ROOT = Path(__file__).resolve().parents[2]
PREFIXES = ("test/", "train/", "gen/", "mem/", "time/", "lambda/", "diag/")


@pytest.mark.parametrize("key, parts", [
    (eval_key("ner", "hi", "f1"), KeyParts("dev", "ner", "hi", "f1")),
    (eval_key("ner", "hi", "f1", split="test"), KeyParts("test", "ner", "hi", "f1")),
    (eval_key("qa", AVG), KeyParts("dev", "qa", "avg", "headline")),
    (eval_key(ALL, AVG, split="test"), KeyParts("test", "all", "avg", "headline")),
    (train_key("ce"), KeyParts("train", "all", "all", "ce")),
    (lambda_key("pos"), KeyParts("train", "pos", "all", "lambda")),
    (diag_key("nli", "teacher_ce"), KeyParts("train", "nli", "all", "teacher_ce")),
])
def test_builders_and_the_parser_agree(key, parts):
    assert parse_key(key) == parts


def test_the_keys_as_spelled():
    assert [eval_key("ner", "hi", "f1"), eval_key("ner", AVG), eval_key(ALL, AVG), on_test(eval_key(ALL, AVG)),
            eval_key("pa", "de", "parse_fail", split="test")] == [
        "ner/hi/f1", "ner/avg", "avg", "test/avg", "test/pa/de/parse_fail"]
    assert [train_key("lr"), lambda_key("qa"), diag_key("pos", "meta_lam")] == [
        "train/lr", "lambda/qa/mean", "diag/pos/meta_lam"]
    assert [gen_key("tokens"), on_test(gen_key("seconds")), mem_key("peak_gpu_gb"), time_key("eval_s")] == [
        "gen/tokens", "test/gen/seconds", "mem/peak_gpu_gb", "time/eval_s"]


def test_reported_bookkeeping_is_not_a_result():
    for key in (gen_key("tokens"), on_test(gen_key("tokens")), mem_key("peak_rss_gb"), time_key("train_s"),
                "step", "eval_index", "final"):
        assert parse_key(key) is None, key


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings or bare statement strings."""
    return {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}


def _spelled_keys(path: Path) -> list[tuple[int, str]]:
    """(line, literal) of key-like literals in a file: a string or f-string starting 'train/', 'gen/' …,
    an f-string ending '/avg', or the bare 'avg'."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _docstrings(tree)
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            head = node.values[0] if node.values else None
            tails = [v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
            if (isinstance(head, ast.Constant) and str(head.value).startswith(PREFIXES)) or "/avg" in tails:
                hits.append((node.lineno, ast.unparse(node)))
            skip.update(id(v) for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            if node.value.startswith(PREFIXES) or node.value == "avg":
                hits.append((node.lineno, repr(node.value)))
    return hits


def test_no_module_but_metric_keys_spells_a_key():
    files = [p for pkg in ("trainables", "tuner", "analysis", "bench", "search_spaces")
             for p in sorted((ROOT / pkg).rglob("*.py")) if p.name != "metric_keys.py"]
    assert len(files) > 50
    assert [f"{f.relative_to(ROOT)}:{line} {text}" for f in files for line, text in _spelled_keys(f)] == []


def test_the_scan_sees_keys_spelled_by_hand(tmp_path):
    src = tmp_path / "probe.py"
    src.write_text('"""docstring: train/ce is fine here."""\nK = f"diag/{t}/x"\nA = "avg"\nB = f"{t}/avg"\n'
                   'C = "mem/peak_gpu_gb"\nD = "Avg"\nE = f"x {t} avg"\n')
    assert [line for line, _ in _spelled_keys(src)] == [2, 3, 4, 5]
