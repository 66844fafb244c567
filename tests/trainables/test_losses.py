"""Tests for trainables.losses against a plain float64 numpy reference.

The reference builds a full teacher distribution over V, takes its exact top-K, and
computes each divergence directly from probabilities (no log1mexp, no gathering tricks).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainables.losses import (
    KD_KINDS,
    LossParts,
    TeacherTopK,
    answer_ce,
    check_kd_options,
    combine_losses,
    distillation_loss,
    kd_per_token,
    token_losses,
    weighted_token_mean,
)

DIVERGENCES = ("forward_kl", "topk_kl", "reverse_kl", "jsd")


def assert_close(got, want, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Elementwise closeness via numpy (torch.testing's first call costs ~1 s of imports)."""
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got.detach().double().numpy(), want.detach().double().numpy(), rtol=rtol, atol=atol)

# ------------------------------------------------------------------ float64 reference


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _lse(z: np.ndarray) -> np.ndarray:
    m = z.max(-1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(-1, keepdims=True)))[..., 0]


def make_teacher(teacher_logits: np.ndarray, k: int, dtype=torch.float32) -> TeacherTopK:
    """Exact top-K of a full teacher distribution, stored like the cache stores it."""
    n, v = teacher_logits.shape
    p = _softmax(teacher_logits)
    ids = np.argsort(-p, axis=-1, kind="stable")[:, :k]
    top = np.take_along_axis(p, ids, -1)
    tail = 1.0 - top.sum(-1)
    with np.errstate(divide="ignore"):
        tail_log = np.full(n, -np.inf) if k == v else np.log(np.clip(tail, 0.0, None))
    return TeacherTopK(
        ids=torch.from_numpy(ids).long(),
        logprobs=torch.from_numpy(np.log(top)).to(dtype),
        tail_logmass=torch.from_numpy(tail_log).to(dtype),
        logsumexp=torch.from_numpy(_lse(teacher_logits)).to(dtype),
    )


def ref_buckets(student_logits: np.ndarray, teacher: TeacherTopK, temperature: float = 1.0):
    """(p, q) on the top-K ids + tail (tail dropped when K = V), float64, plain sums."""
    ids = teacher.ids.numpy()
    n, v = student_logits.shape
    k = ids.shape[1]
    q_full = _softmax(student_logits / temperature)
    q_top = np.take_along_axis(q_full, ids, -1)
    mask = np.ones_like(q_full, dtype=bool)
    np.put_along_axis(mask, ids, False, -1)
    q_tail = (q_full * mask).sum(-1)  # sum of the non-top-K probabilities directly
    lp = teacher.logprobs.double().numpy()
    tail = teacher.tail_logmass.double().numpy()
    if k < v:
        q = np.concatenate([q_top, q_tail[:, None]], -1)
        a = np.concatenate([lp, tail[:, None]], -1)
    else:
        q = q_top
        a = lp
    # teacher softened per bucket: p_b^(1/T), renormalised over the buckets
    p = np.exp(a / temperature)
    p = p / p.sum(-1, keepdims=True)
    return p, q


def ref_kl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros(a.shape[0])
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            if a[i, j] > 0:
                out[i] += a[i, j] * math.log(a[i, j] / b[i, j])
    return out


def ref_kd(student_logits: np.ndarray, teacher: TeacherTopK, kind: str, temperature=1.0, beta=0.5):
    if kind == "mse_logits":
        z = np.take_along_axis(student_logits, teacher.ids.numpy(), -1)
        zt = teacher.logprobs.double().numpy() + teacher.logsumexp.double().numpy()[:, None]
        return ((z - zt) ** 2).mean(-1)
    p, q = ref_buckets(student_logits, teacher, temperature)
    if kind == "forward_kl":
        d = ref_kl(p, q)
    elif kind == "reverse_kl":
        d = ref_kl(q, p)
    elif kind == "topk_kl":
        k = teacher.ids.shape[1]
        ph, qh = p[:, :k], q[:, :k]
        d = ref_kl(ph / ph.sum(-1, keepdims=True), qh / qh.sum(-1, keepdims=True))
    elif kind == "jsd":
        m = beta * p + (1 - beta) * q
        d = beta * ref_kl(p, m) + (1 - beta) * ref_kl(q, m)
    return d * temperature**2


def random_case(seed: int, n: int, v: int, k: int, scale: float = 3.0):
    rng = np.random.default_rng(seed)
    s = rng.normal(0.0, scale, (n, v))
    t = rng.normal(0.0, scale, (n, v))
    return s, make_teacher(t, k, dtype=torch.float64)


SHAPES = [(1, 2, 1), (5, 11, 1), (5, 11, 4), (7, 11, 11), (4, 50, 8), (3, 50, 50), (6, 200, 20)]

# ------------------------------------------------------------------ kinds vs reference


@pytest.mark.parametrize("kind", KD_KINDS)
@pytest.mark.parametrize("n,v,k", SHAPES)
def test_kinds_match_float64_reference(kind, n, v, k):
    s, teacher = random_case(n * 1000 + v * 10 + k, n, v, k)
    got = kd_per_token(torch.from_numpy(s), teacher, kind, beta=0.3)
    assert got.shape == (n,) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), ref_kd(s, teacher, kind, beta=0.3), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("kind", KD_KINDS)
def test_fp32_path_matches_reference(kind):
    s, teacher = random_case(7, 6, 64, 10)
    t32 = TeacherTopK(*(x if x.dtype == torch.long else x.float() for x in teacher))
    got = kd_per_token(torch.from_numpy(s).float(), t32, kind)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), ref_kd(s, teacher, kind), rtol=1e-4, atol=1e-5)


def test_forward_kl_with_k_equal_v_is_the_full_kl():
    rng = np.random.default_rng(0)
    s, t = rng.normal(0, 2, (5, 13)), rng.normal(0, 2, (5, 13))
    teacher = make_teacher(t, 13, dtype=torch.float64)
    got = kd_per_token(torch.from_numpy(s), teacher, "forward_kl")
    full = (_softmax(t) * (np.log(_softmax(t)) - np.log(_softmax(s)))).sum(-1)
    np.testing.assert_allclose(got.numpy(), full, rtol=1e-10)
    # the cache's tail value is irrelevant when the tail is empty
    noisy = teacher._replace(tail_logmass=torch.full((5,), -40.0, dtype=torch.float64))
    assert_close(kd_per_token(torch.from_numpy(s), noisy, "forward_kl"), got)


def test_k1_topk_kl_is_zero_and_forward_kl_matches():
    s, teacher = random_case(3, 4, 9, 1)
    st = torch.from_numpy(s)
    assert torch.equal(kd_per_token(st, teacher, "topk_kl"), torch.zeros(4, dtype=torch.float64))
    np.testing.assert_allclose(kd_per_token(st, teacher).numpy(), ref_kd(s, teacher, "forward_kl"), rtol=1e-9)


@pytest.mark.parametrize("kind", DIVERGENCES)
@pytest.mark.parametrize("k", [1, 5, 17])
def test_identical_teacher_and_student_give_zero(kind, k):
    rng = np.random.default_rng(k)
    z = rng.normal(0, 4, (6, 17))
    teacher = make_teacher(z, k, dtype=torch.float32)
    got = kd_per_token(torch.from_numpy(z).float(), teacher, kind)
    assert_close(got, torch.zeros(6), atol=2e-6, rtol=0)


def test_divergences_are_nonnegative():
    s, teacher = random_case(11, 20, 30, 5)
    for kind in KD_KINDS:
        assert (kd_per_token(torch.from_numpy(s), teacher, kind) >= 0).all(), kind


def test_jsd_is_symmetric_at_half_and_bounded():
    s, teacher = random_case(12, 8, 20, 6)
    d = kd_per_token(torch.from_numpy(s), teacher, "jsd", beta=0.5)
    assert (d <= math.log(2) + 1e-12).all()
    p, q = ref_buckets(s, teacher)
    m = 0.5 * (p + q)
    np.testing.assert_allclose(d.numpy(), 0.5 * ref_kl(q, m) + 0.5 * ref_kl(p, m), rtol=1e-10)


# ------------------------------------------------------------------ temperature


@pytest.mark.parametrize("kind", DIVERGENCES)
@pytest.mark.parametrize("temperature", [0.5, 2.0, 4.0])
def test_temperature_matches_direct_computation_with_t_squared(kind, temperature):
    s, teacher = random_case(21, 5, 40, 6)
    got = kd_per_token(torch.from_numpy(s), teacher, kind, temperature=temperature)
    p, q = ref_buckets(s, teacher, temperature)
    unscaled = {"forward_kl": ref_kl(p, q), "reverse_kl": ref_kl(q, p)}.get(kind)
    if unscaled is not None:  # the T² factor, explicitly
        np.testing.assert_allclose(got.numpy(), temperature**2 * unscaled, rtol=1e-9)
    np.testing.assert_allclose(got.numpy(), ref_kd(s, teacher, kind, temperature), rtol=1e-9, atol=1e-12)


def test_mse_ignores_temperature():
    s, teacher = random_case(22, 4, 20, 5)
    st = torch.from_numpy(s)
    assert_close(
        kd_per_token(st, teacher, "mse_logits", temperature=3.0), kd_per_token(st, teacher, "mse_logits")
    )


# ------------------------------------------------------------------ low precision


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", KD_KINDS)
def test_half_inputs_give_fp32_close_to_float64(dtype, kind):
    s, teacher = random_case(31, 8, 100, 10)
    s_lo = torch.from_numpy(s).to(dtype)
    t_lo = TeacherTopK(*(x if x.dtype == torch.long else x.to(dtype) for x in teacher))
    got = kd_per_token(s_lo, t_lo, kind, temperature=1.5)
    assert got.dtype == torch.float32
    # Reference on exactly the rounded inputs, so only the compute precision is tested.
    ref = ref_kd(s_lo.double().numpy(), t_lo, kind, temperature=1.5)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_distillation_loss_is_fp32(dtype):
    s, teacher = random_case(32, 6, 50, 5)
    logits = torch.from_numpy(s).to(dtype).requires_grad_()
    targets = torch.randint(0, 50, (6,), generator=torch.Generator().manual_seed(0))
    parts = distillation_loss(logits, targets, teacher, 0.5, 6)
    assert all(t.dtype == torch.float32 for t in (parts.total, parts.ce, parts.kd, parts.ce_per_token))
    parts.total.backward()
    assert logits.grad.dtype == dtype and torch.isfinite(logits.grad.float()).all()


# ------------------------------------------------------------------ edge cases


@pytest.mark.parametrize("kind", KD_KINDS)
def test_empty_batch_is_zero_and_backward_works(kind):
    logits = torch.zeros(0, 10, requires_grad=True)
    teacher = TeacherTopK(
        torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, 3), torch.zeros(0), torch.zeros(0)
    )
    kd = kd_per_token(logits, teacher, kind)
    assert kd.shape == (0,)
    parts = distillation_loss(logits, torch.zeros(0, dtype=torch.long), teacher, 1.0, 0, kind)
    assert parts.kd_per_token is not None and parts.kd_per_token.shape == (0,)
    assert parts.total.item() == 0.0 and not torch.isnan(parts.total)
    parts.total.backward()
    assert logits.grad.shape == (0, 10)
    mean = weighted_token_mean(kd, None, 0)
    assert mean.item() == 0.0 and mean.requires_grad


@pytest.mark.parametrize("kind", KD_KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_student_sure_of_one_top_k_id_is_finite(kind, dtype):
    rng = np.random.default_rng(41)
    teacher = make_teacher(rng.normal(0, 2, (4, 30)), 5)
    s = torch.from_numpy(rng.normal(0, 1, (4, 30))).float()
    s[torch.arange(4), teacher.ids[:, 0]] = 80.0  # q ≈ 1 on a top-K id, tail ≈ e^-80
    s = s.to(dtype).requires_grad_()
    d = kd_per_token(s, teacher, kind, temperature=1.0)
    assert torch.isfinite(d).all()
    d.sum().backward()
    assert torch.isfinite(s.grad.float()).all()


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("boost", [10.0, 20.0, 40.0, 80.0])
def test_confident_student_tail_is_exact_in_fp32(kind, boost):
    # Student tail from e^-6 down to e^-76: 1 - Σ_k q_k cannot resolve it in fp32,
    # the masked logsumexp must (value and gradient vs float64).
    rng = np.random.default_rng(int(boost))
    teacher = make_teacher(rng.normal(0, 2, (4, 30)), 5, dtype=torch.float64)
    s = rng.normal(0, 1, (4, 30))
    np.put_along_axis(s, teacher.ids.numpy()[:, :2], boost, -1)
    t32 = TeacherTopK(*(x if x.dtype == torch.long else x.float() for x in teacher))
    x32 = torch.from_numpy(s).float().requires_grad_()
    x64 = torch.from_numpy(s).requires_grad_()
    d32, d64 = kd_per_token(x32, t32, kind), kd_per_token(x64, teacher, kind)
    np.testing.assert_allclose(d32.detach().numpy(), ref_kd(s, teacher, kind), rtol=1e-4, atol=1e-6)
    d32.sum().backward()
    d64.sum().backward()
    assert_close(x32.grad.double(), x64.grad, rtol=1e-3, atol=1e-5)


def test_student_tail_of_minus_inf_logits_has_zero_gradient():
    # Every non-top-K logit masked to -inf: q_tail = 0, forward KL is then infinite
    # where the teacher has tail mass, but jsd stays finite with a finite gradient.
    s, teacher = random_case(43, 3, 12, 4)
    x = torch.from_numpy(s)
    mask = torch.ones_like(x, dtype=torch.bool).scatter_(-1, teacher.ids, False)
    x = x.masked_fill(mask, -math.inf).requires_grad_()
    d = kd_per_token(x, teacher, "jsd")
    assert torch.isfinite(d).all()
    d.sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad[mask] == 0).all()


@pytest.mark.parametrize("kind", KD_KINDS)
def test_teacher_tail_rounded_to_zero_is_finite(kind):
    s, teacher = random_case(42, 5, 30, 4)
    t = teacher._replace(tail_logmass=torch.full((5,), -math.inf, dtype=torch.float64))
    logits = torch.from_numpy(s).requires_grad_()
    d = kd_per_token(logits, t, kind)
    assert torch.isfinite(d).all()
    d.sum().backward()
    assert torch.isfinite(logits.grad).all()
    if kind == "forward_kl":  # a zero teacher tail contributes nothing
        p, q = ref_buckets(s, t)
        np.testing.assert_allclose(d.detach().numpy(), ref_kl(p, q), rtol=1e-9)


def test_peaked_teacher_and_identical_student():
    z = np.zeros((3, 20))
    z[:, 0] = 60.0  # teacher tail ≈ 19·e^-60, far below fp32 resolution
    teacher = make_teacher(z, 4)
    logits = torch.from_numpy(z).float().requires_grad_()
    for kind in DIVERGENCES:
        d = kd_per_token(logits, teacher, kind)
        assert torch.isfinite(d).all() and (d.abs() < 1e-5).all(), (kind, d)


@pytest.mark.parametrize("kind", ["forward_kl", "jsd", "reverse_kl", "topk_kl"])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_gradcheck_float64(kind, temperature):
    s, teacher = random_case(51, 3, 9, 4, scale=1.5)
    logits = torch.from_numpy(s).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: kd_per_token(x, teacher, kind, temperature=temperature, beta=0.3), (logits,)
    )


def test_gradcheck_forward_kl_k_equals_v():
    s, teacher = random_case(52, 3, 6, 6, scale=1.5)
    logits = torch.from_numpy(s).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: kd_per_token(x, teacher, "forward_kl"), (logits,))


# ------------------------------------------------------------------ CE and reduction


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_answer_ce_equals_cross_entropy(dtype):
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(9, 37, generator=g)).to(dtype)
    targets = torch.randint(0, 37, (9,), generator=g)
    got = answer_ce(logits, targets)
    assert got.dtype == torch.promote_types(dtype, torch.float32)
    want = F.cross_entropy(logits.to(got.dtype), targets, reduction="none")
    assert_close(got, want)


def test_weighted_token_mean_with_global_count():
    x = torch.tensor([1.0, 2.0, 3.0])
    w = torch.tensor([1.0, 0.0, 2.0])
    assert weighted_token_mean(x, w, 10).item() == pytest.approx(0.7)
    assert weighted_token_mean(x, None, torch.tensor(12)).item() == pytest.approx(0.5)
    assert weighted_token_mean(x, None, 0).item() == pytest.approx(6.0)  # clamp_min(1)
    assert weighted_token_mean(x.bfloat16(), w.half(), 3).dtype == torch.float32
    with pytest.raises(ValueError):
        weighted_token_mean(x, torch.ones(2), 3)


def test_weighted_token_mean_gradient():
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    weighted_token_mean(x, torch.tensor([1.0, 0.0, 2.0]), 4).backward()
    assert_close(x.grad, torch.tensor([0.25, 0.0, 0.5]))


# ------------------------------------------------------------------ distillation_loss


def _batch(seed=61, n=7, v=40, k=6):
    s, teacher = random_case(seed, n, v, k)
    teacher = TeacherTopK(*(x if x.dtype == torch.long else x.float() for x in teacher))
    targets = torch.randint(0, v, (n,), generator=torch.Generator().manual_seed(seed))
    return torch.from_numpy(s).float(), targets, teacher


@pytest.mark.parametrize("lam", [0, 0.0, None, "zeros"])
def test_lambda_zero_equals_ce_exactly_with_same_gradient(lam):
    s, targets, teacher = _batch()
    lam = torch.zeros(7) if lam == "zeros" else lam
    a = s.clone().requires_grad_()
    parts = distillation_loss(a, targets, teacher, lam, 20)
    assert isinstance(parts, LossParts) and parts.kd_per_token is None
    assert parts.kd.item() == 0.0
    b = s.clone().requires_grad_()
    ce_only = weighted_token_mean(answer_ce(b, targets), None, 20)
    assert torch.equal(parts.total, ce_only) and torch.equal(parts.ce, ce_only)
    parts.total.backward()
    ce_only.backward()
    assert torch.equal(a.grad, b.grad)


def test_no_teacher_equals_ce():
    s, targets, _ = _batch()
    parts = distillation_loss(s, targets, None, 1.0, 7)
    assert_close(parts.total, F.cross_entropy(s, targets))


@pytest.mark.parametrize("kind", KD_KINDS)
def test_distillation_loss_composition(kind):
    s, targets, teacher = _batch()
    lam = torch.linspace(0.0, 2.0, 7)
    parts = distillation_loss(s, targets, teacher, lam, 10, kind=kind, temperature=2.0, beta=0.4)
    kd = kd_per_token(s, teacher, kind, temperature=2.0, beta=0.4)
    ce = answer_ce(s, targets)
    assert_close(parts.kd_per_token, kd)
    assert_close(parts.ce, ce.sum() / 10)
    assert_close(parts.kd, (lam * kd).sum() / 10)
    assert_close(parts.total, ce.sum() / 10 + (lam * kd).sum() / 10)
    scalar = distillation_loss(s, targets, teacher, 0.5, 10, kind=kind, temperature=2.0, beta=0.4)
    assert_close(scalar.kd, 0.5 * kd.sum() / 10)


# ------------------------------------------------------------ token_losses, combine_losses


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind,temperature", [("forward_kl", 1.0), ("jsd", 2.0), ("mse_logits", 1.0)])
def test_token_losses_are_answer_ce_and_kd_per_token_bit_for_bit(kind, temperature, dtype):
    # The loop's results must not move when it calls token_losses instead of the two functions.
    s, targets, teacher = _batch()
    s = s.to(dtype)
    ce, kd = token_losses(s, targets, teacher, kind, temperature, 0.4)
    assert torch.equal(ce, answer_ce(s, targets))
    assert torch.equal(kd, kd_per_token(s, teacher, kind, temperature, 0.4))
    assert ce.dtype == kd.dtype == torch.float32


def test_token_losses_gradient_is_that_of_the_two_functions():
    s, targets, teacher = _batch()
    lam = torch.linspace(0.1, 1.0, 7)
    a = s.clone().requires_grad_()
    ce, kd = token_losses(a, targets, teacher)
    combine_losses(ce, kd, lam, 7).total.backward()
    b = s.clone().requires_grad_()
    (weighted_token_mean(answer_ce(b, targets), None, 7) + weighted_token_mean(kd_per_token(b, teacher), lam, 7)).backward()
    assert torch.equal(a.grad, b.grad)


def test_token_losses_without_teacher_and_with_own_kd_logits():
    s, targets, teacher = _batch()
    assert token_losses(s, targets, None).kd is None
    shifted = s.roll(1, dims=0)  # legacy alignment: KD reads other logits than CE
    ce, kd = token_losses(s, targets, teacher, kd_logits=shifted)
    assert torch.equal(ce, answer_ce(s, targets)) and torch.equal(kd, kd_per_token(shifted, teacher))
    assert not torch.equal(kd, kd_per_token(s, teacher))


def test_combine_losses_by_hand():
    ce = torch.tensor([1.0, 2.0, 3.0])
    kd = torch.tensor([0.5, 0.0, 4.0])
    parts = combine_losses(ce, kd, torch.tensor([2.0, 1.0, 0.25]), 4)  # n = 4 tokens over all ranks
    assert parts.ce.item() == pytest.approx(6.0 / 4) and parts.kd.item() == pytest.approx(2.0 / 4)
    assert parts.total.item() == pytest.approx(8.0 / 4)
    assert combine_losses(ce, kd, 0.5, 4).kd.item() == pytest.approx(2.25 / 4)
    for off in (combine_losses(ce, None, 1.0, 4), combine_losses(ce, kd, None, 4)):
        assert off.kd.item() == 0.0 and torch.equal(off.total, off.ce)
    empty = combine_losses(torch.zeros(0), torch.zeros(0), torch.zeros(0), 0)  # 0/0 guarded
    assert empty.total.item() == 0.0


def test_distillation_loss_gradient_matches_sum_of_parts():
    s, targets, teacher = _batch()
    a = s.clone().requires_grad_()
    distillation_loss(a, targets, teacher, 0.7, 7, kind="jsd").total.backward()
    b = s.clone().requires_grad_()
    (answer_ce(b, targets).mean() + 0.7 * kd_per_token(b, teacher, "jsd").mean()).backward()
    assert_close(a.grad, b.grad)


# ------------------------------------------------------------------ validation


def test_bad_kind_names_option_and_allowed_values():
    s, targets, teacher = _batch()
    with pytest.raises(ValueError, match="kd_loss") as exc:
        kd_per_token(s, teacher, "kl")
    assert all(k in str(exc.value) for k in KD_KINDS)
    with pytest.raises(ValueError, match="kd_loss"):
        distillation_loss(s, targets, teacher, 1.0, 7, kind="cosine")


@pytest.mark.parametrize("beta", [0.0, 1.0, -0.2, 1.5])
def test_bad_beta_for_jsd(beta):
    s, targets, teacher = _batch()
    with pytest.raises(ValueError, match="beta"):
        kd_per_token(s, teacher, "jsd", beta=beta)
    with pytest.raises(ValueError, match="beta"):
        distillation_loss(s, targets, teacher, 1.0, 7, kind="jsd", beta=beta)
    check_kd_options("forward_kl", 1.0, beta)  # β is only checked where it is used


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.inf, math.nan])
def test_bad_temperature(temperature):
    s, _, teacher = _batch()
    for kind in KD_KINDS:
        with pytest.raises(ValueError, match="temperature"):
            kd_per_token(s, teacher, kind, temperature=temperature)


def test_teacher_shape_mismatch():
    s, _, teacher = _batch()
    with pytest.raises(ValueError, match="teacher.ids"):
        kd_per_token(s[:3], teacher)
    with pytest.raises(ValueError, match="logprobs"):
        kd_per_token(s, teacher._replace(logprobs=teacher.logprobs[:, :2]))


def test_int32_ids_and_fp16_logprobs_like_the_cache():
    s, teacher = random_case(71, 5, 30, 6)
    cached = TeacherTopK(teacher.ids.int(), teacher.logprobs.half(), teacher.tail_logmass.float(),
                         teacher.logsumexp.float())
    x = torch.from_numpy(s).float()
    for kind in KD_KINDS:
        assert_close(kd_per_token(x, cached, kind), kd_per_token(x, teacher, kind).float(),
                                   rtol=2e-3, atol=2e-3)
    targets = torch.zeros(5, dtype=torch.long)
    assert torch.isfinite(distillation_loss(x, targets, cached, 1.0, 5).total)
