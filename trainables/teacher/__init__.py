"""The teacher: few-shot / zero-shot / checkpoint top-K logits, computed once and cached on disk."""
