"""Checkpoint helpers: the strict state-dict check used when loading weights."""

from __future__ import annotations

import torch

from atr_demo.errors import CheckpointError


def _names(keys: list[str], limit: int = 5) -> str:
    return ", ".join(keys[:limit]) + (" …" if len(keys) > limit else "")


def verify_state_dict(
    expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], source: str, hint: str
) -> None:
    """Raise :class:`CheckpointError` unless ``state`` has exactly ``expected``'s keys and shapes.

    The message names the missing keys, the unexpected keys, or the first mis-shaped key, then
    ``hint`` (what the user should do).
    """
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing key(s): {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected key(s): {_names(unexpected)}")
        raise CheckpointError(f"{source} does not match: {'; '.join(parts)}. {hint}")
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise CheckpointError(
                f"{source}: key {key} has shape {tuple(tensor.shape)}, expected "
                f"{tuple(expected[key].shape)}. {hint}"
            )
