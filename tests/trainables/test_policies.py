"""λ policies on their own: bounds under random inputs, each formula against a hand (numpy/python)
computation, composition, diagnostics and one clear ValueError per bad parameter."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainables.config import PolicyConfig
from trainables.policies import POLICY_NAMES, STUDY_PRIOR, PolicyInputs, SplitGrads, make_policy
from trainables.policies.entropy import topk_tail_entropy
from trainables.policies.grad_conflict import select_params
from trainables.policies.schedule import KINDS
from trainables.tasks.schema import TASKS

V, K = 512, 16
SWEEP = ["nli", "pa", "ner", "pos"]
PRIOR = {"nli": 0.5, "pa": 0.3, "ner": 0.05, "pos": 0.02}
PRIOR_SPEC = {"name": "task_prior", "params": {"lams": PRIOR}}


def random_inputs(rng: np.random.Generator, step: int = 1, n: int | None = None,
                  tasks: list[str] = SWEEP) -> PolicyInputs:
    """A batch of n answer tokens with a real teacher distribution over V (top-K cached like the cache)."""
    n = int(rng.integers(1, 40)) if n is None else n
    logits = rng.normal(size=(n, V)) * rng.uniform(0.1, 8.0, size=(n, 1))  # from flat to peaked
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    top = -np.sort(-p, axis=-1)[:, :K]
    entropy = -(p * np.log(p)).sum(-1)
    ids = torch.tensor([TASKS.index(t) for t in rng.choice(tasks, size=n)])
    return PolicyInputs(
        step=step, task_ids=ids,
        ce=torch.from_numpy(rng.uniform(0.0, 8.0, n)).float(), kd=torch.from_numpy(rng.uniform(0.0, 3.0, n)).float(),
        teacher_entropy=torch.from_numpy(entropy).float(),
        teacher_topk_logprobs=torch.from_numpy(np.log(top)).half().float(),
        teacher_tail_logmass=torch.from_numpy(np.log(1.0 - top.sum(-1))).float(),
        vocab_size=V, top_k=K,
    )


# (spec, lower bound, upper bound) of λ for every token at every step, worked out by hand.
BOUNDED: list[tuple[dict, float, float]] = [
    ({"name": "fixed", "params": {"lam": 0.3}}, 0.3, 0.3),
    ({"name": "task_prior", "params": {"lams": PRIOR}}, 0.02, 0.5),
    ({"name": "entropy", "params": {"lam_max": 0.7}}, 0.0, 0.7),
    ({"name": "entropy", "params": {"lam_max": 0.7, "normalise": "topk", "entropy_source": "topk_tail"}}, 0.0, 0.7),
    ({"name": "grad_conflict", "params": {"lam": 0.4}}, 0.4, 0.4),
    ({"name": "loss_ratio", "params": {"lam0": 0.05, "lam_min": 0.01, "lam_max": 0.2, "decay": 0.5}}, 0.01, 0.2),
    ({"name": "meta", "params": {"lam_max": 0.6, "lr": 0.5, "every": 1}}, 0.0, 0.6),
    ({"name": "schedule", "params": {"kind": "cosine", "steps": 7, "inner": PRIOR_SPEC}}, 0.0, 0.5),
    ({"name": "schedule", "params": {"kind": "step", "every": 3, "gamma": 0.5, "lam": 0.2}}, 0.0, 0.2),
    ({"name": "warmup", "params": {"steps": 5, "lam": 0.05, "final": 0.5}}, 0.025, 0.05),
    ({"name": "product", "params": {"policies": [{"name": "task_prior", "params": {"lams": PRIOR}},
                                                 {"name": "entropy", "params": {"lam_max": 1.0}}]}}, 0.0, 0.5),
]


@pytest.mark.parametrize("spec,lo,hi", BOUNDED, ids=lambda x: x["name"] if isinstance(x, dict) else "")
def test_lambda_stays_within_its_bounds(spec, lo, hi):
    rng = np.random.default_rng(0)
    policy = make_policy(spec["name"], spec["params"], SWEEP)
    names = ["layers.0.w", "layers.1.lora_A", "head"]
    for step in range(1, 40):
        inp = random_inputs(rng, step)
        lam = policy.weights(inp)
        assert lam.shape == inp.ce.shape and torch.isfinite(lam).all()
        assert float(lam.min()) >= lo - 1e-7 and float(lam.max()) <= hi + 1e-7, (step, lam)
        request = policy.grad_request(step)
        if request is not None:  # random gradients, including opposed ones
            grads = lambda: [torch.from_numpy(rng.normal(size=s)).float() for s in ((3, 2), (4,), (2,))]
            groups = sorted({TASKS[i] for i in inp.task_ids.tolist()}) if request.by_task else ["all"]
            mult = policy.on_split_grads(step, SplitGrads(names, grads() if request.combine else None,
                                                          {g: grads() for g in groups}))
            assert all(0.0 <= m <= 1.0 for m in mult.values())
        policy.after_step(step, grads if policy.dev else None)
        for value in policy.diagnostics().values():
            assert math.isfinite(value)


# ---------------------------------------------------------------------------- fixed, task prior


def test_task_prior_preset_and_coverage():
    assert STUDY_PRIOR == {"nli": 0.5, "pa": 0.3, "qa": 0.2, "ner": 0.05, "pos": 0.05}
    policy = make_policy("task_prior", {}, list(TASKS))
    inp = random_inputs(np.random.default_rng(1), n=50, tasks=list(TASKS))
    want = [STUDY_PRIOR[TASKS[i]] for i in inp.task_ids.tolist()]
    np.testing.assert_allclose(policy.weights(inp).numpy(), want, rtol=1e-6)
    with pytest.raises(ValueError, match=r"policy task_prior: lams has no value for task\(s\) \['qa'\]"):
        make_policy("task_prior", {"lams": {"nli": 0.5}}, ["nli", "qa"])


# ------------------------------------------------------------------------------------- entropy


def test_entropy_weights_by_hand_and_fall_as_entropy_rises():
    h = torch.linspace(0.0, math.log(V) * 1.2, 101)  # beyond log V too: clipped to 0
    inp = PolicyInputs(step=1, task_ids=torch.zeros(101, dtype=torch.long), ce=torch.zeros(101), kd=torch.zeros(101),
                       teacher_entropy=h, vocab_size=V, top_k=K)
    lam = make_policy("entropy", {"lam_max": 0.5}, SWEEP).weights(inp).double().numpy()
    want = np.clip(0.5 * (1 - h.double().numpy() / math.log(V)), 0.0, 0.5)
    np.testing.assert_allclose(lam, want, rtol=1e-6, atol=1e-7)
    assert (np.diff(lam) <= 0).all() and (np.diff(lam[h.numpy() < math.log(V)]) < 0).all()
    assert lam[0] == pytest.approx(0.5) and lam[-1] == 0.0
    # normalise: topk divides by log K: entropies ≥ log K give 0.
    lam_k = make_policy("entropy", {"lam_max": 0.5, "normalise": "topk"}, SWEEP).weights(inp).double().numpy()
    np.testing.assert_allclose(lam_k, np.clip(0.5 * (1 - h.double().numpy() / math.log(K)), 0, 0.5), atol=1e-7)


def test_topk_tail_entropy_is_a_lower_bound_within_the_tail_term():
    rng = np.random.default_rng(2)
    for _ in range(20):
        inp = random_inputs(rng, n=30)
        exact = inp.teacher_entropy.double().numpy()
        got = topk_tail_entropy(inp.teacher_topk_logprobs, inp.teacher_tail_logmass).double().numpy()
        p_top = np.exp(inp.teacher_topk_logprobs.double().numpy())
        p_tail = np.exp(inp.teacher_tail_logmass.double().numpy())
        # Direct formula on K+1 outcomes.
        want = -(p_top * np.log(p_top)).sum(-1) - p_tail * np.log(p_tail)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        # fp16 log-probs are rounded: allow their error (≈ 1e-3 nats) on the bound checks.
        assert (got <= exact + 2e-3).all()
        assert (exact <= got + p_tail * math.log(V - K) + 2e-3).all()
    # An empty tail (K = V) contributes 0·log 0 = 0: a uniform distribution over 4 has entropy log 4.
    lp = torch.full((1, 4), math.log(0.25))
    assert float(topk_tail_entropy(lp, torch.tensor([-math.inf]))) == pytest.approx(math.log(4), rel=1e-6)
    # The policy with this source uses it, so its λ is ≥ the exact-entropy λ (lower entropy, more trust).
    inp = random_inputs(rng, n=200)
    exact = make_policy("entropy", {"lam_max": 1.0}, SWEEP).weights(inp)
    approx = make_policy("entropy", {"lam_max": 1.0, "entropy_source": "topk_tail"}, SWEEP).weights(inp)
    assert bool((approx >= exact - 1e-3).all())


def test_entropy_diagnostics_are_the_pooled_percentiles_per_task():
    policy = make_policy("entropy", {"lam_max": 1.0}, SWEEP)
    rng = np.random.default_rng(3)
    batches = [random_inputs(rng, n=25) for _ in range(3)]
    lams = [policy.weights(b) for b in batches]
    d = policy.diagnostics()
    for task in SWEEP:
        i = TASKS.index(task)
        vals = np.concatenate([lam.numpy()[b.task_ids.numpy() == i] for lam, b in zip(lams, batches)])
        ents = np.concatenate([b.teacher_entropy.numpy()[b.task_ids.numpy() == i] for b in batches])
        assert d[f"diag/{task}/entropy_lam_mean"] == pytest.approx(vals.mean(), rel=1e-5)
        assert d[f"diag/{task}/entropy_lam_p10"] == pytest.approx(np.percentile(vals, 10), rel=1e-5)
        assert d[f"diag/{task}/entropy_lam_p90"] == pytest.approx(np.percentile(vals, 90), rel=1e-5)
        assert d[f"diag/{task}/entropy_h_mean"] == pytest.approx(ents.mean(), rel=1e-5)
    assert policy.diagnostics() == {}  # reset after each report


# -------------------------------------------------------------------------------- grad conflict


def _flat(gs: list[torch.Tensor], idx: list[int]) -> torch.Tensor:
    return torch.cat([gs[j].reshape(-1) for j in idx]).double()


@pytest.mark.parametrize("subset", ["all", "lora", "last_layer"])
def test_grad_conflict_cosine_against_torch(subset):
    names = ["model.layers.0.q.weight", "model.layers.0.q.lora_A.weight", "model.layers.1.q.lora_B.weight",
             "model.layers.1.mlp.weight", "model.norm.weight", "lm_head.weight"]
    idx = {"all": [0, 1, 2, 3, 4, 5], "lora": [1, 2], "last_layer": [2, 3]}[subset]
    assert select_params(names, subset) == idx
    rng = np.random.default_rng(4)
    shapes = [(3, 4), (2, 4), (4, 2), (5,), (4,), (6, 4)]
    for per_task in (False, True):
        policy = make_policy("grad_conflict", {"lam": 0.3, "params": subset, "per_task": per_task}, SWEEP)
        for _ in range(10):
            g = lambda: [torch.from_numpy(rng.normal(size=s)).float() for s in shapes]
            ce = g()
            kd = {"nli": g(), "pos": g()} if per_task else {"all": g()}
            mult = policy.on_split_grads(1, SplitGrads(names, ce, kd))
            total = [sum(parts) for parts in zip(*kd.values())]
            cos_all = float(F.cosine_similarity(_flat(ce, idx), _flat(total, idx), dim=0))
            logged = policy.diagnostics()
            assert logged["train/grad_conflict_cos"] == pytest.approx(cos_all, rel=1e-5, abs=1e-6)
            assert logged["train/grad_conflict_neg_frac"] == float(cos_all < 0)
            for group, grads in kd.items():
                cos = float(F.cosine_similarity(_flat(ce, idx), _flat(grads, idx), dim=0))
                assert mult[group] == pytest.approx(max(0.0, cos), rel=1e-5, abs=1e-6)
                if per_task:
                    assert logged[f"diag/{group}/grad_conflict_cos"] == pytest.approx(cos, rel=1e-5, abs=1e-6)
    with pytest.raises(ValueError, match="policy grad_conflict: params lora matches no trainable parameter"):
        select_params(["model.layers.0.q.weight"], "lora")


def test_grad_conflict_zero_gradient_means_no_kd():
    policy = make_policy("grad_conflict", {}, SWEEP)
    zero = [torch.zeros(3)]
    assert policy.on_split_grads(1, SplitGrads(["w"], zero, {"all": [torch.ones(3)]})) == {"all": 0.0}
    assert policy.diagnostics() == {}


# ---------------------------------------------------------------------------------- loss ratio


def test_loss_ratio_ema_by_hand():
    rng = np.random.default_rng(5)
    policy = make_policy("loss_ratio", {"lam0": 0.1, "decay": 0.8, "lam_min": 0.02, "lam_max": 0.5}, SWEEP)
    ema_ce = ema_kd = None
    seen = []
    for step in range(1, 30):
        inp = random_inputs(rng, step)
        ce, kd = float(inp.ce.double().mean()), float(inp.kd.double().mean())
        ema_ce = ce if ema_ce is None else 0.8 * ema_ce + 0.2 * ce
        ema_kd = kd if ema_kd is None else 0.8 * ema_kd + 0.2 * kd
        want = min(0.5, max(0.02, 0.1 * ema_ce / ema_kd))
        lam = policy.weights(inp)
        assert torch.allclose(lam, torch.full_like(lam, want), rtol=1e-5)
        seen.append(want)
    d = policy.diagnostics()
    assert d["train/loss_ratio_lam"] == pytest.approx(np.mean(seen), rel=1e-5)
    assert d["train/loss_ratio_ema_ce"] == pytest.approx(ema_ce, rel=1e-5)
    assert d["train/loss_ratio_ema_kd"] == pytest.approx(ema_kd, rel=1e-5)
    # KD of exactly 0: the ratio is unbounded, λ = λ_max.
    zero = make_policy("loss_ratio", {"lam_max": 0.3}, SWEEP)
    inp = random_inputs(rng)
    inp.kd = torch.zeros_like(inp.kd)
    assert float(zero.weights(inp)[0]) == pytest.approx(0.3)


# ------------------------------------------------------------------------------------------ meta


def test_meta_warm_start_and_one_outer_step_by_hand():
    policy = make_policy("meta", {"lam_max": 1.0, "lr": 0.05, "every": 2, "warm_start": {"nli": 0.5, "pos": 0.05}},
                         ["nli", "pos", "ner"])
    lams = policy.lambdas().numpy()
    np.testing.assert_allclose(lams[[TASKS.index(t) for t in ("nli", "pos", "ner")]], [0.5, 0.05, 0.5], rtol=1e-9)
    assert policy.grad_request(1) is None
    request = policy.grad_request(2)
    assert request is not None and request.by_task and not request.combine
    g_val = [torch.tensor([1.0, 2.0]), torch.tensor([0.5])]
    # The loop's groups are λ-weighted: the policy divides by λ_t to get ∇KD_t.
    kd = {"nli": [0.5 * torch.tensor([1.0, 1.0]), 0.5 * torch.tensor([2.0])],    # ⟨g_val, ∇KD⟩ = 4 > 0
          "pos": [0.05 * torch.tensor([-1.0, 0.0]), 0.05 * torch.tensor([0.0])]}  # = -1 < 0
    policy.on_split_grads(2, SplitGrads(["a", "b"], None, kd))
    policy.after_step(2, lambda: g_val)
    # Adam's first step moves each θ by lr·sign(grad) (bias-corrected m/√v = ±1); grad = −dot.
    theta = policy.theta.detach().numpy()
    logit = lambda p: math.log(p / (1 - p))
    assert theta[TASKS.index("nli")] == pytest.approx(logit(0.5) + 0.05, abs=1e-6)
    assert theta[TASKS.index("pos")] == pytest.approx(logit(0.05) - 0.05, abs=1e-6)
    assert theta[TASKS.index("ner")] == pytest.approx(0.0, abs=1e-12)
    d = policy.diagnostics()
    assert d["diag/nli/meta_dot"] == pytest.approx(4.0) and d["diag/pos/meta_dot"] == pytest.approx(-1.0)
    assert d["train/meta_updates"] == 1.0
    assert d["diag/nli/meta_lam"] == pytest.approx(1 / (1 + math.exp(-(logit(0.5) + 0.05))), rel=1e-9)
    assert "diag/pa/meta_lam" not in d  # only the sweep's tasks


# ------------------------------------------------------------------------------- schedules, product


@pytest.mark.parametrize("params,by_step", [
    ({"kind": "constant"}, {1: 1.0, 500: 1.0}),
    ({"kind": "linear", "steps": 10, "final": 0.2}, {1: 1.0, 6: 0.6, 11: 0.2, 100: 0.2}),
    ({"kind": "linear", "steps": 4}, {1: 1.0, 2: 0.75, 3: 0.5, 5: 0.0}),
    ({"kind": "cosine", "steps": 10}, {1: 1.0, 6: 0.5, 11: 0.0, 50: 0.0}),
    ({"kind": "cosine", "steps": 4, "final": 0.1}, {3: 0.55, 2: 0.1 + 0.9 * (1 + math.sqrt(0.5)) / 2}),
    ({"kind": "step", "every": 3, "gamma": 0.5}, {1: 1.0, 3: 1.0, 4: 0.5, 6: 0.5, 7: 0.25}),
    ({"kind": "warmup", "steps": 100}, {1: 1.0, 100: 1.0, 101: 0.0, 900: 0.0}),
    ({"kind": "warmup", "steps": 0}, {1: 0.0}),
])
def test_schedule_values_by_hand(params, by_step):
    policy = make_policy("schedule", {**params, "lam": 0.4}, SWEEP)
    for step, s in by_step.items():
        lam = policy.weights(random_inputs(np.random.default_rng(step), step, n=3))
        assert torch.allclose(lam, torch.full((3,), 0.4 * s), atol=1e-7), (step, lam)
        assert policy.diagnostics()["train/schedule_scale"] == pytest.approx(s)
    assert set(KINDS) == {"constant", "linear", "cosine", "step", "warmup"}


def test_warmup_is_the_schedule_kind_and_wraps_any_policy():
    a = make_policy("warmup", {"steps": 3, "inner": PRIOR_SPEC}, SWEEP)
    b = make_policy("schedule", {"kind": "warmup", "steps": 3, "inner": PRIOR_SPEC}, SWEEP)
    for step in (1, 3, 4, 10):
        inp = random_inputs(np.random.default_rng(step), step, n=20)
        assert torch.equal(a.weights(inp), b.weights(inp))
        assert bool((a.weights(inp) == 0).all()) == (step > 3)


def test_product_is_the_elementwise_product_and_merges_diagnostics():
    specs = [{"name": "task_prior", "params": {"lams": PRIOR}}, {"name": "entropy", "params": {"lam_max": 1.0}},
             {"name": "schedule", "params": {"kind": "linear", "steps": 10, "lam": 0.5}}]
    product = make_policy("product", {"policies": specs}, SWEEP)
    alone = [make_policy(s["name"], s["params"], SWEEP) for s in specs]
    rng = np.random.default_rng(6)
    for step in (1, 4, 12):
        inp = random_inputs(rng, step)
        want = alone[0].weights(inp) * alone[1].weights(inp) * alone[2].weights(inp)
        assert torch.allclose(product.weights(inp), want, rtol=1e-6, atol=0)
    d = product.diagnostics()
    assert "train/schedule_scale" in d and any(k.endswith("entropy_lam_p10") for k in d)
    # Two members reporting the same key: the later one is suffixed with its index.
    twice = make_policy("product", {"policies": [specs[2], specs[2]]}, SWEEP)
    twice.weights(random_inputs(rng))
    assert set(twice.diagnostics()) == {"train/schedule_scale", "train/schedule_scale_1"}


def test_composites_forward_gradient_work_to_their_gradient_member():
    meta = {"name": "meta", "params": {"every": 1}}
    nested = make_policy("schedule", {"kind": "cosine", "steps": 5,
                                      "inner": {"name": "product", "params": {"policies": [
                                          {"name": "task_prior", "params": {"lams": PRIOR}}, meta]}}}, SWEEP)
    assert nested.acts_on_grads and nested.dev is not None and nested.dev.batch_size == 16
    assert nested.grad_request(1).by_task
    conflict = make_policy("product", {"policies": [{"name": "task_prior", "params": {"lams": PRIOR}},
                                                    {"name": "grad_conflict", "params": {"lam": 1.0}}]}, SWEEP)
    assert conflict.grad_request(7).combine and conflict.dev is None
    mult = conflict.on_split_grads(7, SplitGrads(["w"], [torch.ones(2)], {"all": [torch.ones(2)]}))
    assert mult == {"all": pytest.approx(1.0)}


# ------------------------------------------------------------------------------ bad parameters

BAD: list[tuple[str, dict, str]] = [
    ("nope", {}, r"unknown λ policy 'nope'; allowed: fixed, task_prior"),
    ("fixed", {"lam": -0.1}, r"policy fixed: lam must be in \[0, ∞\), got -0.1"),
    ("fixed", {}, r"policy fixed: missing parameter\(s\) \['lam'\]"),
    ("fixed", {"lam": 0.1, "lamda": 2}, r"policy fixed: unknown parameter\(s\) \['lamda'\]; allowed: lam"),
    ("fixed", {"lam": "big"}, r"policy fixed: lam must be a number in \[0, ∞\), got 'big'"),
    ("task_prior", {"lams": {"nli": -1}}, r"policy task_prior: lams.nli must be in \[0, ∞\), got -1"),
    ("task_prior", {"lams": {"xnli": 0.1}}, r"policy task_prior: lams has unknown task\(s\) \['xnli'\]"),
    ("entropy", {"lam_max": -1}, r"policy entropy: lam_max must be in \[0, ∞\)"),
    ("entropy", {"normalise": "V"}, r"policy entropy: normalise must be one of vocab, topk, got 'V'"),
    ("entropy", {"entropy_source": "approx"}, r"policy entropy: entropy_source must be one of exact, topk_tail"),
    ("grad_conflict", {"params": "head"}, r"policy grad_conflict: params must be one of all, lora, last_layer"),
    ("grad_conflict", {"per_task": "yes"}, r"policy grad_conflict: per_task must be true or false"),
    ("loss_ratio", {"lam_min": 0.5, "lam_max": 0.1},
     r"policy loss_ratio: lam_max must be ≥ lam_min \(0.5\), got 0.1"),
    ("loss_ratio", {"decay": 1.5}, r"policy loss_ratio: decay must be in \[0, 1\], got 1.5"),
    ("loss_ratio", {"lam0": -1}, r"policy loss_ratio: lam0 must be in \[0, ∞\)"),
    ("meta", {"lam_max": 0.5, "warm_start": {"pos": 0.5}}, r"policy meta: warm_start values must be in \[0, 0.5\)"),
    ("meta", {"lam_max": 0}, r"policy meta: lam_max must be in \(0, ∞\), got 0"),
    ("meta", {"every": 0}, r"policy meta: every must be an integer in \[1, "),
    ("meta", {"lr": -0.1}, r"policy meta: lr must be in \[0, ∞\)"),
    ("schedule", {"kind": "exponential", "lam": 0.1}, r"policy schedule: kind must be one of constant, linear, cosine"),
    ("schedule", {"kind": "cosine", "lam": 0.1}, r"policy schedule: kind cosine needs steps"),
    ("schedule", {"kind": "linear", "steps": 10, "final": 2, "lam": 0.1},
     r"policy schedule: final must be in \[0, 1\]"),
    ("schedule", {"kind": "step", "every": 2, "steps": 3, "lam": 0.1},
     r"policy schedule: kind step takes every, gamma"),
    ("schedule", {"kind": "constant"}, r"policy schedule: give exactly one of inner \(a policy\) or lam"),
    ("schedule", {"kind": "constant", "lam": -1}, r"policy schedule: lam must be in \[0, ∞\)"),
    ("schedule", {"kind": "constant", "inner": "fixed"}, r"policy schedule: inner must be a mapping \{name: ..."),
    ("warmup", {"steps": -1, "lam": 0.1}, r"policy warmup: steps must be an integer in \[0, "),
    ("product", {"policies": []}, r"policy product: policies must list at least one policy"),
    ("product", {"policies": [{"name": "meta"}, {"name": "grad_conflict"}]},
     r"policy product: at most one member may act on gradients, got \['meta', 'grad_conflict'\]"),
    ("product", {"policies": [{"name": "fixed", "params": {"lam": -2}}]}, r"policy fixed: lam must be in \[0, ∞\)"),
]


@pytest.mark.parametrize("name,params,message", BAD, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BAD)])
def test_bad_parameters_raise_one_clear_value_error(name, params, message):
    with pytest.raises(ValueError, match=message) as err:
        make_policy(name, params, SWEEP)
    assert "\n" not in str(err.value)
    # The sweep config rejects it before any trial runs (except the bare default `fixed` with no
    # params: the policy slot of sft/base variants, which never build a policy).
    if (name, params) != ("fixed", {}):
        with pytest.raises(ValueError, match=message):
            PolicyConfig(name=name, params=params)


def test_every_policy_has_a_smoke_variant_that_validates():
    from tuner.loading import load_spec

    spec = load_spec("policies-smoke", [])
    used: set[str] = set()

    def walk(name: str, params: dict) -> None:
        used.add(name)
        for key in ("inner",):
            if key in params:
                walk(params[key]["name"], params[key].get("params", {}))
        for sub in params.get("policies", []):
            walk(sub["name"], sub.get("params", {}))

    for v in spec.expanded_variants():
        if v.uses_teacher:
            walk(v.policy.name, v.policy.params)
            make_policy(v.policy.name, v.policy.params, spec.data.tasks)  # covers the sweep's tasks
    assert used == set(POLICY_NAMES)
