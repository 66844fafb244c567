"""Per-token losses for few-shot logit distillation: gold-answer CE plus top-K teacher KD.

Every function works on a flat set of N answer tokens: the student's vocabulary logits at
the positions that predict answer tokens ([N, V]) and, for the same tokens, the teacher's
cached top-K (`TeacherTopK`, [N, K]). Losses come back per token ([N]) so a λ policy can
weight tokens; `weighted_token_mean` does the reduction.

Buckets. The cache knows the teacher's K largest probabilities and the mass left over, so
the divergences are taken over K+1 buckets: the teacher's top-K ids plus one tail bucket
that holds the rest of the mass of each distribution. When K = V the tail is empty and is
dropped, and every divergence is the exact full-vocabulary one.

Numerics (the decisions a reader needs):
  * maths runs in float32 whatever the input dtype (float64 inputs stay float64);
  * student top-K log-probs are gathered as `logit - logsumexp`, with the logsumexp [N]
    computed once; nothing larger than [N, V] is built;
  * student tail: log q_tail = logsumexp_{v ∉ top-K} z_v - logsumexp_v z_v, an exact masked
    logsumexp (a small autograd Function whose forward uses one transient [N, V] buffer,
    freed at once, so peak memory is that of a plain logsumexp). The shortcut
    log(1 - Σ_k q_k) cannot resolve q_tail below the rounding of Σ_k q_k (≈1e-6 in float32
    for logits ~20), so it misstates the loss and loses the gradient that pulls mass back
    into the tail exactly when the student is over-confident on the top-K;
  * the teacher's buckets are always renormalised (log-softmax over the buckets): a no-op
    in exact arithmetic at T = 1 that absorbs the rounding of fp16/bf16 caches;
  * a bucket with zero mass on the left of a KL contributes exactly 0 (0·log 0 = 0);
  * reverse_kl alone floors the teacher tail at ε = float32 eps (log ε ≈ -15.9), so a cache
    that rounded the teacher tail to 0 (-inf) gives a finite loss.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = [
    "KD_KINDS",
    "LossParts",
    "TeacherTopK",
    "TokenLosses",
    "answer_ce",
    "check_kd_options",
    "combine_losses",
    "distillation_loss",
    "kd_per_token",
    "token_losses",
    "weighted_token_mean",
]

#: The allowed values of the `kd_loss` option.
KD_KINDS: tuple[str, ...] = ("forward_kl", "topk_kl", "reverse_kl", "jsd", "mse_logits")

#: Floor of the teacher tail log-mass in reverse_kl: log(float32 eps) ≈ -15.9.
_LOG_EPS32 = math.log(torch.finfo(torch.float32).eps)


class TeacherTopK(NamedTuple):
    """The teacher's cached top-K for N answer tokens (log-probs at T = 1)."""

    ids: Tensor  # [N, K] int64 (int32 accepted): vocabulary ids of the teacher's top-K
    logprobs: Tensor  # [N, K] float (any dtype): log p_k at T = 1
    tail_logmass: Tensor  # [N] float: log(1 - Σ_k p_k); -inf when the tail is empty
    logsumexp: Tensor  # [N] float: teacher log-normaliser, raw logit = logprob + logsumexp


class TokenLosses(NamedTuple):
    """Per-token CE and KD of N answer tokens, before any λ."""

    ce: Tensor  # [N] CE_i
    kd: Tensor | None  # [N] unweighted KD_i; None when there is no teacher


class LossParts(NamedTuple):
    """The distillation loss and its parts."""

    total: Tensor  # [] ce + kd
    ce: Tensor  # [] Σ_i CE_i / n_tokens
    kd: Tensor  # [] Σ_i λ_i·KD_i / n_tokens; exactly 0 when KD is off
    ce_per_token: Tensor  # [N] CE_i
    kd_per_token: Tensor | None  # [N] unweighted KD_i; None when KD is off (not computed)


# ----------------------------------------------------------------------------- checks


def check_kd_options(kind: str, temperature: float = 1.0, beta: float = 0.5) -> None:
    """Raise ValueError unless kind ∈ KD_KINDS, 0 < T < ∞ and, for jsd, 0 < β < 1."""
    if kind not in KD_KINDS:
        raise ValueError(f"kd_loss must be one of {', '.join(KD_KINDS)}; got {kind!r}")
    t = float(temperature)
    if not (math.isfinite(t) and t > 0.0):
        raise ValueError(f"kd temperature must be finite and > 0; got {temperature!r}")
    if kind == "jsd" and not (0.0 < float(beta) < 1.0):
        raise ValueError(
            f"jsd beta must lie in the open interval (0, 1); got {beta!r} "
            "(at 0 and 1 the mixture equals one distribution and the divergence is 0)"
        )


def _check_teacher(student_logits: Tensor, teacher: TeacherTopK) -> None:
    """Raise ValueError unless the teacher's shapes fit student logits [N, V]."""
    if student_logits.ndim != 2:
        raise ValueError(f"student_logits must be [N, V]; got shape {tuple(student_logits.shape)}")
    n, v = student_logits.shape
    ids = teacher.ids
    if ids.ndim != 2 or ids.shape[0] != n or not 1 <= ids.shape[1] <= v:
        raise ValueError(f"teacher.ids must be [N={n}, K] with 1 <= K <= V={v}; got {tuple(ids.shape)}")
    if teacher.logprobs.shape != ids.shape:
        raise ValueError(f"teacher.logprobs must be {tuple(ids.shape)}; got {tuple(teacher.logprobs.shape)}")
    for name in ("tail_logmass", "logsumexp"):
        shape = tuple(getattr(teacher, name).shape)
        if shape != (n,):
            raise ValueError(f"teacher.{name} must be [N={n}]; got {shape}")


# ---------------------------------------------------------------------------- helpers


def _compute_dtype(t: Tensor) -> torch.dtype:
    """The dtype the maths runs in: float32, or float64 for float64 inputs."""
    return torch.promote_types(t.dtype, torch.float32)


def _upcast(t: Tensor) -> Tensor:
    """t in the compute dtype (no copy when it already is): [*] -> [*]."""
    return t.to(_compute_dtype(t))


def _scaled(logits: Tensor, temperature: float) -> Tensor:
    """logits / T in the compute dtype, at most one [N, V] copy: [N, V] -> [N, V]."""
    dtype = _compute_dtype(logits)
    if logits.dtype != dtype:
        s = logits.to(dtype)  # fresh copy: safe to scale in place
        return s.div_(temperature) if temperature != 1.0 else s
    return logits / temperature if temperature != 1.0 else logits


def _kl(log_a: Tensor, log_b: Tensor) -> Tensor:
    """KL(a‖b) = Σ_j a_j (log a_j - log b_j), with 0·log 0 = 0: [N, B], [N, B] -> [N]."""
    live = log_a != -math.inf
    # Zero the dead entries before the product so no inf/NaN reaches the backward pass.
    a = torch.where(live, log_a, 0.0)
    b = torch.where(live, log_b, 0.0)
    return torch.where(live, a.exp() * (a - b), 0.0).sum(-1)


class _TailLogSumExp(torch.autograd.Function):
    """log Σ_{v ∉ ids} e^{s_v}, the logsumexp of s without the ids: [N, V], [N, K] -> [N]."""

    @staticmethod
    def forward(ctx, s: Tensor, ids: Tensor) -> Tensor:  # type: ignore[override]
        buf = s.scatter(-1, ids, -math.inf)  # the one transient [N, V] buffer
        m = buf.amax(-1, keepdim=True)
        m = torch.where(torch.isfinite(m), m, 0.0)
        out = buf.sub_(m).exp_().sum(-1).log_().add_(m.squeeze(-1))
        ctx.save_for_backward(s, ids, out)  # s is already kept alive by the main logsumexp
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        # ∂out/∂s_v = e^{s_v - out} off the ids, 0 on them (and 0 when the tail is empty).
        s, ids, out = ctx.saved_tensors
        empty = out == -math.inf
        w = (s - torch.where(empty, 0.0, out).unsqueeze(-1)).exp_()
        w.scatter_(-1, ids, 0.0)
        return w.mul_(torch.where(empty, 0.0, grad).unsqueeze(-1)), None


def _buckets(
    s: Tensor,
    lse: Tensor,
    teacher: TeacherTopK,
    temperature: float,
    *,
    with_tail: bool = True,
    floor_teacher_tail: bool = False,
) -> tuple[Tensor, Tensor]:
    """Teacher and student log-probs on the buckets, (log p, log q) each [N, B].

    B = K+1 (top-K ids, then the tail) when K < V and with_tail, else B = K. The student
    is s = logits / T with log-normaliser lse [N]. The teacher is softened per bucket,
    log p_b / T, then renormalised: log p̃_b = log p_b / T - logsumexp_b' (log p_b' / T).
    floor_teacher_tail floors the teacher tail at ε = float32 eps (for reverse KL).
    """
    dtype = s.dtype
    log_q = s.gather(-1, teacher.ids) - lse.unsqueeze(-1)  # [N, K]
    t_lp = teacher.logprobs.to(dtype)  # [N, K]
    if with_tail and teacher.ids.shape[-1] < s.shape[-1]:
        log_q_tail = _TailLogSumExp.apply(s, teacher.ids) - lse  # [N]
        log_q = torch.cat([log_q, log_q_tail.unsqueeze(-1)], dim=-1)
        t_tail = teacher.tail_logmass.to(dtype)
        if floor_teacher_tail:
            t_tail = t_tail.clamp(min=_LOG_EPS32)
        t_lp = torch.cat([t_lp, t_tail.unsqueeze(-1)], dim=-1)
    if not with_tail:
        log_q = torch.log_softmax(log_q, dim=-1)  # renormalise on the top-K support
    log_p = torch.log_softmax(t_lp / temperature, dim=-1)
    return log_p, log_q


def _jsd(log_p: Tensor, log_q: Tensor, beta: float) -> Tensor:
    """Generalised JSD β·KL(p‖m) + (1-β)·KL(q‖m), m = β·p + (1-β)·q: [N, B] x2 -> [N]."""
    log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log1p(-beta))
    return beta * _kl(log_p, log_m) + (1.0 - beta) * _kl(log_q, log_m)


def _mse_logits(student_logits: Tensor, teacher: TeacherTopK) -> Tensor:
    """(1/K) Σ_k (z_k - (log p_k + logsumexp_t))², raw logits at the K ids: [N, V] -> [N]."""
    z = _upcast(student_logits.gather(-1, teacher.ids))  # gather first: no [N, V] copy
    dtype = z.dtype
    t_raw = teacher.logprobs.to(dtype) + teacher.logsumexp.to(dtype).unsqueeze(-1)
    return (z - t_raw).square().mean(-1)


def _divergence(
    s: Tensor, lse: Tensor, teacher: TeacherTopK, kind: str, temperature: float, beta: float
) -> Tensor:
    """T²·D(kind) on the buckets, from student s = logits / T and lse [N]: -> [N]."""
    if kind == "forward_kl":
        log_p, log_q = _buckets(s, lse, teacher, temperature)
        d = _kl(log_p, log_q)
    elif kind == "topk_kl":
        log_p, log_q = _buckets(s, lse, teacher, temperature, with_tail=False)
        d = _kl(log_p, log_q)
    elif kind == "reverse_kl":
        log_p, log_q = _buckets(s, lse, teacher, temperature, floor_teacher_tail=True)
        d = _kl(log_q, log_p)
    elif kind == "jsd":
        log_p, log_q = _buckets(s, lse, teacher, temperature)
        d = _jsd(log_p, log_q, beta)
    else:  # pragma: no cover - check_kd_options rejects it first
        raise ValueError(f"kd_loss must be one of {', '.join(KD_KINDS)}; got {kind!r}")
    return d * (temperature * temperature) if temperature != 1.0 else d


def _ce(s: Tensor, lse: Tensor, targets: Tensor) -> Tensor:
    """CE_i = logsumexp_v z_iv - z_i,y_i from logits s and their lse: [N, V], [N], [N] -> [N]."""
    return lse - s.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def _lam_is_off(lam: Tensor | float | None) -> bool:
    """True when λ is None, 0, or a tensor of zeros (KD then costs nothing)."""
    if lam is None:
        return True
    if isinstance(lam, Tensor):
        return not bool(lam.any())
    return float(lam) == 0.0


# ------------------------------------------------------------------------- public API


def answer_ce(student_logits: Tensor, targets: Tensor) -> Tensor:
    """Per-token cross-entropy CE_i = -log softmax(z_i)[y_i]: [N, V], [N] int64 -> [N] fp32."""
    s = _upcast(student_logits)
    return _ce(s, torch.logsumexp(s, dim=-1), targets)


def kd_per_token(
    student_logits: Tensor,
    teacher: TeacherTopK,
    kind: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
) -> Tensor:
    """Per-token KD term between the teacher's top-K buckets and the student: [N, V] -> [N] fp32.

    With p the teacher and q the student on the buckets b (top-K ids + tail, see module doc):
      forward_kl  KL(p‖q) = Σ_b p_b (log p_b - log q_b); a teacher tail of 0 contributes 0,
                  and with K = V this is the full-vocabulary KL.
      topk_kl     KL(p̂‖q̂) with p̂_k = p_k / Σ_j p_j, q̂_k = q_k / Σ_j q_j on the top-K only.
      reverse_kl  KL(q‖p) = Σ_b q_b (log q_b - log p_b); the teacher tail is floored at
                  ε = float32 eps so a cache that rounded it to 0 stays finite.
      jsd         β·KL(p‖m) + (1-β)·KL(q‖m), m = β·p + (1-β)·q, with 0 < β < 1.
      mse_logits  (1/K) Σ_k (z_k - z^t_k)², raw logits, z^t_k = log p_k + logsumexp_t.
                  Temperature does not apply (neither 1/T nor T²).

    Temperature T (Hinton et al. 2015): the student is softmax(z / T) over the whole
    vocabulary, then bucketed; the teacher is softened per bucket, p_b^(1/T) / Σ_b' p_b'^(1/T).
    For the tail bucket this is an approximation: it is softened as one outcome, although
    the exact softened tail is Σ_{v ∉ top-K} p_v^(1/T), which the cache cannot give. The
    divergence is multiplied by T² so its gradients keep their scale as T changes.
    """
    check_kd_options(kind, temperature, beta)
    _check_teacher(student_logits, teacher)
    teacher = teacher._replace(ids=teacher.ids.long())  # a cache may store int32 ids
    if kind == "mse_logits":
        return _mse_logits(student_logits, teacher)
    temperature = float(temperature)
    s = _scaled(student_logits, temperature)
    return _divergence(s, torch.logsumexp(s, dim=-1), teacher, kind, temperature, float(beta))


def weighted_token_mean(
    per_token: Tensor, weights: Tensor | None, n_tokens: float | Tensor
) -> Tensor:
    """Σ_i w_i·x_i / max(n_tokens, 1) (w_i = 1 when weights is None): [N], [N] -> [] fp32.

    n_tokens is passed in so it can be the token count over all data-parallel ranks;
    with N = 0 the result is an exact 0.0 that still carries a gradient path.
    """
    x = _upcast(per_token)
    if weights is not None:
        if weights.ndim != 0 and weights.shape != per_token.shape:
            raise ValueError(
                f"weights must be [N] like per_token {tuple(per_token.shape)}; got {tuple(weights.shape)}"
            )
        x = x * weights.to(device=x.device, dtype=x.dtype)
    denom = torch.as_tensor(n_tokens, dtype=x.dtype, device=x.device).clamp_min(1.0)
    return x.sum() / denom


def token_losses(
    student_logits: Tensor,
    targets: Tensor,
    teacher: TeacherTopK | None = None,
    kind: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    kd_logits: Tensor | None = None,
) -> TokenLosses:
    """Per-token CE and KD of the student's answer logits, from one fp32 upcast: [N, V], [N] -> [N], [N].

    CE_i is `answer_ce` and KD_i is `kd_per_token(kind, temperature, beta)`, bit for bit. A
    policy reads both before it chooses λ, which `combine_losses` then applies. `kd_logits`
    ([N, V]) gives KD its own logits (the seed's legacy alignment reads KD one position to the
    right); KD is None without a teacher.

    CE and KD each take their own logsumexp of the shared upcast logits. One shared logsumexp
    would save an [N] reduction over V but sums the two gradients in another order (float noise
    of ~1e-7 that Adam grows into different weights), and training results stay bit-identical
    to those recorded before this function existed.
    """
    check_kd_options(kind, temperature, beta)
    s = _upcast(student_logits)
    ce_tok = _ce(s, torch.logsumexp(s, dim=-1), targets)
    if teacher is None:
        return TokenLosses(ce_tok, None)
    if kd_logits is not None:
        return TokenLosses(ce_tok, kd_per_token(kd_logits, teacher, kind, temperature, beta))
    _check_teacher(student_logits, teacher)
    teacher = teacher._replace(ids=teacher.ids.long())  # a cache may store int32 ids
    if kind == "mse_logits":
        return TokenLosses(ce_tok, _mse_logits(student_logits, teacher))
    temperature = float(temperature)
    if temperature != 1.0:
        s = s / temperature  # not in place: CE's graph holds s
    return TokenLosses(ce_tok, _divergence(s, torch.logsumexp(s, dim=-1), teacher, kind, temperature, float(beta)))


def combine_losses(
    ce_per_token: Tensor, kd_per_token: Tensor | None, lam: Tensor | float | None, n_tokens: float | Tensor
) -> LossParts:
    """L = Σ_i CE_i / n + Σ_i λ_i·KD_i / n, n = max(n_tokens, 1): [N], [N] | None, λ [N] | float | None.

    The one place CE and λ·KD are added. n_tokens may be the count over all data-parallel ranks.
    Without KD (kd_per_token or λ None) the KD part is an exact 0 and L is exactly the CE term.
    """
    ce = weighted_token_mean(ce_per_token, None, n_tokens)
    if kd_per_token is None or lam is None:
        return LossParts(ce, ce, torch.zeros((), dtype=ce.dtype, device=ce.device), ce_per_token, kd_per_token)
    if isinstance(lam, Tensor):
        kd = weighted_token_mean(kd_per_token, lam, n_tokens)
    else:
        kd = weighted_token_mean(kd_per_token, None, n_tokens) * float(lam)
    return LossParts(ce + kd, ce, kd, ce_per_token, kd_per_token)


def distillation_loss(
    student_logits: Tensor,
    targets: Tensor,
    teacher: TeacherTopK | None,
    lam: Tensor | float | None,
    n_tokens: float | Tensor,
    kind: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
) -> LossParts:
    """`token_losses` then `combine_losses`, skipping KD when λ is None, 0 or all zeros: [N, V] -> LossParts.

    A convenience for callers that know λ before the forward; the check on λ costs a host sync
    for a tensor λ, so the training loop calls the two parts itself.
    """
    check_kd_options(kind, temperature, beta)
    if _lam_is_off(lam):
        teacher = None
    parts = token_losses(student_logits, targets, teacher, kind, temperature, beta)
    return combine_losses(parts.ce, parts.kd, lam if parts.kd is not None else None, n_tokens)
