"""A module's forward replaced by another, reversibly, by switching its class to a subclass.

The subclass keeps the original class's name with a prefix and keeps `isinstance` true, so code
that checks a module's type (PEFT's LoRA layers, transformers' norms) still sees it. Parameter
names and state dicts do not change. One subclass is made for each (class, forward) pair.
"""

from __future__ import annotations

from functools import cache
from typing import Callable

from torch import nn

#: The attribute a swapped subclass holds its original class under.
_ORIGINAL = "_forward_swapped_from"


@cache
def _subclass(cls: type, forward: Callable, prefix: str) -> type:
    """`cls` with `forward` as its forward, named `<prefix><cls name>` in the forward's module."""
    return type(f"{prefix}{cls.__name__}", (cls,), {
        "forward": forward, "__module__": forward.__module__, _ORIGINAL: cls,
        "__doc__": f"{cls.__name__} with its forward replaced by {forward.__module__}.{forward.__name__}."})


def original_class(module: nn.Module) -> type:
    """The class `module` had before any swap (its own class when it was never swapped)."""
    cls = type(module)
    return cls.__dict__.get(_ORIGINAL, cls)


def swap_forward(module: nn.Module, forward: Callable, prefix: str, enabled: bool = True) -> None:
    """Make `module` compute with `forward` (or, with `enabled=False`, with its original class's)."""
    original = original_class(module)
    module.__class__ = _subclass(original, forward, prefix) if enabled else original
