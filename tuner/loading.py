"""From a preset name or sweep file plus `--set key=value` overrides to a validated SweepSpec,
with every mistake reported as one line that names the field and what is allowed."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from search_spaces.presets import preset_path, read_yaml
from tuner.spec import SweepSpec


class SpecError(ValueError):
    """A bad sweep file, preset name, override or value (the message is one line)."""


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split 'a.b.c=value' into its key path and its YAML-parsed value."""
    if "=" not in text:
        raise SpecError(f"--set {text!r}: expected key=value, e.g. --set train.steps=100")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".")]
    if not all(path):
        raise SpecError(f"--set {text!r}: empty key segment")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return path, value


def _check_key(path: list[str], model: type[BaseModel]) -> None:
    """Raise SpecError unless `path` names a field (or a key inside a dict field) of `model`."""
    current: Any = model
    for i, part in enumerate(path):
        if isinstance(current, type) and issubclass(current, BaseModel):
            fields = current.model_fields
            if part not in fields:
                dotted = ".".join(path[: i + 1])
                hint = difflib.get_close_matches(part, list(fields), n=1)
                allowed = f"did you mean {'.'.join(path[:i] + hint)!r}?" if hint else f"allowed: {', '.join(fields)}"
                raise SpecError(f"unknown key {dotted!r}; {allowed}")
            annotation = fields[part].annotation
            current = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        else:
            return  # inside a dict/list-valued field: its own validator checks the keys


def _set(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    node[path[-1]] = value


def format_validation_error(err: ValidationError) -> str:
    """The first validation error as one line: 'field.path: message (got value)'."""
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"]) or "sweep"
    msg = e["msg"].removeprefix("Value error, ")
    got = e.get("input")
    shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
    extra = f" — and {len(err.errors()) - 1} more" if len(err.errors()) > 1 else ""
    if not e["loc"] or msg.startswith(loc + ".") or msg.startswith(loc + ":"):
        return f"{msg}{shown}{extra}"  # the message already names the field inside this section
    return f"{loc}: {msg}{shown}{extra}"


def load_spec(source: str, overrides: list[str] = (), name: str | None = None) -> SweepSpec:
    """The validated sweep from a preset name or YAML path, with overrides applied."""
    path = Path(source)
    data = read_yaml(path) if (path.suffix in (".yaml", ".yml") or path.is_file()) else read_yaml(preset_path(source))
    for text in overrides:
        key, value = parse_override(text)
        _check_key(key, SweepSpec)
        _set(data, key, value)
    if name:
        data["name"] = name
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(err)) from None
