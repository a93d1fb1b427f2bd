"""The aiSFX CNN audio backbone (Ma & Lerch, ISMIR 2022), reimplemented.

Weights: CC BY 4.0, from the ``aisfx==0.1.2`` wheel (code MIT), converted once to safetensors by
``python -m training convert-aisfx``; nothing is unpickled at run time.

Network (the DCASE "Cnn_9layers" embedding net, pooling "max")::

    x (B, 100 frames, 96 mels) -> (B, 1, 100, 96)
    4 × [conv3×3 (no bias) -> BN -> ReLU -> conv3×3 (no bias) -> BN -> ReLU -> max-pool]
        channels 64, 128, 256, 512; pool 2×2 after blocks 1–3, none after block 4
        -> (B, 512, 12, 12)
    mean over the mel axis -> (B, 512, 12); max over the time axis -> (B, 512)

Inference fast path (eval mode, no autograd): each BatchNorm is folded into the preceding
convolution, ``W' = W · γ/√(σ²+ε)``, ``b' = β − μ · γ/√(σ²+ε)``, and the convolutions run in
channels_last memory format. The state dict keeps the original layout
(``embedding_net.conv_block{1..4}.{conv1,conv2,bn1,bn2}.*``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atr_demo.audio import FrontendConfig, LogMelFrontend, to_blocks
from atr_demo.checkpoint import verify_state_dict
from atr_demo.errors import CheckpointError
from atr_demo.fileio import cache_home

logger = logging.getLogger(__name__)

__all__ = [
    "AisfxAudioBackbone",
    "AisfxCNN",
    "POOLINGS",
    "default_weights_path",
    "load_pretrained_weights",
    "segment_pool",
]

CHANNELS: tuple[int, int, int, int] = (64, 128, 256, 512)
WEIGHTS_ENV = "ATR_DEMO_AISFX_WEIGHTS"


POOLINGS = ("mean", "max", "meanmax")
"""How a clip's per-block embeddings are pooled (:func:`segment_pool`)."""


class ConvBlock(nn.Module):
    """conv3×3 → BN → ReLU → conv3×3 → BN → ReLU → max-pool(pool) (pool 1 = none).

    Shapes: (B, in, H, W) -> (B, out, H // pool, W // pool).
    """

    def __init__(self, in_channels: int, out_channels: int, pool: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.pool = pool
        for conv in (self.conv1, self.conv2):
            nn.init.kaiming_uniform_(conv.weight, nonlinearity="leaky_relu")

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        if self.pool > 1:
            x = F.max_pool2d(x, kernel_size=self.pool)
        return x

    def fused_params(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """BN folded into the convs: (w1, b1, w2, b2), valid for eval-mode BN only."""
        w1, b1 = _fold_bn(self.conv1, self.bn1)
        w2, b2 = _fold_bn(self.conv2, self.bn2)
        return w1, b1, w2, b2


def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """``BN(conv(x)) = conv'(x)`` with ``W' = W·s``, ``b' = β − μ·s``, ``s = γ / √(σ² + ε)``."""
    assert bn.running_mean is not None and bn.running_var is not None
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    weight = conv.weight * scale[:, None, None, None]
    bias = bn.bias - bn.running_mean * scale
    return weight, bias


class EmbeddingNet(nn.Module):
    """The four conv blocks (submodule names match the original checkpoint)."""

    def __init__(self) -> None:
        super().__init__()
        c1, c2, c3, c4 = CHANNELS
        self.conv_block1 = ConvBlock(1, c1, pool=2)
        self.conv_block2 = ConvBlock(c1, c2, pool=2)
        self.conv_block3 = ConvBlock(c2, c3, pool=2)
        self.conv_block4 = ConvBlock(c3, c4, pool=1)

    def blocks(self) -> tuple[ConvBlock, ConvBlock, ConvBlock, ConvBlock]:
        return (self.conv_block1, self.conv_block2, self.conv_block3, self.conv_block4)


class AisfxCNN(nn.Module):
    """aiSFX 9-layer CNN: (B, 100, 96) log-mel blocks -> (B, 512) embeddings.

    ``forward`` picks the path:

    * training mode, or autograd needed (any parameter requires grad and grad mode is on):
      the plain conv → BN → ReLU graph (BN uses batch statistics in training mode);
    * eval mode without autograd: BN folded into the convs (cached, recomputed when any
      parameter/buffer changes or moves), channels_last. Set ``fused_inference = False`` to
      force the plain graph (the benchmark's baseline).

    Both give the same result up to float rounding (≈1e-6 relative).
    """

    output_dim = 512

    def __init__(self) -> None:
        super().__init__()
        self.embedding_net = EmbeddingNet()
        self.fused_inference = True
        self._fused_cache: tuple[tuple[object, ...], list[tuple[Tensor, Tensor, Tensor, Tensor]]] | None = None

    def _state_key(self) -> tuple[object, ...] | None:
        """Identity + version of every parameter/buffer; None if a version is unavailable."""
        key = []
        for t in list(self.parameters()) + list(self.buffers()):
            try:
                version = t._version
            except RuntimeError:  # inference tensors have no version counter: do not cache
                return None
            key.append((t.data_ptr(), version, t.dtype, t.device))
        return tuple(key)

    def _fused(self) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
        key = self._state_key()
        if key is not None and self._fused_cache is not None and self._fused_cache[0] == key:
            return self._fused_cache[1]
        with torch.no_grad():
            params = []
            for block in self.embedding_net.blocks():
                w1, b1, w2, b2 = block.fused_params()
                params.append((
                    w1.contiguous(memory_format=torch.channels_last), b1.contiguous(),
                    w2.contiguous(memory_format=torch.channels_last), b2.contiguous(),
                ))
        self._fused_cache = (key, params) if key is not None else None
        return params

    def _use_fused(self) -> bool:
        if self.training or not self.fused_inference:
            return False
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()):
            return False
        return True

    def forward(self, x: Tensor) -> Tensor:
        """Args: x (B, frames, n_mels) (100 × 96 for the pretrained net). Returns (B, 512)."""
        if x.ndim != 3:
            raise ValueError(f"AisfxCNN expects (batch, frames, n_mels), got shape {tuple(x.shape)}")
        return self.pool(self.run_blocks(x.unsqueeze(1), 0, len(CHANNELS)))  # (B, 1, T, F) in

    def run_blocks(self, h: Tensor, start: int, stop: int) -> Tensor:
        """Conv blocks ``start .. stop - 1`` (0-based) on feature maps, by the path ``forward`` picks.

        Shapes for 100 × 96 input blocks: block input (B, 1, 100, 96) → after block 1
        (B, 64, 50, 48) → 2 (B, 128, 25, 24) → 3 (B, 256, 12, 12) → 4 (B, 512, 12, 12). The fused
        path returns channels_last tensors (same values; ``.contiguous()`` for the usual layout).
        """
        blocks = self.embedding_net.blocks()[start:stop]
        if self._use_fused():
            h = h.contiguous(memory_format=torch.channels_last)
            for block, (w1, b1, w2, b2) in zip(blocks, self._fused()[start:stop], strict=True):
                h = F.relu_(F.conv2d(h, w1, b1, padding=1))
                h = F.relu_(F.conv2d(h, w2, b2, padding=1))
                if block.pool > 1:
                    h = F.max_pool2d(h, kernel_size=block.pool)
        else:
            for block in blocks:
                h = block(h)
        return h

    @staticmethod
    def pool(h: Tensor) -> Tensor:
        """(B, 512, T', F') → (B, 512): mean over mel (F'), then max over time (T')."""
        return h.mean(dim=3).amax(dim=2)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        self._fused_cache = None
        return super()._apply(fn, recurse)


class AisfxAudioBackbone(nn.Module):
    """Waveforms -> clip embeddings with the aiSFX CNN.

    For each clip: log-mel (:class:`LogMelFrontend`) -> blocks of 100 frames, hop 50
    (:func:`to_blocks`) -> CNN -> one 512-d vector per block -> pooled over the clip's blocks
    (``"mean"``: arithmetic mean, ``"max"``: element-wise max, ``"meanmax"``: both concatenated,
    [mean ‖ max], 1024-d). All blocks of all clips go
    through the CNN together; in eval mode in chunks of ``max_blocks_per_batch`` blocks
    (default ``None``: 8 on CPU, where small chunks stay in cache and measured ~10 % faster than
    64, and 256 on accelerators). Training mode uses one batch (BatchNorm batch statistics).

    Attributes:
        sample_rate: the rate (Hz) the input waveforms must have (44100 by default).
        output_dim: 512, or 1024 for ``"meanmax"``.
    """

    def __init__(self, frontend: FrontendConfig | None = None, pooling: str = "mean") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.output_dim = 2 * AisfxCNN.output_dim if pooling == "meanmax" else AisfxCNN.output_dim
        self.frontend_config = frontend or FrontendConfig()
        self.sample_rate: int = int(self.frontend_config.sample_rate)
        self.pooling = pooling
        self.max_blocks_per_batch: int | None = None
        self.frontend = LogMelFrontend(self.frontend_config)
        self.cnn = AisfxCNN()

    def clip_blocks(self, wave: Tensor) -> Tensor:
        """One mono waveform (samples,) -> its network input blocks (n_blocks, 100, 96)."""
        if wave.ndim != 1:
            raise ValueError(f"expected a mono waveform of shape (samples,), got {tuple(wave.shape)}")
        cfg = self.frontend_config
        return to_blocks(self.frontend(wave), cfg.block_frames, cfg.block_hop_frames)

    def forward(self, waveforms: list[Tensor]) -> Tensor:
        """Args: waveforms, N mono tensors (samples_i,) at ``sample_rate``. Returns (N, output_dim)."""
        if len(waveforms) == 0:
            raise ValueError("AisfxAudioBackbone needs at least one waveform")
        with torch.no_grad():
            blocks = [self.clip_blocks(w) for w in waveforms]  # the front-end has no parameters
        counts = [b.shape[0] for b in blocks]
        x = torch.cat(blocks, dim=0).to(self.cnn.embedding_net.conv_block1.conv1.weight.dtype)
        chunk = self.max_blocks_per_batch or (8 if x.device.type == "cpu" else 256)
        if self.training or x.shape[0] <= chunk:
            emb = self.cnn(x)
        else:
            emb = torch.cat([self.cnn(part) for part in x.split(chunk)], dim=0)
        return segment_pool(emb, counts, self.pooling)


def segment_pool(emb: Tensor, counts: list[int], pooling: str) -> Tensor:
    """Pool consecutive segments of rows: (sum(counts), D) -> (len(counts), D), or (len(counts), 2D)
    for ``"meanmax"`` ([mean ‖ max]).

    Pads to (N, max_count, D) and reduces with a mask (no atomics: deterministic on any device).
    """
    if pooling == "meanmax":
        return torch.cat([segment_pool(emb, counts, "mean"), segment_pool(emb, counts, "max")], dim=1)
    n, width = len(counts), max(counts)
    lengths = torch.tensor(counts, device=emb.device)
    padded = torch.nn.utils.rnn.pad_sequence(list(emb.split(counts)), batch_first=True)  # (N, M, D)
    mask = (torch.arange(width, device=emb.device)[None, :] < lengths[:, None])[..., None]  # (N, M, 1)
    if pooling == "mean":
        return (padded * mask).sum(dim=1) / lengths[:, None].to(emb.dtype)
    return padded.masked_fill(~mask, float("-inf")).amax(dim=1).reshape(n, -1)


def default_weights_path() -> Path:
    """Where the converted weights live.

    ``$ATR_DEMO_AISFX_WEIGHTS`` if set, else ``$ATR_DEMO_HOME/aisfx/aisfx_cnn.safetensors``
    with ``ATR_DEMO_HOME`` defaulting to ``~/.cache/atr_demo``.
    """
    explicit = os.environ.get(WEIGHTS_ENV)
    if explicit:
        return Path(explicit).expanduser()
    return cache_home() / "aisfx" / "aisfx_cnn.safetensors"


def load_pretrained_weights(
    module: AisfxCNN | AisfxAudioBackbone, path: str | Path | None = None
) -> Path:
    """Strictly load the converted aiSFX weights into ``module`` (its CNN).

    Args:
        module: an :class:`AisfxCNN`, or an :class:`AisfxAudioBackbone` (loads into ``.cnn``).
        path: safetensors file; default :func:`default_weights_path`.

    Returns:
        the path loaded.

    Raises:
        CheckpointError: file missing/unreadable, or a missing, unexpected or mis-shaped key
        (named in the message).
    """
    from safetensors.torch import load_file

    cnn = module.cnn if isinstance(module, AisfxAudioBackbone) else module
    if not isinstance(cnn, AisfxCNN):
        raise TypeError(f"expected AisfxCNN or AisfxAudioBackbone, got {type(module).__name__}")
    weights = Path(path).expanduser() if path is not None else default_weights_path()
    if not weights.is_file():
        raise CheckpointError(
            f"aiSFX weights not found at {weights}; run `make install` or "
            "`python -m training convert-aisfx` to create them "
            f"(or point ${WEIGHTS_ENV} at an existing file)"
        )
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(
            f"cannot read aiSFX weights {weights} ({exc}); re-create them with "
            "`python -m training convert-aisfx --force`"
        ) from exc
    verify_state_dict(
        cnn.state_dict(), state, f"aiSFX weights {weights}",
        "Re-create them with `python -m training convert-aisfx --force`",
    )
    cnn.load_state_dict(state, strict=True)
    logger.info("loaded aiSFX weights from %s", weights)
    return weights
