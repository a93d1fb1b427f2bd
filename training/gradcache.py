r"""Gradient cache: one loss over a batch larger than memory allows, backpropagated in chunks.

The m-LTM loss couples every item of the batch through the OT plan, so it cannot be split into
per-chunk losses. The gradient cache (Gao et al., 2021) splits the *encoder* work instead:

1. embed the batch of B items in chunks of ``c`` with no autograd graph → embeddings
   :math:`e` (B, d) for each output (audio, text, …);
2. make the embeddings leaves, compute the loss :math:`L(e)` on the full batch (the OT plan
   over all B items) and backpropagate to get :math:`g = \partial L/\partial e` (B, d) — and the
   gradients of parameters that enter :math:`L` directly (the metric, a temperature);
3. for each chunk, recompute its embeddings with a graph and backpropagate
   :math:`\langle g_{\text{chunk}}, e_{\text{chunk}}\rangle`, which accumulates
   :math:`\partial L/\partial\theta` through that chunk into the encoder parameters.

By the chain rule the accumulated gradient equals that of the full-batch loss; peak activation
memory is that of one chunk. The random state (dropout) of each chunk is saved in step 1 and
restored in step 3, so both passes see the same masks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

#: ``embed(start, stop)`` → the embeddings of items [start, stop), one (stop − start, d) tensor per output.
EmbedFn = Callable[[int, int], Sequence[Tensor]]
#: ``loss(embeddings)`` → scalar loss of the full batch from one (B, d) tensor per output.
LossFn = Callable[[Sequence[Tensor]], Tensor]


class _RandomState:
    """The CPU (and current CUDA device's) RNG state, to replay a chunk's dropout masks."""

    def __init__(self, device: torch.device) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        self.device = device

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


def chunk_bounds(n: int, chunk: int) -> list[tuple[int, int]]:
    """[start, stop) of the chunks of ``n`` items, ``chunk`` at a time (the last may be shorter)."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return [(s, min(n, s + chunk)) for s in range(0, n, chunk)]


def cached_backward(embed: EmbedFn, n: int, chunk: int, loss_fn: LossFn, device: torch.device | None = None,
                    backward: Callable[[Tensor], None] | None = None) -> Tensor:
    """Compute the full-batch loss and accumulate its parameter gradients chunk by chunk.

    Args:
        embed: embeds items [start, stop) (with autograd when enabled); all outputs have ``stop −
            start`` rows.
        n: number of items B.
        chunk: items per chunk (``chunk >= n``: one chunk, the plain full-batch step).
        loss_fn: the loss of the full batch from the concatenated outputs.
        device: where the embeddings live (for the CUDA random state); default CPU.
        backward: how to backpropagate the loss (e.g. through a GradScaler: ``lambda l:
            scaler.scale(l).backward()``); default ``loss.backward()``. Its scaling carries over
            to the chunk gradients because they are the gradients of the same (scaled) loss.

    Returns:
        the detached loss.
    """
    device = device or torch.device("cpu")
    bounds = chunk_bounds(n, chunk)
    states, parts = [], []
    with torch.no_grad():
        for start, stop in bounds:
            states.append(_RandomState(device))
            parts.append([t.detach() for t in embed(start, stop)])
    leaves = [torch.cat([p[k] for p in parts]).requires_grad_(True) for k in range(len(parts[0]))]
    loss = loss_fn(leaves)
    (backward or Tensor.backward)(loss)
    grads = [leaf.grad if leaf.grad is not None else torch.zeros_like(leaf) for leaf in leaves]
    after = _RandomState(device)
    for (start, stop), state in zip(bounds, states, strict=True):
        state.restore()
        outputs = list(embed(start, stop))
        pairs = [(o, g[start:stop]) for o, g in zip(outputs, grads, strict=True) if o.requires_grad]
        if pairs:
            torch.autograd.backward([o for o, _ in pairs], [g.to(o.dtype) for o, g in pairs])
    after.restore()
    return loss.detach()
