"""The generation benchmark's logic on a CPU: it runs the product's evaluation in its eight
settings (eager, then CUDA graphs, grouped attention, reused decoders, merged LoRA, pooled tasks,
shared prefixes and fused RMSNorm added one at a time — graphs run eagerly off a GPU), and on the
pre-trained tiny default in fp32 every setting gives eager's texts."""

from __future__ import annotations

import argparse

import pytest

from tests.conftest import XTREME_SAMPLE


@pytest.mark.skipif(not XTREME_SAMPLE.is_dir(), reason="the shared XTREME sample is not here")
def test_generation_benchmark_runs_on_the_tiny_shape(tmp_path):
    from bench.generation_gpu import run

    args = argparse.Namespace(data=XTREME_SAMPLE, out=tmp_path, work=tmp_path / "work", shape="llama-test", per_pair=1,
                              repeat=False, profile=True, max_new=4)
    result = run(args)
    settings = result["settings"]
    names = ["eager", "cuda_graphs", "cuda_graphs+grouped", "+reuse", "+merged", "+pooled tasks", "+shared prefixes",
             "+fused RMSNorm (default)"]
    assert set(names) | {"profile", "prefill"} == set(settings)
    for name in names:
        s = settings[name]
        assert s["examples"] == result["items"] > 0 and 0 < s["generated_tokens"] <= 4 * s["examples"]
        assert 0 < s["decoders"] <= s["batches"]
    assert settings["cuda_graphs"]["decoders"] >= settings["+reuse"]["decoders"]  # reuse builds no more
    assert set(result["ratio_tok_per_s"]) == set(names[1:])
    tiny = result["tiny_fp32_check"]
    assert tiny["items"] > 0 and tiny["differing_texts"] == {name: 0 for name in names[1:]}
    assert settings["profile"]["task"] == "ner" and settings["profile"]["decode_steps"] > 0
    pre = settings["prefill"]  # every dev and test prompt (1 of each per pair), padded to its admission's longest
    assert pre["prompts"] == 2 * result["items"] and pre["padded_tokens"] >= pre["prompt_tokens"] > 0
    assert pre["tok_per_s"] > 0 and pre["gpu_busy_pct"] is None  # no CUDA events on a CPU
    assert result["graphs_off_reason"] is None
