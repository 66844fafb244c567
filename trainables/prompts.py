"""Prompts for the student (instruction + query) and the few-shot teacher (instruction + k shots + query).

A prompt is rendered with the tokenizer's chat template when it has one (Qwen3 with thinking
off), else as plain text. The answer is rendered separately as the exact continuation that
follows the prompt, so that the same answer tokens can be appended to any prompt.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

from trainables.tasks import get_task
from trainables.tasks.schema import Record

#: Bump when the rendered text or the tokenisation of any prompt changes: it is part of the teacher-cache key.
#: v2: no second BOS when the chat template writes one (Llama-3).
TEMPLATE_VERSION = "v2"

Message = dict[str, str]


@dataclass(frozen=True)
class RenderedPrompt:
    """A prompt and the answer that continues it, both as text."""

    prompt: str
    answer: str


def build_messages(task: str, query: Record, shots: Sequence[Record] = ()) -> list[Message]:
    """Chat messages: the task's system message, each shot as a user/assistant pair, the query."""
    spec = get_task(task)
    messages: list[Message] = [{"role": "system", "content": spec.system}]
    for shot in shots:
        messages.append({"role": "user", "content": spec.user_turn(shot)})
        messages.append({"role": "assistant", "content": spec.answer(shot)})
    messages.append({"role": "user", "content": spec.user_turn(query)})
    return messages


def render(tokenizer: Any, task: str, query: Record, shots: Sequence[Record] = ()) -> RenderedPrompt:
    """Render the prompt and its gold answer continuation as text for this tokenizer."""
    messages = build_messages(task, query, shots)
    answer = get_task(task).answer(query)
    if getattr(tokenizer, "chat_template", None):
        kwargs = {"tokenize": False, "enable_thinking": False}
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, **kwargs)
        full = tokenizer.apply_chat_template(
            messages + [{"role": "assistant", "content": answer}], add_generation_prompt=False, **kwargs
        )
        if not full.startswith(prompt):
            raise ValueError("the chat template does not render the answer as a continuation of the prompt")
        # The continuation includes the template's end-of-turn markup, which the model must learn.
        return RenderedPrompt(prompt, full[len(prompt):])
    return RenderedPrompt(_plain_text(messages), " " + answer)


def _plain_text(messages: list[Message]) -> str:
    """Plain-text rendering for tokenizers without a chat template."""
    parts = [messages[0]["content"], ""]
    for m in messages[1:]:
        if m["role"] == "user":
            parts.append(m["content"])
        else:
            parts.append("Answer: " + m["content"])
            parts.append("")
    parts.append("Answer:")
    return "\n".join(parts)


def sample_shots(pool: Sequence[Record], k: int, seed: int, index: int, exclude_id: str | None) -> list[Record]:
    """k demonstrations drawn from `pool` by an RNG seeded with seed + index, never the query itself."""
    if k <= 0 or not pool:
        return []
    rng = random.Random(seed + index)
    candidates = [i for i in rng.sample(range(len(pool)), min(len(pool), k + 1)) if pool[i]["id"] != exclude_id]
    return [pool[i] for i in candidates[:k]]
