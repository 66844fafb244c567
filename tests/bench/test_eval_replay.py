"""The evaluation replay's logic on a small shape: the product's planning and decoding loop over
the sample's real prompt lengths, counted four ways in one run."""

from __future__ import annotations

import argparse

import pytest

from tests.conftest import XTREME_SAMPLE


@pytest.mark.skipif(not XTREME_SAMPLE.is_dir(), reason="the shared XTREME sample is not here")
def test_replay_counts_steps_prefill_padding_and_cache_reads(tmp_path, monkeypatch):
    from bench.eval_replay import run
    from trainables import generation

    monkeypatch.setenv("LAMTUNE_HOME", str(tmp_path / "home"))
    args = argparse.Namespace(data=XTREME_SAMPLE, shape="llama-test", dev_per_pair=2, test_per_pair=3,
                              eval_gb=0.05, max_batch=512, mean_answer=6.0, seed=0)
    result = run(args)
    assert generation.PREFILL_LENGTH_RATIO == 0.75  # restored after the replay
    for split, per_pair in (("dev", 2), ("test", 3)):
        ways = list(result[split]["ways"].values())
        assert result[split]["items"] > 0 and len(ways) == 4
        groups, joined, runs, now = ways
        assert result[split]["shared_prefix_lengths"]  # the sample's task instructions
        # Every way decodes every prompt once; a prefill never runs fewer tokens than its prompts.
        assert groups["prompt_tokens"] == joined["prompt_tokens"] == runs["prompt_tokens"] == now["prompt_tokens"]
        assert all(w["prefill_tokens"] >= w["prompt_tokens"] for w in ways[:3])
        assert sum(n for n, _ in groups["streams"]) == result[split]["items"]
        # Splitting admissions by length changes prefills only: same streams, same steps, less padding.
        assert runs["streams"] == joined["streams"] and runs["decode_steps"] == joined["decode_steps"]
        assert runs["prefill_tokens"] <= joined["prefill_tokens"] and runs["prefills"] >= joined["prefills"]
        # Shared prefixes change prefills only too: fewer tokens run, the rest served by the prefixes.
        assert now["streams"] == runs["streams"] and now["decode_steps"] == runs["decode_steps"]
        assert now["prefix_tokens"] > 0 and runs["prefix_tokens"] == 0
        assert now["prefill_tokens"] < runs["prefill_tokens"] and now["prefills"] >= runs["prefills"]
        assert now["prefill_tokens"] + now["prefix_tokens"] >= now["prompt_tokens"]
        # The same streams and steps read the same cache; every step reads at least one cell a row.
        assert now["kv_reads"] == runs["kv_reads"] == joined["kv_reads"] >= now["decode_steps"]
    # The last evaluation's one pass over both splits: every item, fewer steps than two passes.
    final = result["final"]["ways"]
    assert result["final"]["items"] == result["dev"]["items"] + result["test"]["items"]
    for name, way in final.items():
        assert way["prompt_tokens"] == sum(result[s]["ways"][name]["prompt_tokens"] for s in ("dev", "test"))
    now = list(final)[-1]
    assert final[now]["decode_steps"] < sum(result[s]["ways"][now]["decode_steps"] for s in ("dev", "test"))
