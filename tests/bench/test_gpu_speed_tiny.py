"""The GPU benchmark's logic on a CPU (`--tiny`): it runs end to end, and the step it times for
lamtune is the product's own `train_step` (λ policy, bookkeeping and all)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def test_product_step_is_the_loops_train_step():
    from bench.harness import TINY
    from bench.product_step import ProductStep
    from trainables.tasks.schema import TASKS

    torch.manual_seed(0)
    st = ProductStep(TINY, torch.device("cpu"), torch.float32, "lora", 0.0, lam=0.25)
    first = st.step()
    # Scalars by key from train_step: the fixed policy's λ for each task in the batch, finite losses.
    lam = {k: v for k, v in first.items() if k.startswith("lambda/")}
    assert lam and all(v == pytest.approx(0.25) for v in lam.values())
    assert set(lam) <= {f"lambda/{t}/mean" for t in TASKS}
    assert first["train/kd"] > 0 and first["train/loss"] == pytest.approx(first["train/ce"] + 0.25 * first["train/kd"],
                                                                        rel=1e-5)
    before = [p.detach().clone() for p in st.state.params]
    st.step()
    assert st.state.tokens_seen == 2 * TINY.batch * TINY.answer
    assert any(not torch.equal(a, p) for a, p in zip(before, st.state.params))  # the optimizer stepped


def test_tiny_benchmark_runs_end_to_end(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "bench" / "gpu_speed.py"), "--tiny", "--in-process", "--reps", "1",
           "--sections", "seed,ours,graphs_check", "--variants", "lora_d0_eager,lora_d0_eager_graphs", "--out", str(out)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["seed"]["step_s"] > 0 and res["ours"]["lora_d0_eager"]["step_s"] > 0, res
    assert res["ours"]["lora_d0_eager_graphs"]["step_s"] > 0, res
    assert "ours lora_d0_eager" in done.stdout
    # Off a GPU the graph path runs its padded, unmasked passes eagerly: the same losses.
    check = res["graphs_check"]
    assert len(check["eager"]) == len(check["graphs"]) == check["steps"] and check["max_rel_diff"] < 1e-4


def test_variant_names_parse_with_their_suffixes():
    from bench.gpu_speed import _base_variant

    assert _base_variant("lora_d0.05_eager_graphs_meta") == "lora_d0.05_eager"
    assert _base_variant("lora_d0.05_eager_graphs_hfnorm_meta") == "lora_d0.05_eager"
    assert _base_variant("lora_d0.05_eager_graphs_hfnorm_peftlora_meta") == "lora_d0.05_eager"
    assert _base_variant("lora_d0.05_compile_peft32") == "lora_d0.05_compile"
    assert _base_variant("lora_d0_compilefull_cg") == "lora_d0_compilefull"


def test_variants_keep_or_swap_the_products_rmsnorm_and_lora_forward():
    from bench.gpu_speed import variant_step
    from bench.harness import TINY

    def classes(variant: str, suffix: str) -> set[str]:
        step = variant_step(TINY, torch.device("cpu"), torch.float32, variant)
        return {type(m).__name__ for m in step.state.model.modules() if type(m).__name__.endswith(suffix)}

    assert classes("lora_d0_eager", "RMSNorm") == {"FusedLlamaRMSNorm"}  # what the product's load_model does
    assert classes("lora_d0_eager_hfnorm", "RMSNorm") == {"LlamaRMSNorm"}
    assert classes("lora_d0_eager", "Linear") == {"Linear", "LeanLinear", "ActivationDtypeLinear"}  # add_lora's
    assert classes("lora_d0_eager_peftlora", "Linear") == {"Linear", "ActivationDtypeLinear"}
    assert classes("lora_d0_eager_peft32", "Linear") == {"Linear"}  # PEFT's own adapters, as before


def test_the_meta_variant_steps_with_the_meta_policy_and_its_probe():
    from bench.harness import TINY
    from bench.product_step import ProductStep

    torch.manual_seed(0)
    st = ProductStep(TINY, torch.device("cpu"), torch.float32, "lora", 0.0, policy="meta")
    reports = [st.step() for _ in range(10)]
    assert st.state.policy.name == "meta" and st.state.dev_draws == 1  # one dev gradient, at step 10
    # The split backward (each task's KD apart) ran at the probe step only.
    assert "train/split_backward_s" in reports[-1] and not any("train/split_backward_s" in r for r in reports[:-1])
    with pytest.raises(ValueError, match="policy must be"):
        ProductStep(TINY, torch.device("cpu"), torch.float32, "lora", 0.0, policy="entropy")
