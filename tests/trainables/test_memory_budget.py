"""Host memory of a trial on real data: the README's real-data command (smoke preset, the XTREME
sample, train and evaluate on dev) at a few steps, run through `run_worker` in a fresh process,
stays within a stated peak-RSS budget and reports that peak as `mem/peak_rss_gb`.

Before the fix, evaluation batched MLQA prompts by count (eval.batch_size 64): one padded batch
of ~7.8k-token prompts (the tiny tokenizer on real Hindi/Chinese contexts) held a rows × width²
attention mask, and a trial peaked at 13 GB (OOM-killed on a 24 GB machine with 4 trials)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, XTREME_SAMPLE

#: Peak resident memory allowed for the whole trial process (torch + model + data + evaluation).
BUDGET_GB = 1.5
SCRIPT = """
import json, sys, torch
from trainables.evaluate import eval_items
from trainables.loop import run_worker
from trainables.models import load_tokenizer
from tuner.loading import load_spec
spec = load_spec("smoke", sys.argv[1:])
cfg = next(t for t in spec.trial_configs("", {}) if t.variant.condition == "sft")
longest = max(len(i.prompt_ids) for i in eval_items(cfg, load_tokenizer(cfg.model), "dev", cfg.eval.dev_per_pair, False))
reports = []
run_worker(cfg, "t", 0, 1, torch.device("cpu"), reports.append)
print(json.dumps({"longest": longest, "peaks": [r["mem/peak_rss_gb"] for r in reports]}))
"""


def run_trial(dev_per_pair: int) -> dict:
    """The real-data command's shape, QA and NER only, 2 steps; returns the longest prompt and the peaks."""
    overrides = [
        f"data.source=local:{XTREME_SAMPLE}", "data.train_split=dev", "eval.test_split=dev",
        "data.tasks=[qa, ner]", "data.max_train_per_task=8", "train.steps=2", "train.eval_every=2",
        "train.batch_size=4", "train.warmup_steps=1", f"eval.dev_per_pair={dev_per_pair}",
        f"eval.test_per_pair={dev_per_pair}", "eval.max_new_tokens={qa: 2, ner: 2}", "eval.save_predictions=false",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", SCRIPT, *overrides], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not XTREME_SAMPLE.is_dir(), reason="shared XTREME sample not present")
def test_real_data_trial_stays_within_its_memory_budget():
    got = run_trial(dev_per_pair=8)
    assert got["longest"] > 4000  # the long MLQA contexts that caused the blow-up are evaluated
    assert got["peaks"] and all(0 < p for p in got["peaks"])
    assert got["peaks"] == sorted(got["peaks"])  # a running peak
    assert got["peaks"][-1] <= BUDGET_GB, f"peak RSS {got['peaks'][-1]:.2f} GB > budget {BUDGET_GB} GB"


def test_cpu_batches_bound_rows_and_attention_area(tiny_dir):
    import torch

    from trainables.config import ModelConfig
    from trainables.generation import batch_size_for
    from trainables.models import load_model

    config = load_model(ModelConfig(name="tiny"), torch.device("cpu"), trainable=False).config
    for prompt in (10, 300, 2000, 7800):
        rows = batch_size_for(config, torch.float32, prompt, 20, 2**40, 64, attention_area=2**23)
        width = prompt + 20
        assert rows <= 64 and (rows == 1 or rows * width**2 <= 2**23)
    assert batch_size_for(config, torch.float32, 7800, 20, 2**40, 64, attention_area=2**23) == 1  # long prompts alone
    assert batch_size_for(config, torch.float32, 10, 20, 2**40, 64, attention_area=2**23) == 64


def test_growing_segments_is_asked_of_the_allocator_and_a_refusal_is_said_not_raised(monkeypatch, capsys):
    import torch

    from trainables.memory import grow_segments

    asked = []
    monkeypatch.setattr(torch.cuda.memory, "_set_allocator_settings", asked.append)
    assert grow_segments() and asked == ["expandable_segments:True"]

    def refuse(setting):
        raise RuntimeError("not supported by this allocator")

    monkeypatch.setattr(torch.cuda.memory, "_set_allocator_settings", refuse)
    assert grow_segments() is False
    assert "expandable segments not set (RuntimeError: not supported by this allocator)" in capsys.readouterr().out


def test_a_process_started_from_a_large_one_reports_its_own_peak():
    """`peak_rss_gb` is this program's own high-water mark: Linux's ru_maxrss starts a forked child
    at its parent's size and keeps it across exec (a trial run from a ~1.8 GB test runner once
    reported 1.8 GB, its own peak being ~0.9)."""
    from trainables.memory import peak_rss_gb

    big = bytearray(600 * 2**20)
    big[::4096] = b"\x01" * len(big[::4096])  # touch every page: resident
    code = "from trainables.memory import peak_rss_gb; print(peak_rss_gb())"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = float(subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                                 check=True).stdout)
    assert peak_rss_gb() > 0.55  # this process holds the 600 MB
    assert 0 < child < 0.3, f"a fresh interpreter reported {child:.2f} GB"
    if sys.platform == "linux":  # what the old reading gave the child: at least the parent's size at fork
        inherited = subprocess.run([sys.executable, "-c", "import resource; print(resource.getrusage("
                                    "resource.RUSAGE_SELF).ru_maxrss)"], capture_output=True, text=True, check=True)
        assert int(inherited.stdout) * 1024 / 2**30 > 0.55 > child
    del big
