"""The seed study's training step, rebuilt for timing: a frozen second model copy runs the 5-shot
teacher prompt online, a PEFT LoRA r=16 student (dropout 0.05, all linear projections) trains on CE
plus λ·MSE on the teacher's top-256 raw logits, with HF computing logits at every position."""

from __future__ import annotations

from typing import Any

import torch

from bench.harness import Shape, build_model, peak_gb, random_ids, reset_peak, timed, with_lora


class SeedStep:
    """The seed study's training step (rebuilt): online frozen teacher copy + PEFT LoRA student, MSE top-K."""

    def __init__(self, s: Shape, device: torch.device, dtype: torch.dtype, lam: float = 0.5,
                 teacher_len: int | None = None) -> None:
        self.s, self.device, self.lam = s, device, lam
        self.teacher = build_model(s, device, dtype).requires_grad_(False)
        self.student = with_lora(build_model(s, device, dtype), dropout=0.05).train()
        params = [p for p in self.student.parameters() if p.requires_grad]
        self.params = params
        self.opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.01)
        self.t_ids = random_ids(s, s.batch, teacher_len or s.teacher_len, device, 1)
        self.s_ids = random_ids(s, s.batch, s.student_len, device, 2)
        self.labels = self.s_ids.clone()
        self.labels[:, : s.student_len - s.answer] = -100  # CE on the answer only

    def step(self, use_teacher: bool = True) -> None:
        s = self.s
        out = self.student(input_ids=self.s_ids, labels=self.labels)  # HF: logits at every position
        loss = out.loss
        if use_teacher:
            with torch.no_grad():
                t_logits = self.teacher(input_ids=self.t_ids).logits[:, -s.answer:]  # full logits, then slice
                t_top, t_idx = t_logits.topk(s.top_k, dim=-1)
            s_top = out.logits[:, -s.answer:].gather(-1, t_idx)
            loss = loss + self.lam * torch.nn.functional.mse_loss(s_top.float(), t_top.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def close(self) -> None:
        del self.teacher, self.student, self.opt


def bench_seed(s: Shape, device: torch.device, dtype: torch.dtype, reps: int) -> dict[str, Any]:
    reset_peak(device)
    st = SeedStep(s, device, dtype)
    t = timed(st.step, device, 2, reps)
    out = {"step_s": t, "student_tok_s": s.batch * s.student_len / t, "peak_gb": peak_gb(device)}
    t_sft = timed(lambda: st.step(use_teacher=False), device, 1, reps)
    out["sft_step_s"] = t_sft
    st.close()
    return out
