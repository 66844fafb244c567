"""The published shapes a `random:<architecture>` model name may ask for (trainables/random_model.py
builds them), and the name's parsing: what the config needs without building anything."""

from __future__ import annotations

from typing import Any

RANDOM_PREFIX = "random:"


def _llama3_rope(factor: float) -> dict[str, Any]:
    return {"rope_type": "llama3", "rope_theta": 500_000.0, "factor": factor, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


#: Published shapes (their Hugging Face config.json values), and a 2-layer one of the same family for tests.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "llama-3.2-1b": dict(vocab_size=128_256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=64, tie_word_embeddings=True,
                         max_position_embeddings=131_072, rms_norm_eps=1e-5, rope_parameters=_llama3_rope(32.0)),
    "llama-3.2-3b": dict(vocab_size=128_256, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                         num_attention_heads=24, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
                         max_position_embeddings=131_072, rms_norm_eps=1e-5, rope_parameters=_llama3_rope(32.0)),
    "llama-3.1-8b": dict(vocab_size=128_256, hidden_size=4096, intermediate_size=14_336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=128, tie_word_embeddings=False,
                         max_position_embeddings=131_072, rms_norm_eps=1e-5, rope_parameters=_llama3_rope(8.0)),
    "llama-test": dict(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
                       max_position_embeddings=4096, rms_norm_eps=1e-5,
                       rope_parameters={"rope_type": "default", "rope_theta": 500_000.0}),
}


def is_random(name: str) -> bool:
    """Whether a model name asks for a random-weight model of a published shape."""
    return name.startswith(RANDOM_PREFIX)


def architecture(name: str) -> str:
    """The architecture of a `random:<architecture>` name (one line naming the choices when unknown)."""
    arch = name[len(RANDOM_PREFIX):]
    if arch not in ARCHITECTURES:
        raise ValueError(f"model.name {name!r}: unknown random architecture {arch!r}; "
                         f"allowed: {', '.join(RANDOM_PREFIX + a for a in ARCHITECTURES)}")
    return arch
