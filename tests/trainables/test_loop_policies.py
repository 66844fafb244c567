"""λ policies inside the real training loop (`run_worker`, no Ray) on the tiny default: exact SFT
when λ = 0, meta-λ with a zero meta learning rate = fixed, the split-gradient step against direct
autograd, teacher/student CE at the causal positions, the crossover step, and one real trial per
policy of the policies-smoke preset with its reported keys."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from trainables.alignment import collate
from trainables.config import (
    COMPILE_MIN_STEPS,
    DataConfig,
    EvalConfig,
    ModelConfig,
    PolicyConfig,
    TeacherConfig,
    TrainConfig,
    TrialConfig,
    VariantConfig,
)
from trainables.data import teacher_encoding, training_pools, training_set
from trainables.losses import TokenLosses, answer_ce, combine_losses, kd_per_token, weighted_token_mean
from trainables.loop import Diagnostics, batch_stream, run_worker, step_with_split_grads
from trainables.metric_keys import time_key
from trainables.models import AnswerSpanLM, load_model, load_tokenizer
from trainables.policies import GradRequest, LambdaPolicy, SplitGrads
from trainables.tasks.schema import TASKS
from trainables.teacher.build import build_cache
from trainables.teacher.cache import TeacherCache

TWO_TASKS = ["nli", "pos"]
CPU = torch.device("cpu")


def base_config(cache: str, **train: Any) -> TrialConfig:
    """Two tasks, one evaluation language, a handful of examples: a trial that runs in about a second."""
    data = DataConfig(tasks=TWO_TASKS, eval_langs=["en", "de"], max_train_per_task=8,
                      synthetic_sizes={"train": 8, "dev": 4, "test": 4}, max_student_len=256, max_teacher_len=1024)
    return TrialConfig(
        model=ModelConfig(name="tiny"), data=data, teacher=TeacherConfig(top_k=16, batch_size=8),
        train=TrainConfig(**{"steps": 3, "batch_size": 4, "eval_every": 3, "warmup_steps": 1, "lr": 3e-3, **train}),
        eval=EvalConfig(dev_per_pair=1, test_per_pair=1, save_predictions=False,
                        max_new_tokens={"nli": 2, "pa": 2, "qa": 2, "ner": 2, "pos": 2}),
        cache_paths={"fewshot": cache},
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory, tiny_dir) -> str:
    """The few-shot teacher cache of `base_config` (built once for the module)."""
    return str(build_cache(base_config(""), tmp_path_factory.mktemp("cache"), "fewshot"))


def run(cfg: TrialConfig, condition: str = "distill", policy: dict | None = None
        ) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    """One trial through run_worker: its reports and trained weights."""
    pc = PolicyConfig(**policy) if policy else PolicyConfig()
    cfg = cfg.model_copy(update={"variant": VariantConfig(condition=condition, policy=pc)})
    reports: list[dict[str, Any]] = []
    model = run_worker(cfg, "t", 0, 1, CPU, reports.append)
    return reports, {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"weights differ: {diff[:3]}"


# --------------------------------------------------------------------------- λ = 0 is exactly SFT

ZERO_LAMBDA = [
    {"name": "fixed", "params": {"lam": 0.0}},
    {"name": "task_prior", "params": {"lams": {"nli": 0.0, "pos": 0.0}}},
    {"name": "entropy", "params": {"lam_max": 0.0}},
    {"name": "loss_ratio", "params": {"lam0": 0.0, "lam_max": 0.0}},
    {"name": "grad_conflict", "params": {"lam": 0.0, "per_task": True}},  # the split-gradient path
    {"name": "warmup", "params": {"steps": 0, "lam": 0.5}},
    {"name": "product", "params": {"policies": [{"name": "fixed", "params": {"lam": 0.0}},
                                                {"name": "meta", "params": {"every": 1, "val_batch": 2}}]}},
]


@pytest.fixture(scope="module")
def sft_run(cache) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    return run(base_config(cache), condition="sft")


@pytest.mark.parametrize("policy", ZERO_LAMBDA, ids=lambda p: p["name"])
def test_zero_lambda_trains_exactly_like_sft(cache, sft_run, policy):
    # LoRA with dropout on: the same batches, dropout masks and gradients, bit for bit.
    reports, weights = run(base_config(cache), policy=policy)
    assert_same_weights(weights, sft_run[1])
    assert reports[-1]["train/ce"] == sft_run[0][-1]["train/ce"]
    assert all(reports[-1][f"lambda/{t}/mean"] == 0.0 for t in TWO_TASKS)


# ------------------------------------------------------------------------- meta with lr 0 = fixed


def test_meta_with_zero_meta_lr_equals_fixed(cache):
    cfg = base_config(cache, steps=4, eval_every=1)
    meta = {"name": "meta", "params": {"lam_max": 0.1, "lr": 0.0, "every": 2, "val_batch": 3, "val_per_pair": 2}}
    meta_reports, meta_weights = run(cfg, policy=meta)
    fixed_reports, fixed_weights = run(cfg, policy={"name": "fixed", "params": {"lam": 0.05}})
    for m, f in zip(meta_reports, fixed_reports, strict=True):
        lam_m = {k: v for k, v in m.items() if k.startswith("lambda/")}
        assert lam_m and lam_m == {k: v for k, v in f.items() if k.startswith("lambda/")}
        assert m["train/loss"] == f["train/loss"]
        assert all(m[f"diag/{t}/meta_lam"] == pytest.approx(0.05, abs=1e-12) for t in TWO_TASKS)
    # The outer step ran (steps 2 and 4) and read real gradients, yet θ did not move.
    assert [r["train/meta_updates"] for r in meta_reports] == [0.0, 1.0, 0.0, 1.0]
    assert any(abs(r.get(f"diag/{t}/meta_dot", 0.0)) > 0 for r in meta_reports for t in TWO_TASKS)
    assert_same_weights(meta_weights, fixed_weights)
    # With its default meta lr, λ moves away from λ_max/2.
    moved, _ = run(cfg, policy={**meta, "params": {**meta["params"], "lr": 0.05}})
    assert any(r[f"diag/{t}/meta_lam"] != pytest.approx(0.05, abs=1e-6) for r in moved[1:] for t in TWO_TASKS)


# ------------------------------------------------------------------ the split-gradient step itself


class StubPolicy(LambdaPolicy):
    """Returns fixed multipliers and keeps the gradients it was shown."""

    def __init__(self, request: GradRequest, mult: dict[str, float]) -> None:
        self.request, self.mult, self.seen = request, mult, None

    def on_split_grads(self, step: int, grads: SplitGrads) -> dict[str, float]:
        self.seen = grads
        return self.mult


@pytest.fixture(scope="module")
def one_batch(cache):
    """The tiny LoRA student, one training batch with its teacher, and λ per token (task prior-like)."""
    cfg = base_config(cache)
    tok = load_tokenizer(cfg.model)
    exs = next(batch_stream(training_set(cfg, tok), 6, 0, 0, 1))
    assert {e.task for e in exs} == set(TWO_TASKS)
    batch = collate([e.student for e in exs], tok.pad_token_id)
    teacher, _ = TeacherCache(cache).gather(e.key for e in exs)
    task_ids = torch.tensor([TASKS.index(e.task) for e in exs])[batch.rows]
    lam = torch.where(task_ids == TASKS.index("nli"), 0.5, 0.05)
    torch.manual_seed(0)
    model = load_model(cfg.model, CPU, trainable=True)
    model.eval()  # no dropout: every forward below is the same function
    return AnswerSpanLM(model), batch, teacher, task_ids, lam


def _forward(one_batch):
    span, batch, teacher, task_ids, lam = one_batch
    logits = span(batch.input_ids, batch.attention_mask, batch.position_ids, batch.rows, batch.cols)
    return answer_ce(logits, batch.targets), kd_per_token(logits, teacher)


def _direct(one_batch, weights: torch.Tensor) -> list[torch.Tensor]:
    """∇(mean CE + Σ_i w_i·KD_i / N) by plain autograd."""
    span = one_batch[0]
    params = [p for p in span.parameters() if p.requires_grad]
    ce, kd = _forward(one_batch)
    n = torch.tensor(float(ce.numel()))
    return list(torch.autograd.grad(combine_losses(ce, kd, weights, n).total, params))


@pytest.mark.parametrize("by_task,mult", [(False, {"all": 0.0}), (False, {"all": 1.0}), (False, {"all": 0.37}),
                                          (True, {"nli": 0.2, "pos": 1.0}), (True, {"nli": 0.0, "pos": 0.0})])
def test_split_step_combines_gradients_like_direct_autograd(one_batch, by_task, mult):
    span, batch, teacher, task_ids, lam = one_batch
    named = [(n, p) for n, p in span.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    factor = torch.where(task_ids == TASKS.index("nli"), mult.get("nli", mult.get("all", 1.0)),
                         mult.get("pos", mult.get("all", 1.0)))
    want = _direct(one_batch, lam * factor)
    ce, kd = _forward(one_batch)
    n = torch.tensor(float(ce.numel()))
    policy = StubPolicy(GradRequest(combine=True, by_task=by_task), mult)
    for p in params:
        p.grad = None
    effective, seconds = step_with_split_grads(policy, policy.request, 1, named, torch.zeros(()), ce, kd, lam,
                                               task_ids, n, world=1)
    assert seconds >= 0 and torch.allclose(effective, lam * factor)
    assert set(policy.seen.kd) == ({"nli", "pos"} if by_task else {"all"})
    for p, w in zip(params, want):
        torch.testing.assert_close(p.grad, w, rtol=1e-4, atol=1e-7)  # float32 sums in another order
    if all(m == 0.0 for m in mult.values()):  # no KD at all: exactly the CE gradient
        ce_only = _direct(one_batch, torch.zeros_like(lam))
        assert all(torch.equal(p.grad, w) for p, w in zip(params, ce_only))


def test_split_step_observe_only_keeps_the_usual_update(one_batch):
    span, batch, teacher, task_ids, lam = one_batch
    named = [(n, p) for n, p in span.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    ce, kd = _forward(one_batch)
    n = torch.tensor(float(ce.numel()))
    loss = combine_losses(ce, kd, lam, n).total
    usual = torch.autograd.grad(loss, params, retain_graph=True)
    policy = StubPolicy(GradRequest(combine=False, by_task=True), {"nli": 0.0})  # multipliers are ignored
    for p in params:
        p.grad = None
    effective, _ = step_with_split_grads(policy, policy.request, 1, named, loss, ce, kd, lam, task_ids, n, world=1)
    assert torch.equal(effective, lam) and policy.seen.ce is None
    assert all(torch.equal(p.grad, u) for p, u in zip(params, usual))
    # Each task's gradient is that of Σ_{i∈t} λ_i·KD_i / N.
    for task in TWO_TASKS:
        mask = (task_ids == TASKS.index(task)).float()
        ce2, kd2 = _forward(one_batch)
        direct = torch.autograd.grad(weighted_token_mean(kd2, lam * mask, n), params)
        for g, d in zip(policy.seen.kd[task], direct):
            torch.testing.assert_close(g, d, rtol=1e-4, atol=1e-8)


# ------------------------------------------------------ teacher vs student CE, and the crossover step


def test_teacher_and_student_ce_are_read_at_the_causal_positions(cache):
    cfg = base_config(cache, steps=1, eval_every=1)
    reports, _ = run(cfg, policy={"name": "fixed", "params": {"lam": 0.5}})
    # The first batch, and each example's CE from a plain full-sequence forward of the base model
    # (the LoRA student equals it before its first update: B = 0).
    tok = load_tokenizer(cfg.model)
    pools = training_pools(cfg)
    exs = next(batch_stream(training_set(cfg, tok, pools), cfg.train.batch_size, cfg.train.seed, 0, 1))
    base = load_model(cfg.model, CPU, trainable=False)

    def token_ce(enc, shift: int = 1) -> list[float]:
        logp = torch.log_softmax(base(input_ids=torch.tensor([enc.input_ids])).logits[0].double(), -1)
        pos = [enc.answer_start + j - shift for j in range(enc.answer_len)]
        return [-float(logp[p, t]) for p, t in zip(pos, enc.answer_ids)]

    for task in TWO_TASKS:
        mine = [e for e in exs if e.task == task]
        assert mine
        teacher = [c for e in mine for c in token_ce(teacher_encoding(cfg, tok, e, pools[task], shots=True))]
        student = [c for e in mine for c in token_ce(e.student)]
        assert reports[0][f"diag/{task}/teacher_ce"] == pytest.approx(np.mean(teacher), rel=1e-4)
        assert reports[0][f"diag/{task}/student_ce"] == pytest.approx(np.mean(student), rel=1e-4)
        # The seed study's off-by-one (logits at the answer positions themselves) reads other numbers.
        legacy = [c for e in mine for c in token_ce(e.student, shift=0)[:-1]]
        assert np.mean(legacy) != pytest.approx(np.mean(student), rel=1e-3)


def test_per_task_lambda_is_reported_for_each_task(cache):
    reports, _ = run(base_config(cache, steps=2, eval_every=2),
                     policy={"name": "task_prior", "params": {"lams": {"nli": 0.3, "pos": 0.7}}})
    assert reports[0]["lambda/nli/mean"] == pytest.approx(0.3, rel=1e-6)
    assert reports[0]["lambda/pos/mean"] == pytest.approx(0.7, rel=1e-6)


def test_a_non_finite_loss_stops_the_trial_with_its_step(cache, monkeypatch):
    import trainables.loop as loop

    real = loop.token_losses

    def nan_ce(logits: torch.Tensor, targets: torch.Tensor, *args, **kwargs) -> TokenLosses:
        parts = real(logits, targets, *args, **kwargs)
        return parts._replace(ce=torch.full(targets.shape, float("nan")) + 0 * logits.sum())

    monkeypatch.setattr(loop, "token_losses", nan_ce)
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 1 \(loss = nan\)"):
        run(base_config(cache, steps=2, eval_every=2), policy={"name": "fixed", "params": {"lam": 0.5}})


def test_crossover_step_is_the_first_step_the_smoothed_student_ce_is_below_the_teacher():
    student = [3.0, 2.5, 1.0, 0.4, 0.3, 2.0, 0.1]
    teacher = [1.0, 1.2, 0.8, 1.0, 1.1, 0.9, 1.0]
    # Hand EMA (decay 0.9, started at the first value).
    s_ema = t_ema = None
    want = None
    for step, (s, t) in enumerate(zip(student, teacher), 1):
        s_ema = s if s_ema is None else 0.9 * s_ema + 0.1 * s
        t_ema = t if t_ema is None else 0.9 * t_ema + 0.1 * t
        if want is None and s_ema < t_ema:
            want = step
    assert want is None  # smoothing: seven steps are not enough here
    d = Diagnostics()
    for step, (s, t) in enumerate(zip(student, teacher), 1):
        d.track_crossover(step, "pos", s, t)
    assert "diag/pos/crossover_step" not in d.flush()  # not reported before it happens
    for step in range(8, 60):
        d.track_crossover(step, "pos", 0.05, 1.0)
        s_ema, t_ema = 0.9 * s_ema + 0.1 * 0.05, 0.9 * t_ema + 0.1 * 1.0
        if want is None and s_ema < t_ema:
            want = step
    assert want is not None
    assert d.flush()["diag/pos/crossover_step"] == float(want)
    d.track_crossover(99, "pos", 9.0, 0.0)  # it is the first crossing: later steps do not move it
    assert d.flush()["diag/pos/crossover_step"] == float(want)
    # A student below the teacher from the start crosses at step 1.
    d2 = Diagnostics()
    d2.track_crossover(1, "nli", 0.1, 0.3)
    assert d2.flush() == {"diag/nli/crossover_step": 1.0}


# ------------------------------------------------------------ a real trial per policy of the preset


def _expected_keys(name: str, params: dict, tasks: list[str]) -> set[str]:
    """The diagnostics each policy (walking composites) must report."""
    per_task = {"entropy": ["entropy_lam_mean", "entropy_lam_p10", "entropy_lam_p90", "entropy_h_mean"],
                "meta": ["meta_lam"]}
    global_ = {"grad_conflict": ["grad_conflict_cos", "split_backward_s"], "loss_ratio": ["loss_ratio_lam"],
               "meta": ["meta_updates", "split_backward_s"], "schedule": ["schedule_scale"],
               "warmup": ["schedule_scale"]}
    keys = {f"diag/{t}/{k}" for k in per_task.get(name, []) for t in tasks}
    keys |= {f"train/{k}" for k in global_.get(name, [])}
    if name == "grad_conflict" and params.get("per_task"):
        keys |= {f"diag/{t}/grad_conflict_cos" for t in tasks}
    if "inner" in params:
        keys |= _expected_keys(params["inner"]["name"], params["inner"].get("params", {}), tasks)
    for sub in params.get("policies", []):
        keys |= _expected_keys(sub["name"], sub.get("params", {}), tasks)
    return keys


def _preset_variants() -> list[VariantConfig]:
    from tuner.loading import load_spec

    return [v for v in load_spec("policies-smoke", []).expanded_variants() if v.condition == "distill"]


@pytest.mark.e2e
@pytest.mark.parametrize("variant", _preset_variants(), ids=lambda v: v.label)
def test_every_preset_policy_trains_and_reports_its_diagnostics(cache, variant):
    from trainables.metric_keys import parse_key

    # Ten steps: meta's outer step (every 10) runs once, warm-up and schedules change λ.
    cfg = base_config(cache, steps=10, eval_every=5).model_copy(update={"variant": variant})
    reports: list[dict[str, Any]] = []
    run_worker(cfg, "t", 0, 1, CPU, reports.append)
    assert len(reports) == 2
    expected = _expected_keys(variant.policy.name, variant.policy.params, TWO_TASKS)
    final = reports[-1]
    assert expected <= set(final), sorted(expected - set(final))
    for r in reports:
        for t in TWO_TASKS:
            assert 0.0 <= r[f"lambda/{t}/mean"] < math.inf
        assert all(math.isfinite(r[k]) for k in ("train/ce", "train/kd", "train/loss"))
    # Every diagnostic lands in results.parquet (it has a (split, task, lang, metric) row).
    assert all(parse_key(k) is not None for k in final if k.startswith(("diag/", "lambda/", "train/")))


# --------------------------------------------------- data parallel (2 CPU ranks, gloo) = 1 worker

DDP_POLICIES = [
    {"name": "fixed", "params": {"lam": 0.5}},
    {"name": "grad_conflict", "params": {"lam": 0.5, "per_task": True}},
    {"name": "meta", "params": {"lam_max": 1.0, "lr": 0.5, "every": 2, "val_batch": 3, "val_per_pair": 2}},
    {"name": "loss_ratio", "params": {"lam0": 0.05, "lam_max": 0.5}},
]


def _ddp_worker(rank: int, world: int, cfg_json: str, port: int, out: str) -> None:
    import os

    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        base = TrialConfig.model_validate_json(cfg_json)
        for i, policy in enumerate(DDP_POLICIES):
            cfg = base.model_copy(update={"variant": VariantConfig(policy=PolicyConfig(**policy))})
            reports: list[dict[str, Any]] = []
            model = run_worker(cfg, "t", rank, world, CPU, reports.append, wrap_ddp=DistributedDataParallel)
            if rank == 0:
                torch.save({"weights": model.state_dict(), "reports": reports}, Path(out) / f"{i}.pt")
        torch.distributed.barrier()  # leave together (see _sharded_eval_worker in test_evaluate.py)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.e2e
def test_two_data_parallel_ranks_train_like_one_worker(cache, tmp_path):
    import socket

    import torch.multiprocessing as mp

    # No dropout, so one worker on the global batch and two ranks on its halves see the same function.
    cfg = base_config(cache, steps=4, eval_every=2, batch_size=6)
    cfg = cfg.model_copy(update={"model": ModelConfig(name="tiny", lora_dropout=0.0)})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, cfg.model_dump_json(), port, str(tmp_path)), nprocs=2, join=True)
    for i, policy in enumerate(DDP_POLICIES):
        ddp = torch.load(tmp_path / f"{i}.pt")
        single_reports, single = run(cfg, policy=policy)
        # Adam turns float-order noise in near-zero gradients into steps of up to lr (3e-3) per element.
        for k, w in single.items():
            torch.testing.assert_close(ddp["weights"][k], w, rtol=0, atol=1e-3, msg=f"{policy['name']}: {k}")
        # What the policies compute from global quantities agrees closely (train/ce and lambda/<task>/mean
        # are rank 0's own tokens).
        for mine, ref in zip(ddp["reports"], single_reports, strict=True):
            keys = [k for k in ref if k.startswith(("train/grad_conflict", "train/loss_ratio")) or "/meta_" in k]
            assert keys or policy["name"] == "fixed"
            for key in keys:
                assert mine[key] == pytest.approx(ref[key], rel=1e-3, abs=1e-6), (policy["name"], key)
        # Evaluation decoded on both ranks; rank 0 reports every (task, language) metric.
        final_keys = {k for k in ddp["reports"][-1] if k.startswith("test/")}
        assert final_keys == {k for k in single_reports[-1] if k.startswith("test/")} and final_keys


def test_every_module_trains_from_the_first_step(cache):
    """LoRA dropout is on from step 1, not only after the first evaluation restored training mode
    (a loaded model comes in eval mode; the mode change also recompiled every decoder layer)."""
    from trainables.loop import setup, train_step

    cfg = base_config(cache).model_copy(update={"variant": VariantConfig(condition="sft")})
    state = setup(cfg, "t", 0, 1, CPU)
    dropouts = [m for m in state.model.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0]
    assert dropouts and all(m.training for m in state.model.modules())
    train_step(state, 1)
    assert all(m.training for m in dropouts)


def test_compiled_layers_train_a_split_gradient_policy(cache):
    # The GPU default compiles the decoder layers; meta-λ back-propagates CE and each task's KD
    # apart through one forward (retain_graph), which a compiled backward that donates its saved
    # buffers refuses (the 3B study's meta trial died of it on an H200, run 5).
    cfg = base_config(cache, steps=1, eval_every=1, compile="on")
    meta = {"name": "meta", "params": {"lam_max": 0.1, "every": 1, "val_batch": 2, "val_per_pair": 1}}
    reports, _ = run(cfg, policy=meta)
    assert reports[-1]["step"] == 1 and reports[-1]["train/meta_updates"] == 1.0


def test_the_first_report_says_where_the_start_went(cache):
    reports, _ = run(base_config(cache, steps=2, eval_every=1), condition="sft")
    first, second = reports
    assert first[time_key("setup_s")] > 0 and 0 < first[time_key("first_step_s")] <= first[time_key("train_s")]
    # Set-up's parts: the model (tokenizer, weights) and the data (evaluation items, training set).
    parts = first[time_key("setup_model_s")], first[time_key("setup_data_s")]
    assert all(p > 0 for p in parts) and sum(parts) <= first[time_key("setup_s")]
    assert time_key("worker_start_s") not in first  # only a Ray worker knows when its driver started
    assert time_key("setup_s") not in second and time_key("first_step_s") not in second
    base, _ = run(base_config(cache), condition="base")  # evaluation only: set-up, no step
    assert base[0][time_key("setup_s")] > 0 and time_key("first_step_s") not in base[0]
    assert base[0][time_key("setup_data_s")] > 0


def test_the_first_report_says_how_long_ray_took_to_start_the_worker(cache):
    reports: list[dict[str, Any]] = []
    cfg = base_config(cache, steps=1, eval_every=1).model_copy(update={"variant": VariantConfig(condition="sft")})
    run_worker(cfg, "t", 0, 1, CPU, reports.append,
               ray_start={time_key("worker_start_s"): 12.5, time_key("worker_process_s"): 4.5})
    assert reports[0][time_key("worker_start_s")] == 12.5 and reports[0][time_key("worker_process_s")] == 4.5


@pytest.mark.parametrize("setting,device,steps,compiled", [
    ("auto", "cuda", COMPILE_MIN_STEPS, True), ("auto", "cuda", COMPILE_MIN_STEPS - 1, False),
    ("auto", "cpu", 100_000, False), ("on", "cpu", 1, True), ("off", "cuda", 100_000, False),
])
def test_auto_compiles_only_runs_long_enough_to_repay_it(setting, device, steps, compiled):
    # Compiling the 3B LoRA step saved 92 ms a step on an H200 and cost 104.5 s once: a 200-step
    # trial trains faster eager, so `auto` compiles only from COMPILE_MIN_STEPS on.
    from trainables.config import TrainConfig, train_compile_enabled

    assert train_compile_enabled(TrainConfig(compile=setting, steps=steps), device) is compiled


def test_the_loop_compiles_its_layers_when_the_setting_says_so(cache, monkeypatch):
    import trainables.loop as loop

    calls = []
    monkeypatch.setattr(loop, "compile_decoder_layers", lambda *a, **k: calls.append(a) or 0)
    run(base_config(cache, steps=2, eval_every=2, compile="auto"), condition="sft")  # CPU: eager
    assert calls == []
    run(base_config(cache, steps=2, eval_every=2, compile="on"), condition="sft")
    assert len(calls) == 1


@pytest.mark.parametrize("rows", [1, 4, 6, 100])
def test_dev_gradient_in_row_chunks_equals_the_whole_batch_gradient(one_batch, rows):
    from types import SimpleNamespace

    from trainables.alignment import row_chunks
    from trainables.loop import dev_grads

    span, batch, *_ = one_batch
    params = [p for p in span.parameters() if p.requires_grad]
    span.model.eval()  # what dev_grads runs in (it leaves the model in training mode afterwards)
    logits = span(batch.input_ids, batch.attention_mask, batch.position_ids, batch.rows, batch.cols)
    want = torch.autograd.grad(answer_ce(logits, batch.targets).mean(), params)

    chunks = row_chunks(batch, rows)
    assert sum(c.n_tokens for c in chunks) == batch.n_tokens
    assert all(c.input_ids.shape[0] <= rows for c in chunks)
    assert all(int(c.attention_mask[:, -1].sum()) > 0 for c in chunks)  # trimmed to a real last column
    state = SimpleNamespace(dev_batch=lambda: batch, dev_draws=0, cfg=SimpleNamespace(train=SimpleNamespace(
        batch_size=rows)), world=1, device=CPU, model=span.model, plain_span=span, params=params)
    got = dev_grads(state)
    assert state.dev_draws == 1 and span.model.training
    span.model.eval()  # as the module's fixture left it
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-7)  # float32 sums in another order


def test_the_last_evaluation_decodes_dev_and_test_in_one_pass(cache):
    """eval.joint_final (default): the final report's dev and test scores equal two passes', and its
    gen/* counts cover both splits (no test/gen/*)."""
    joint, _ = run(base_config(cache), condition="base")
    off = base_config(cache)
    off = off.model_copy(update={"eval": off.eval.model_copy(update={"joint_final": False})})
    apart, _ = run(off, condition="base")
    final, final_apart = joint[-1], apart[-1]
    tasks = tuple(f"{t}/" for t in TWO_TASKS) + ("avg",)
    scores = lambda r: {k: v for k, v in r.items() if k.removeprefix("test/").startswith(tasks)}  # noqa: E731
    got = scores(final)
    assert got == scores(final_apart) and "avg" in got and "test/avg" in got and "pos/en/acc" in got
    assert not any(k.startswith("test/gen/") for k in final) and "test/gen/examples" in final_apart
    assert final["gen/examples"] == final_apart["gen/examples"] + final_apart["test/gen/examples"]
