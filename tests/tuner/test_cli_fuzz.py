"""Bad input, fuzzed: over a thousand invalid sweep configurations through the CLI's entry
function (wrong keys, types and ranges; unknown tasks, languages, policies, presets; malformed
YAML; bad --set syntax). Each must exit 2 with one line on stderr that names the field, no
traceback, before Ray starts, and with nothing written to the storage."""

from __future__ import annotations

import contextlib
import copy
import io
import random
import shutil
import types
import typing
from pathlib import Path
from typing import Any, Iterator, Literal

import pytest
import yaml
from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel

from tuner import cli, sweep
from tuner.spec import SweepSpec

N_RANDOM = 900  # on top of the enumerated cases: well over 1,000 in all
JUNK = ["zz", "Xq", "nope", "tpyo", "a-b", "__x", "1", "é"]


def _fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(dotted path, annotation, FieldInfo) of every leaf field, recursing into sub-sections."""
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _fields(ann, path + ".")
        else:
            yield path, ann, info


LEAVES = list(_fields(SweepSpec))


def _wrong_types(ann: Any) -> list[Any]:
    """Values no lax validation accepts for this annotation."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin in (typing.Union, types.UnionType):
        kinds = [a for a in args if a is not type(None)]
        if all(a is str for a in kinds):
            return [[1, 2], {"a": 1}]
        if all(a in (int, float) for a in kinds):
            return ["abc", [1], {"a": 1}]
        return []
    if origin is Literal:
        return ["zzz-not-allowed", [1], {"a": 1}]
    if ann is bool:
        return ["maybe", [1], {"a": 1}]
    if ann in (int, float):
        return ["abc", "1..2", [1], {"a": 1}]
    if ann is str:
        return [[1, 2], {"a": 1}]
    if origin is list:
        return [5, {"a": 1}, "text"] if args and args[0] is not str else [5, {"a": 1}]
    if origin is dict:
        return [3, [1, 2], "text"]
    return []


def _out_of_range(info: Any) -> list[Any]:
    out = []
    for m in info.metadata:
        if isinstance(m, Ge):
            out.append(m.ge - 1 if isinstance(m.ge, int) else m.ge - 0.5)
        elif isinstance(m, Gt):
            out.append(m.gt)
        elif isinstance(m, Le):
            out.append(m.le + 1)
        elif isinstance(m, Lt):
            out.append(m.lt)
        elif isinstance(m, MinLen) and m.min_length >= 1:
            out.append([] if info.annotation is not str else "")
        elif isinstance(m, MaxLen) and info.annotation is str:
            out.append("a" * (m.max_length + 1))
    return out


def _yaml(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)  # JSON is YAML


def enumerated_cases() -> list[tuple[list[str], str]]:
    """(argv after `sweep`, a substring the error line must contain)."""
    cases: list[tuple[list[str], str]] = []
    for path, ann, info in LEAVES:
        for v in _wrong_types(ann) + _out_of_range(info):
            cases.append((["smoke", "--set", f"{path}={_yaml(v)}"], path))
    for path, _, _ in LEAVES:
        parent = path.rsplit(".", 1)[0] + "." if "." in path else ""
        cases.append((["smoke", "--set", f"{parent}{path.rsplit('.', 1)[-1]}x=1"], f"{parent}{path.rsplit('.', 1)[-1]}x"))
    domain = [
        ("data.tasks=[nli, xnli]", "data.tasks"), ("data.tasks=[]", "data.tasks"),
        ("data.eval_langs=[en, kl]", "data.eval_langs"), ("data.train_lang=kl", "data.train_lang"),
        ("data.shots={foo: 1}", "data.shots"), ("data.shots={nli: -1}", "data.shots"),
        ("eval.max_new_tokens={foo: 1}", "eval.max_new_tokens"), ("eval.max_new_tokens={qa: 0}", "eval.max_new_tokens"),
        ("data.synthetic_sizes={train: -1}", "data.synthetic_sizes"), ("data.synthetic_sizes={valid: 3}", "data.synthetic_sizes"),
        ("variants=[{condition: distill, policy: {name: nope}}]", "variants"),
        ("variants=[{condition: teach}]", "variants"), ("variants=[{condition: distill, bogus: 1}]", "variants"),
        ("variants=[{condition: distill, policy: {name: fixed, params: {lam: -3}}}]", "variants"),
        ("variants=[{condition: distill, policy: {name: fixed, params: {lamb: 0.1}}}]", "variants"),
        ("variants=[{condition: distill, policy: {name: task_prior, params: {lams: {nli: 0.1}}}}]", "variants"),
        ("variants=[{condition: distill, teacher_mode: oracle}]", "variants"),
        ("grids=[{kind: zz}]", "grids"), ("grids=[{kind: entropy, args: {bogus: [1]}}]", "grids"),
        ("search.families=[nope]", "search.families"), ("search.ranges={fixed.lam: [a]}", "search.ranges"),
        ("distill_lambdas=[-1]", "distill_lambdas"), ("distill_lambdas=[.inf]", "distill_lambdas"),
        ("distill_lambdas=[.nan]", "distill_lambdas"), ("train.lr=.nan", "train.lr"),
        ("train.kd_temperature=.inf", "train.kd_temperature"), ("control_lambda=.nan", "control_lambda"),
        ("name=bad/name", "name"), ("name=", "name"),
        ("data.source=local:/nonexistent/xtreme", "data.source"), ("data.source=ftp://x", "data.source"),
        ("data.source=hubb", "data.source"),
    ]
    for text, field in domain:
        cases.append((["smoke", "--set", text], field))
        if text.startswith("search."):
            cases.append((["smoke", "--set", "search.searcher=optuna", "--set", text], field))
    # Bad --set syntax.
    for text, field in [("train.steps", "train.steps"), ("=3", "--set"), ("train..steps=3", "train..steps"),
                        (".steps=3", ".steps"), ("train.=3", "train."), ("train.steps.x=3", "train.steps"),
                        ("model.tiny.hidden_size.y=3", "model.tiny.hidden_size"), ("a b=3", "a b")]:
        cases.append((["smoke", "--set", text], field))
    cases += [(["no-such-preset"], "no-such-preset"), (["smoke.yml"], "smoke.yml")]
    return cases


def random_cases(rng: random.Random, tmp: Path) -> list[tuple[list[str], str]]:
    """Random wrong keys, types and ranges at random fields, and randomly corrupted YAML files."""
    cases: list[tuple[list[str], str]] = []
    smoke = (Path(sweep.__file__).parents[1] / "search_spaces" / "presets" / "smoke.yaml").read_text()
    smoke_data = yaml.safe_load(smoke)
    corruptions = [": : :\n", "[unclosed\n", "\tkey: 1\n", "key: {a: 1\n", "- list\n", "@bad\n", "&a *b\n", "'open\n"]
    for i in range(N_RANDOM):
        kind = rng.randrange(4)
        path, ann, info = rng.choice(LEAVES)
        if kind == 0:  # an unknown key at a random depth
            parts = path.split(".")
            cut = rng.randrange(len(parts))
            key = ".".join(parts[:cut] + [parts[cut] + rng.choice(JUNK)])
            cases.append((["smoke", "--set", f"{key}={rng.randrange(100)}"], key))
        elif kind == 1 and (bad := _wrong_types(ann) + _out_of_range(info)):
            cases.append((["smoke", "--set", f"{path}={_yaml(rng.choice(bad))}"], path))
        elif kind == 2:  # a sweep file with a corrupted line
            lines = smoke.splitlines(keepends=True)
            lines.insert(rng.randrange(len(lines)), rng.choice(corruptions))
            f = tmp / f"broken-{i}.yaml"
            f.write_text("".join(lines))
            cases.append(([str(f)], f.name))
        else:  # a sweep file with a bad value at a random field
            bad = _wrong_types(ann) + _out_of_range(info)
            if not bad:
                continue
            data = copy.deepcopy(smoke_data)
            node = data
            parts = path.split(".")
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = rng.choice(bad)
            f = tmp / f"bad-{i}.yaml"
            f.write_text(yaml.safe_dump(data, allow_unicode=True))
            cases.append(([str(f)], path))
    return cases


def test_a_thousand_invalid_configs_exit_2_with_one_line_naming_the_field(tmp_path, monkeypatch):
    def no_ray(*a: Any, **k: Any) -> None:
        raise AssertionError("Ray started before validation")

    monkeypatch.setattr(sweep, "init_ray", no_ray)
    storage = tmp_path / "storage"
    files = tmp_path / "files"
    files.mkdir()
    cases = enumerated_cases() + random_cases(random.Random(12), files)
    assert len(cases) >= 1000
    failures = []
    for argv, field in cases:
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                rc = cli.main(["sweep", *argv, "--storage", str(storage)])
            except BaseException as exc:  # noqa: BLE001 - a crash is a finding
                rc = f"raised {type(exc).__name__}: {exc}"
        lines = err.getvalue().splitlines()
        ok = (rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and field in lines[0]
              and "Traceback" not in err.getvalue() and not storage.exists())
        if not ok:
            failures.append(f"{argv} -> rc={rc} stderr={err.getvalue()!r} (want {field!r})"
                            f"{' storage written' if storage.exists() else ''}")
            shutil.rmtree(storage, ignore_errors=True)
    assert not failures, f"{len(failures)} of {len(cases)} cases:\n" + "\n".join(failures[:30])
