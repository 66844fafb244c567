"""The CLI's contract with users: presets list, resolved configs, and one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tuner.loading import SpecError, load_spec


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuner", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["sweep", "nope", "--dry-run"], "unknown preset 'nope'; available: "),
        (["sweep", "smoke", "--set", "train.stepz=3", "--dry-run"], "unknown key 'train.stepz'; did you mean 'train.steps'?"),
        (["sweep", "smoke", "--set", "train.steps=-1", "--dry-run"], "train.steps: Input should be greater than or equal to 0"),
        (["sweep", "smoke", "--set", "train.kd_loss=l2", "--dry-run"], "train.kd_loss: Input should be 'forward_kl', 'topk_kl'"),
        (["sweep", "smoke", "--set", "data.tasks=[nli,xnli]", "--dry-run"], "data.tasks: unknown task(s) ['xnli']; allowed: nli, pa, qa, ner, pos"),
        (["sweep", "smoke", "--set", "bogus=1", "--dry-run"], "unknown key 'bogus'; allowed: name, description"),
        (["sweep", "smoke", "--set", "train.steps", "--dry-run"], "expected key=value"),
        (["show", "smoke", "--set", "data.source=s3://x"], "data.source: must be 'synthetic', 'hub' or 'local:<dir>'"),
    ],
)
def test_bad_input_is_one_clear_line(args, expected):
    r = _cli(*args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert expected in lines[0]
    assert "Traceback" not in r.stderr


def test_presets_show_and_dry_run():
    r = _cli("presets")
    assert r.returncode == 0 and "smoke" in r.stdout
    r = _cli("show", "smoke", "--set", "train.steps=7")
    assert r.returncode == 0 and "steps: 7" in r.stdout and "# trials: sft, control λ=0.5, base, fewshot" in r.stdout
    r = _cli("sweep", "smoke", "--dry-run", "--storage", "/nonexistent/x")
    assert r.returncode == 0
    assert "distill λ=0.5" in r.stdout and "teacher caches: fewshot, zeroshot" in r.stdout


def test_spec_expansion_adds_protected_baselines():
    spec = load_spec("smoke")
    labels = [v.label for v in spec.expanded_variants()]
    assert labels == ["sft", "control λ=0.5", "base", "fewshot", "distill λ=0.05", "distill λ=0.5"]
    assert all(v.protected for v in spec.expanded_variants() if v.condition in ("sft", "control"))
    assert not any(v.protected for v in spec.expanded_variants() if v.condition == "distill")
    assert spec.teacher_modes() == ["fewshot", "zeroshot"]
    with pytest.raises(SpecError, match="batch_size"):
        load_spec("smoke", ["resources.num_workers=64"])
    with pytest.raises(SpecError, match="labels must be unique"):
        load_spec("smoke", ["distill_lambdas=[0.5, 0.5]"])
