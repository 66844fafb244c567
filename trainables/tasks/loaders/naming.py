"""How loaders name things: the stable ids records get, and the languages' English names."""

from __future__ import annotations

#: English names of the project's languages (UDPOS hub configs and messages use them).
LANG_NAMES: dict[str, str] = {
    "en": "English", "hi": "Hindi", "es": "Spanish", "de": "German", "fr": "French", "zh": "Chinese",
}


def record_id(task: str, lang: str, split: str, key: int | str) -> str:
    """A record's id: task, language, split and its position (zero-padded) or its dataset id."""
    tail = f"{key:06d}" if isinstance(key, int) else key
    return f"{task}-{lang}-{split}-{tail}"
