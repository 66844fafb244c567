"""A checkpoint teacher (teacher.checkpoint: a model directory): what identifies its weights in
the cache key, and whether its vocabulary fits the student's.

Vocabularies: the teacher must use the student's tokenizer (same token → id map); a different
one is refused before anything is built. Its output layer may be wider than the student's (a
vocabulary padded to a multiple of 64, e.g. 128,264 rows for Llama-3's 128,256 tokens): the top-K
is then taken over the student's ids only, and the probability of the extra rows is folded into
the tail bucket, so the cached distribution stays normalised and every cached id exists in the
student.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

#: Weight files whose size and modification time identify a checkpoint's numbers.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def checkpoint_identity(path: str) -> dict[str, Any]:
    """What changes a checkpoint's numbers: its config.json's hash and each weight file's size and mtime
    (a name that is not a local directory, e.g. a hub id, is identified by the name alone)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        return {"name": path}
    config = root / "config.json"
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    return {
        "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else None,
        "weights": {str(p.relative_to(root)): [p.stat().st_size, p.stat().st_mtime_ns] for p in files},
    }


def check_tokenizer(path: str, student_tokenizer: Any) -> None:
    """Raise ValueError (one line: what differs) unless the checkpoint's tokenizer, when it ships one,
    maps tokens to ids as the student's does."""
    root = Path(path).expanduser()
    if not any((root / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")):
        return  # no tokenizer saved with the checkpoint: it was trained with the student's
    from transformers import AutoTokenizer

    try:
        teacher = AutoTokenizer.from_pretrained(str(root))
    except (OSError, ValueError) as err:
        raise ValueError(f"teacher.checkpoint {path}: cannot read its tokenizer ({type(err).__name__})") from None
    mismatch = tokenizer_difference(teacher, student_tokenizer)
    if mismatch:
        raise ValueError(f"teacher.checkpoint {path} uses a different tokenizer from the student's: {mismatch}")


def tokenizer_difference(teacher: Any, student: Any) -> str | None:
    """A short description of how two tokenizers' token → id maps differ, or None when they agree."""
    tv, sv = teacher.get_vocab(), student.get_vocab()
    if len(tv) != len(sv):
        return f"{len(tv)} tokens vs the student's {len(sv)}"
    for token, i in sorted(sv.items(), key=lambda kv: kv[1]):
        if tv.get(token) != i:
            other = next((t for t, j in tv.items() if j == i), None)
            return f"id {i} is {other!r} for the teacher, {token!r} for the student"
    for name in ("bos_token_id", "eos_token_id"):
        if getattr(teacher, name, None) != getattr(student, name, None):
            return f"{name} {getattr(teacher, name, None)} vs the student's {getattr(student, name, None)}"
    return None


def check_vocab_rows(teacher_rows: int, student_rows: int, tokenizer_size: int) -> None:
    """Raise ValueError unless the teacher's output layer covers every token of the tokenizer."""
    if teacher_rows < tokenizer_size:
        raise ValueError(f"teacher.checkpoint has {teacher_rows} output rows, fewer than the tokenizer's "
                         f"{tokenizer_size} tokens (student: {student_rows} rows)")
