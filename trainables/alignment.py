"""Token sequences with a marked answer span, padded batches, and the positions that predict answers.

The causal convention (ARCHITECTURE.md): for a causal LM the logits at position i predict
token i+1. An answer occupying positions [a, a+n) is therefore predicted by positions
[a-1, a+n-1). Prompt and answer are tokenised separately and concatenated, so the answer's
tokens are identical whatever prompt precedes them (student prompt, few-shot teacher prompt),
and teacher and student are aligned token by token on the answer.

`kd_alignment: legacy` reproduces the seed study's off-by-one (KD read at [a, a+n)); CE always
uses the causal positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch

PadSide = Literal["left", "right"]


@dataclass(frozen=True)
class Encoded:
    """One example's token ids; the answer occupies [answer_start, answer_start + answer_len)."""

    input_ids: tuple[int, ...]
    answer_start: int

    @property
    def answer_len(self) -> int:
        """Number of answer tokens (including the closing end-of-sequence token)."""
        return len(self.input_ids) - self.answer_start

    @property
    def answer_ids(self) -> tuple[int, ...]:
        """The answer's token ids."""
        return self.input_ids[self.answer_start:]


def encode(tokenizer: Any, prompt: str, answer: str, close_with_eos: bool) -> Encoded:
    """Token ids of prompt + answer (tokenised apart), with the answer span marked."""
    return encode_many(tokenizer, [(prompt, answer)], close_with_eos)[0]


def encode_many(tokenizer: Any, pairs: Sequence[tuple[str, str]], close_with_eos: bool) -> list[Encoded]:
    """`encode` of every (prompt, answer) pair, in two batched tokenizer calls (the same ids).

    A fast tokenizer encodes a batch on all cores: the cache build's 4,918 few-shot prompts of the
    study took 2.3 s of one core one by one."""
    prompts = encode_prompts(tokenizer, [p for p, _ in pairs])
    answers = tokenizer([a for _, a in pairs], add_special_tokens=False)["input_ids"] if pairs else []
    out = []
    for (prompt, _), prompt_ids, answer_ids in zip(pairs, prompts, answers):
        if close_with_eos:
            answer_ids = [*answer_ids, tokenizer.eos_token_id]
        if not answer_ids:
            raise ValueError(f"empty answer for prompt ending {prompt[-40:]!r}")
        out.append(Encoded(prompt_ids + tuple(answer_ids), len(prompt_ids)))
    return out


def encode_prompt(tokenizer: Any, prompt: str) -> tuple[int, ...]:
    """Token ids of a prompt alone, exactly as `encode` tokenises it (for generation).

    The tokenizer's special tokens are added unless the text already starts with its BOS: a chat
    template such as Llama-3's writes `<|begin_of_text|>` itself, and its post-processor would
    add a second one."""
    return encode_prompts(tokenizer, [prompt])[0]


def encode_prompts(tokenizer: Any, prompts: Sequence[str]) -> list[tuple[int, ...]]:
    """`encode_prompt` of every prompt, batched (one tokenizer call per kind: BOS written or not)."""
    bos = getattr(tokenizer, "bos_token", None)
    written = [bool(bos) and p.startswith(bos) for p in prompts]
    out: list[tuple[int, ...]] = [()] * len(prompts)
    for has_bos in (True, False):
        idx = [i for i, w in enumerate(written) if w == has_bos]
        if idx:
            ids = tokenizer([prompts[i] for i in idx], add_special_tokens=not has_bos)["input_ids"]
            for i, x in zip(idx, ids):
                out[i] = tuple(x)
    return out


def predicting_positions(answer_start: int, answer_len: int, alignment: str = "causal") -> range:
    """Positions whose logits are compared with the answer tokens (causal: shifted one to the left)."""
    if alignment == "causal":
        if answer_start < 1:
            raise ValueError("an answer at position 0 has no predicting position: the prompt is empty")
        return range(answer_start - 1, answer_start + answer_len - 1)
    if alignment == "legacy":
        return range(answer_start, answer_start + answer_len)
    raise ValueError(f"kd_alignment must be 'causal' or 'legacy', got {alignment!r}")


@dataclass
class Batch:
    """A padded batch and the flat index of its N answer tokens.

    input_ids, attention_mask, position_ids: [B, T]. rows, cols: [N] coordinates of the
    positions predicting each answer token (rows is also the batch row each token belongs to);
    targets: [N] the answer tokens; kd_cols: [N] the columns KD reads (equal to cols under the
    causal convention, one to the right under `legacy`).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    targets: torch.Tensor
    kd_cols: torch.Tensor

    def to(self, device: torch.device | str) -> "Batch":
        """The same batch on `device`."""
        return Batch(**{k: v.to(device, non_blocking=True) for k, v in self.__dict__.items()})

    @property
    def n_tokens(self) -> int:
        """Number of answer tokens in the batch."""
        return int(self.targets.numel())


def collate(
    examples: Sequence[Encoded], pad_id: int, side: PadSide = "right", alignment: str = "causal"
) -> Batch:
    """Pad examples to one length and index the positions that predict their answer tokens."""
    if side not in ("left", "right"):
        raise ValueError(f"pad side must be 'left' or 'right', got {side!r}")
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    rows: list[int] = []
    cols: list[int] = []
    kd_cols: list[int] = []
    targets: list[int] = []
    for b, e in enumerate(examples):
        offset = width - len(e.input_ids) if side == "left" else 0
        ids[b, offset:offset + len(e.input_ids)] = torch.tensor(e.input_ids)
        mask[b, offset:offset + len(e.input_ids)] = 1
        causal = predicting_positions(e.answer_start, e.answer_len, "causal")
        kd = predicting_positions(e.answer_start, e.answer_len, alignment)
        rows.extend([b] * e.answer_len)
        cols.extend(offset + p for p in causal)
        kd_cols.extend(offset + p for p in kd)
        targets.extend(e.answer_ids)
    # Positions count real tokens only, so left and right padding give identical logits.
    position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
    return Batch(
        input_ids=ids,
        attention_mask=mask,
        position_ids=position_ids,
        rows=torch.tensor(rows, dtype=torch.long),
        cols=torch.tensor(cols, dtype=torch.long),
        targets=torch.tensor(targets, dtype=torch.long),
        kd_cols=torch.tensor(kd_cols, dtype=torch.long),
    )


def row_chunks(batch: Batch, rows: int) -> list[Batch]:
    """The batch split into consecutive chunks of ≤ `rows` rows, each cut to its last real column."""
    out = []
    for lo in range(0, batch.input_ids.shape[0], rows):
        hi = min(lo + rows, batch.input_ids.shape[0])
        keep = (batch.rows >= lo) & (batch.rows < hi)
        mask = batch.attention_mask[lo:hi]
        width = int(mask.any(dim=0).nonzero().max()) + 1 if bool(mask.any()) else mask.shape[1]
        out.append(Batch(input_ids=batch.input_ids[lo:hi, :width], attention_mask=mask[:, :width],
                         position_ids=batch.position_ids[lo:hi, :width], rows=batch.rows[keep] - lo,
                         cols=batch.cols[keep], targets=batch.targets[keep], kd_cols=batch.kd_cols[keep]))
    return [c for c in out if c.n_tokens > 0]
