"""The training step's recorded decoder passes (trainables/train_graphs.py), checked on the CPU where
the same padding and unmasked causal forward run eagerly: the hidden states, logits and gradients
equal the masked forward's, a trial trains the same through them, and the steps and forwards that
must not replay a graph (split gradients, evaluation, meta-λ's dev gradient) take the eager decoder.
The capture itself needs a GPU: bench/gpu_speed.py checks it against eager steps there."""

from __future__ import annotations

import pytest
import torch

from tests.trainables.test_loop_policies import CPU, base_config, cache, run  # noqa: F401 (fixture)
from trainables.alignment import collate, encode
from trainables.config import ModelConfig, TrainConfig, TrialConfig
from trainables.loop import record_decoder_passes, setup, train_step
from trainables.metric_keys import time_key, train_key
from trainables.models import AnswerSpanLM, load_model, load_tokenizer
from trainables.train_graphs import BUCKET, PACK_BUCKET, DecoderGraphs, packing, train_graphs_enabled


@pytest.mark.parametrize("length,padded", [(1, BUCKET), (BUCKET, BUCKET), (BUCKET + 1, 2 * BUCKET), (300, 320)])
def test_batches_are_padded_to_the_next_bucket(length, padded):
    assert DecoderGraphs(torch.nn.Identity(), 0, capture=False).padded_length(length) == padded


@pytest.mark.parametrize("asked,device,world,compiled,on", [
    (True, "cuda", 1, False, True), (False, "cuda", 1, False, False), (True, "cpu", 1, False, False),
    (True, "cuda", 2, False, False), (True, "cuda", 1, True, False),
])
def test_graphs_are_recorded_only_on_one_gpu_worker_with_eager_layers(asked, device, world, compiled, on):
    assert train_graphs_enabled(asked, device, world, compiled) is on


def test_the_setting_defaults_on_and_is_a_boolean():
    assert TrainConfig().cuda_graphs is True
    with pytest.raises(ValueError, match="cuda_graphs"):
        TrialConfig.model_validate({"train": {"cuda_graphs": "sometimes"}})


def _lora_student(tiny_dir):
    cfg = ModelConfig(name="tiny", dtype="float32", lora_dropout=0.0)
    torch.manual_seed(0)
    model = load_model(cfg, CPU, trainable=True).train()
    with torch.no_grad():  # LoRA's B starts at zero: make the adapters matter to the gradients
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    return model, load_tokenizer(cfg)


def _batch(tok):
    texts = [("Premise: a cat sat. Hypothesis: an animal sat. Answer:", " entailment"),
             ("Tag the words: the quick brown fox jumps over the lazy dog near the river bank today", " DET ADJ ADJ NOUN"),
             ("Q: where?", " here")]
    return collate([encode(tok, p, a, True) for p, a in texts], tok.pad_token_id, "right")


def _logits_and_grads(span: AnswerSpanLM, b) -> tuple[torch.Tensor, list[torch.Tensor]]:
    span.zero_grad(set_to_none=True)
    logits = span(b.input_ids, b.attention_mask, b.position_ids, b.rows, b.cols)
    torch.nn.functional.cross_entropy(logits, b.targets).backward()
    return logits.detach(), [p.grad.clone() for p in span.parameters() if p.requires_grad]


@pytest.mark.parametrize("attention,direct", [("sdpa", True), ("eager", False)])
def test_the_padded_unmasked_forward_equals_the_masked_one(tiny_dir, attention, direct):
    from trainables.train_graphs import runs_layers_directly

    model, tok = _lora_student(tiny_dir)
    model.get_base_model().set_attn_implementation(attention)
    # SDPA decoders run their layers directly (no mask built); others are called whole, causal.
    assert runs_layers_directly(model.get_base_model().get_decoder()) is direct
    b = _batch(tok)
    lengths = b.attention_mask.sum(-1)
    assert len(set(lengths.tolist())) == 3 and b.input_ids.shape[1] % BUCKET != 0  # ragged, padded further
    span = AnswerSpanLM(model)
    masked_logits, masked_grads = _logits_and_grads(span, b)
    graphs = DecoderGraphs(model.get_base_model().get_decoder(), tok.pad_token_id, capture=False)
    span.graphs = graphs
    logits, grads = _logits_and_grads(span, b)
    assert graphs.shapes == 1 and graphs.recorded == 1
    # Direct (SDPA) decoders pack the 3 rows into one; the others pad every row to the bucket.
    total = int(lengths.sum())
    assert list(graphs.graphs) == ([(1, PACK_BUCKET)] if direct else [(3, BUCKET)]) and total < PACK_BUCKET
    torch.testing.assert_close(logits, masked_logits, rtol=1e-5, atol=1e-5)
    assert len(grads) == len(masked_grads) > 0
    for g, ref in zip(grads, masked_grads):
        torch.testing.assert_close(g, ref, rtol=1e-4, atol=1e-6)
    # The hidden states themselves, at every real position.
    hidden = graphs(b.input_ids)
    ref = model.get_base_model().get_decoder()(input_ids=b.input_ids, attention_mask=b.attention_mask,
                                               position_ids=b.position_ids).last_hidden_state
    real = b.attention_mask.bool()
    torch.testing.assert_close(hidden[real], ref[real], rtol=1e-5, atol=1e-5)


class Counting(DecoderGraphs):
    """DecoderGraphs that counts the forwards it served."""

    calls = 0

    def answer_hidden(self, *args):
        type(self).calls += 1
        return super().answer_hidden(*args)


def test_eval_mode_no_grad_and_split_steps_take_the_eager_decoder(tiny_dir):
    model, tok = _lora_student(tiny_dir)
    b = _batch(tok)
    span = AnswerSpanLM(model)
    Counting.calls = 0
    span.graphs = Counting(model.get_base_model().get_decoder(), tok.pad_token_id, capture=False)
    args = (b.input_ids, b.attention_mask, b.position_ids, b.rows, b.cols)
    span(*args)
    assert Counting.calls == 1
    with torch.no_grad():
        span(*args)
    model.eval()
    span(*args)
    model.train()
    span.use_graphs = False
    span(*args)
    assert Counting.calls == 1


def test_a_trial_trains_the_same_through_the_graph_path(cache, monkeypatch):
    import trainables.loop as loop

    cfg = base_config(cache, steps=4, eval_every=2)
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"lora_dropout": 0.0})})
    policy = {"name": "fixed", "params": {"lam": 0.5}}
    eager_reports, eager_weights = run(cfg, policy=policy)
    monkeypatch.setattr(loop, "train_graphs_enabled", lambda *a: True)  # the CPU runs the same passes eagerly
    reports, weights = run(cfg, policy=policy)
    for mine, ref in zip(reports, eager_reports):
        for key in (train_key("ce"), train_key("kd"), train_key("loss")):
            assert mine[key] == pytest.approx(ref[key], rel=1e-4), key
        # Recorded once, kept through the evaluations between steps.
        assert mine[train_key("graph_shapes")] >= 1 and mine[time_key("graph_record_s")] > 0
    assert train_key("graph_shapes") not in eager_reports[0]
    assert eager_weights.keys() == weights.keys()
    # Adam divides by √v: a weight whose gradient is ~0 can move by a different fraction of one
    # step (lr 3e-3) from float rounding alone; every weight agrees to a tenth of a step.
    for k in weights:
        torch.testing.assert_close(weights[k], eager_weights[k], rtol=1e-4, atol=3e-4)


def test_split_gradient_steps_run_eager_and_the_others_replay(cache, monkeypatch):
    import trainables.loop as loop

    monkeypatch.setattr(loop, "train_graphs_enabled", lambda *a: True)
    cfg = base_config(cache, steps=4, eval_every=4)
    meta = {"name": "meta", "params": {"lam_max": 0.1, "every": 2, "val_batch": 2, "val_per_pair": 1}}
    from trainables.config import PolicyConfig, VariantConfig

    cfg = cfg.model_copy(update={"variant": VariantConfig(condition="distill", policy=PolicyConfig(**meta))})
    state = setup(cfg, "t", 0, 1, CPU)
    graphs = state.plain_span.graphs
    assert isinstance(graphs, DecoderGraphs) and not graphs.capture
    Counting.calls = 0
    state.plain_span.graphs = counting = Counting(graphs.decoder, graphs.pad_id, capture=False)
    used = []
    for step in range(1, 5):
        before = Counting.calls
        train_step(state, step)
        used.append(Counting.calls - before)
    # Steps 2 and 4 split KD gradients (and meta-λ's dev gradient runs in eval mode): eager.
    assert used == [1, 0, 1, 0] and counting.shapes >= 1
    counting.release()
    assert counting.shapes == 0


def test_setup_records_no_graphs_on_the_cpu(cache):
    from trainables.config import VariantConfig

    state = setup(base_config(cache).model_copy(update={"variant": VariantConfig(condition="sft")}), "t", 0, 1, CPU)
    assert state.plain_span.graphs is None


def test_record_decoder_passes_attaches_to_the_span(cache):
    from trainables.config import PolicyConfig, VariantConfig

    cfg = base_config(cache).model_copy(update={"variant": VariantConfig(condition="sft", policy=PolicyConfig())})
    state = setup(cfg, "t", 0, 1, CPU)
    graphs = record_decoder_passes(state)
    assert state.plain_span.graphs is graphs and graphs.pad_id == state.tokenizer.pad_token_id


def test_a_failed_capture_turns_graphs_off_for_the_trial_and_it_steps_eagerly(tiny_dir, monkeypatch, capsys):
    model, tok = _lora_student(tiny_dir)
    b = _batch(tok)
    span = AnswerSpanLM(model)
    masked_logits, _ = _logits_and_grads(span, b)

    def refuse(*args, **kwargs):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: "pool")
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", refuse)
    span.graphs = graphs = DecoderGraphs(model.get_base_model().get_decoder(), tok.pad_token_id, capture=True)
    logits, _ = _logits_and_grads(span, b)  # the step still runs, eagerly
    torch.testing.assert_close(logits, masked_logits, rtol=1e-5, atol=1e-5)
    assert not graphs.capture and graphs.off_reason == "RuntimeError: operation not permitted when stream is capturing"
    assert "CUDA graphs off for this trial" in capsys.readouterr().out
    _logits_and_grads(span, b)  # later batches do not try again
    assert graphs.shapes == 1


def test_buckets_beyond_the_byte_budget_step_eagerly_with_the_same_results(tiny_dir, monkeypatch):
    """Recording is simulated (the body itself stands for its graphs, each recording 'holding' 3 bytes
    a padded token): buckets are recorded while they fit the budget, later ones run eagerly, the
    measured bytes replace the plan's estimate, and a release starts the budget afresh."""
    import trainables.train_graphs as tg

    model, tok = _lora_student(tiny_dir)
    decoder = model.get_base_model().get_decoder()
    held = {"bytes": 0}

    def record(body, sample, **kwargs):
        rows, width = sample[0].shape
        held["bytes"] += 3 * rows * width  # what this recording keeps allocated
        return body

    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: "pool")
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", record)
    monkeypatch.setattr(tg, "_allocated", lambda: held["bytes"])
    monkeypatch.setattr(tg, "_reserved", lambda: 5 * held["bytes"])  # the pool caches more than it keeps
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    # Budget: the 1×64 and 1×128 buckets (3 × 192 bytes) but not also the 1×192 one; the plan guessed 1 byte/token.
    graphs = DecoderGraphs(decoder, tok.pad_token_id, capture=True, max_bytes=3 * 192 + 10, token_bytes=1)
    plain = DecoderGraphs(decoder, tok.pad_token_id, capture=False)
    ids = torch.randint(3, 100, (1, 150))
    for length in (10, 100, 150, 150, 20):
        torch.testing.assert_close(graphs(ids[:, :length]), plain(ids[:, :length]))
    assert sorted(graphs.graphs) == [(1, 64), (1, 128)] and list(graphs.over_budget) == [(1, 192)]
    assert graphs.held == 3 * 192 and graphs.token_bytes == 3 and graphs.over_budget_steps == 2
    assert graphs.reserved_growth == 5 * 3 * 192
    assert not graphs.fits(64) and graphs.fits(0)
    graphs.release()
    assert graphs.held == 0 and graphs.reserved_growth == 0 and not graphs.graphs and not graphs.over_budget
    graphs(ids[:, :150])  # after a release the long bucket fits first
    assert list(graphs.graphs) == [(1, 192)] and graphs.over_budget_steps == 2


def test_unbounded_graphs_record_every_bucket(tiny_dir):
    model, tok = _lora_student(tiny_dir)
    graphs = DecoderGraphs(model.get_base_model().get_decoder(), tok.pad_token_id, capture=False)
    for length in (10, 100, 150):
        graphs(torch.randint(3, 100, (2, length)))
    assert graphs.shapes == 3 and graphs.max_bytes is None and not graphs.over_budget


def test_packing_lays_rows_end_to_end_with_their_own_positions_and_segments():
    p = packing([3, 1, 2], row_width=5, bucket=4)
    assert p.total == 6 and p.width == 8  # 6 real tokens, padded to the next multiple of 4
    # Flat positions in the [3, 5] batch: row 0 columns 0-2, row 1 column 0, row 2 columns 0-1.
    assert p.index.tolist() == [0, 1, 2, 5, 10, 11]
    assert p.positions.tolist() == [0, 1, 2, 0, 0, 1, 0, 1]  # pads count from 0 too
    assert p.segments.tolist() == [0, 0, 0, 1, 2, 2, 3, 3]  # pads: a segment of their own (3 = rows)
    assert p.offsets.tolist() == [0, 3, 4]
    exact = packing([4, 4], row_width=4, bucket=4)
    assert exact.width == 8 and exact.segments.tolist() == [0] * 4 + [1] * 4  # no pad segment
    assert packing([1], row_width=1, bucket=128).width == 128


@pytest.mark.parametrize("lengths", [[50, 78], [7, 120, 1], [130]])  # 128 exactly, pads, a second bucket
def test_packed_hidden_states_equal_the_masked_forward_at_every_real_position(tiny_dir, lengths):
    model, tok = _lora_student(tiny_dir)
    decoder = model.get_base_model().get_decoder()
    width = max(lengths)
    torch.manual_seed(1)
    ids = torch.randint(3, 100, (len(lengths), width))
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    ids[mask == 0] = tok.pad_token_id
    rows, cols = mask.nonzero(as_tuple=True)
    graphs = DecoderGraphs(decoder, tok.pad_token_id, capture=False)
    assert graphs.packs
    picked = graphs.answer_hidden(ids, mask, rows, cols)
    ref = decoder(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0)).last_hidden_state
    torch.testing.assert_close(picked, ref[rows, cols], rtol=1e-5, atol=1e-5)
    assert list(graphs.graphs) == [(1, -(-sum(lengths) // PACK_BUCKET) * PACK_BUCKET)]


def test_graphs_stay_recorded_through_an_evaluation_between_steps_and_go_before_the_last(cache, monkeypatch):
    import trainables.loop as loop
    from trainables.config import VariantConfig

    monkeypatch.setattr(loop, "train_graphs_enabled", lambda *a: True)
    cfg = base_config(cache, steps=4, eval_every=2).model_copy(update={"variant": VariantConfig(condition="sft")})
    state = setup(cfg, "t", 0, 1, CPU)
    graphs = state.plain_span.graphs
    for step in (1, 2):
        train_step(state, step)
    shapes, recorded = graphs.shapes, graphs.recorded
    middle = loop.evaluation_report(state, 2, 1, {}, final=False)
    assert shapes >= 1 and graphs.shapes == shapes and middle[train_key("graph_shapes")] == shapes
    for step in (3, 4):
        train_step(state, step)
    assert graphs.recorded - recorded == graphs.shapes - shapes  # only new lengths were recorded
    loop.evaluation_report(state, 4, 2, {}, final=True)
    assert graphs.shapes == 0  # the last evaluation got their memory
