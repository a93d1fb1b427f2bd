"""The joint audio-text model, its checkpoint format, and the model factory.

A checkpoint is a folder::

    config.json        ModelConfig (backbone ids and revisions, front-end, dims, metric, ε, s)
    model.safetensors  the weights: heads, ground metric, and every tower that stores weights
    audio_backbone/    a trained hf_audio tower's transformers config and feature extractor
    text_backbone/     a trained hf_text tower's transformers config and tokenizer
    README.md          model card (optional for loading)

A frozen ``hf_*`` tower is referenced by hub id (or folder) and revision; its weights are not
duplicated. A trained one is self-contained: its weights are in ``model.safetensors``, its
config and tokenizer / feature extractor in its sub-folder, and ``config.json`` pins the source
it started from (the hub commit it resolved to, or a digest of the local folder), so the
checkpoint loads with no access to the base model.

Loading is strict: a key missing from or unexpected in ``model.safetensors`` raises
:class:`~atr_demo.errors.CheckpointError` naming the key. Nothing is unpickled.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from atr_demo.audio import load_audio
from atr_demo.backbones import build_backbone
from atr_demo.checkpoint import verify_state_dict
from atr_demo.config import EXTERNAL_KINDS, BackboneConfig, ModelConfig
from atr_demo.errors import CheckpointError, ConfigError
from atr_demo.fileio import atomic_replace_dir, atomic_write
from atr_demo.metric import MahalanobisMetric

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
BUNDLED_DIR_NAME = "bundled_model"
#: Checkpoint sub-folder of each trained ``hf_*`` tower's config and tokenizer / feature extractor.
TOWER_DIRS = {"audio": "audio_backbone", "text": "text_backbone"}
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _head(in_dim: int, out_dim: int, kind: str, dropout: float) -> nn.Module:
    if kind == "identity":
        if in_dim != out_dim:
            raise ConfigError(
                f"an identity head needs embed_dim equal to the backbone width ({in_dim}), got {out_dim}"
            )
        return nn.Identity()
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(
        nn.Linear(in_dim, in_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(in_dim, out_dim)
    )


class ATRModel(nn.Module):
    """Audio tower f, text tower g, projection heads, and the ground metric M.

    ``encode_*`` return L2-normalised joint embeddings of shape (N, embed_dim). The backbone
    features (before the heads) are exposed by ``audio_features`` / ``text_features`` so that
    training on frozen backbones can cache them and call ``project_*``.
    """

    def __init__(self, config: ModelConfig, pretrained: bool = True, root: str | Path | None = None) -> None:
        super().__init__()
        self.config = config  # validated when built and on every assignment
        self.audio_backbone = build_backbone(config.audio, pretrained, root)
        self.text_backbone = build_backbone(config.text, pretrained, root)
        self.audio_head = _head(self.audio_backbone.output_dim, config.embed_dim, config.head, config.head_dropout)
        self.text_head = _head(
            self.text_backbone.output_dim, config.embed_dim, config.text_head or config.head, config.head_dropout
        )
        self.metric = MahalanobisMetric(
            config.embed_dim, learnable=config.metric == "mahalanobis", eig_floor=config.eig_floor
        )
        for tower, cfg in ((self.audio_backbone, config.audio), (self.text_backbone, config.text)):
            tower.requires_grad_(cfg.trainable)

    @property
    def sample_rate(self) -> int:
        """Sample rate the audio tower expects (waveforms are resampled to it on load)."""
        return int(self.audio_backbone.sample_rate)

    @property
    def device(self) -> torch.device:
        return next(self.audio_head.parameters()).device

    # -- features (backbone outputs) --------------------------------------------------------
    def audio_features(self, waveforms: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mono waveforms at :attr:`sample_rate` → backbone features (N, D_audio)."""
        return self.audio_backbone([w.to(self.device) for w in waveforms])

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts → backbone features (N, D_text)."""
        return self.text_backbone(list(texts))

    # -- projection to the joint space ----------------------------------------------------------
    def project_audio(self, features: torch.Tensor) -> torch.Tensor:
        """(N, D_audio) features → (N, embed_dim) L2-normalised embeddings."""
        return F.normalize(self.audio_head(features), dim=-1)

    def project_text(self, features: torch.Tensor) -> torch.Tensor:
        """(N, D_text) features → (N, embed_dim) L2-normalised embeddings."""
        return F.normalize(self.text_head(features), dim=-1)

    def encode_audio(self, waveforms: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mono waveforms at :attr:`sample_rate` → (N, embed_dim) L2-normalised embeddings."""
        return self.project_audio(self.audio_features(waveforms))

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts → (N, embed_dim) L2-normalised embeddings."""
        return self.project_text(self.text_features(texts))

    @torch.inference_mode()
    def embed_files(self, paths: Sequence[str | Path], batch_size: int = 16) -> torch.Tensor:
        """Decode and embed audio files → (N, embed_dim) on the CPU, in inference mode."""
        was_training = self.training
        self.eval()
        try:
            chunks = []
            for start in range(0, len(paths), batch_size):
                waves = [
                    load_audio(p, self.sample_rate, self.config.max_duration_s)
                    for p in paths[start : start + batch_size]
                ]
                chunks.append(self.encode_audio(waves).cpu())
            return torch.cat(chunks) if chunks else torch.empty(0, self.config.embed_dim)
        finally:
            self.train(was_training)

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Embed texts → (N, embed_dim) on the CPU, in inference mode."""
        was_training = self.training
        self.eval()
        try:
            chunks = [
                self.encode_text(texts[start : start + batch_size]).cpu()
                for start in range(0, len(texts), batch_size)
            ]
            return torch.cat(chunks) if chunks else torch.empty(0, self.config.embed_dim)
        finally:
            self.train(was_training)

    # -- checkpoints ---------------------------------------------------------------------------
    def _stored_prefixes(self) -> tuple[str, ...]:
        prefixes = ["audio_head.", "text_head.", "metric."]
        if self.config.audio.stores_weights:
            prefixes.append("audio_backbone.")
        if self.config.text.stores_weights:
            prefixes.append("text_backbone.")
        return tuple(prefixes)

    def checkpoint_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors a checkpoint stores (contiguous CPU copies)."""
        prefixes = self._stored_prefixes()
        return {
            k: v.detach().cpu().contiguous()
            for k, v in self.state_dict().items()
            if k.startswith(prefixes)
        }

    def load_checkpoint_state_dict(self, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        """Strictly load tensors produced by :meth:`checkpoint_state_dict`.

        Raises :class:`CheckpointError` naming missing keys, unexpected keys, or shape mismatches.
        """
        verify_state_dict(
            self.checkpoint_state_dict(), state, source,
            "The weights and config.json come from different models, or the file is damaged",
        )
        self.load_state_dict(state, strict=False)

    def saved_config(self) -> ModelConfig:
        """The config :meth:`save_pretrained` writes: :attr:`config` with every trained ``hf_*``
        tower's ``files`` sub-folder set and its source pinned (``revision``: the hub commit it
        resolved to; ``source_digest``: the digest of a local source folder). A tower loaded from
        a self-contained checkpoint keeps the pins it was saved with."""
        data = self.config.to_dict()
        for tower, folder in TOWER_DIRS.items():
            cfg: BackboneConfig = getattr(self.config, tower)
            if not (cfg.trainable and cfg.kind in EXTERNAL_KINDS):
                continue
            if cfg.files is None:
                revision, digest = getattr(self, f"{tower}_backbone").source_pin()
                data[tower]["revision"] = revision
                data[tower]["source_digest"] = digest
            data[tower]["files"] = folder
        return ModelConfig.from_dict(data)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json``, ``model.safetensors`` and each trained ``hf_*`` tower's sub-folder
        (:data:`TOWER_DIRS`) into ``directory``, atomically per file and per sub-folder."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = self.saved_config()
        for tower, folder in TOWER_DIRS.items():
            if getattr(config, tower).files is not None:
                tmp = directory / f".{folder}.tmp-{os.getpid()}"
                if tmp.exists():
                    shutil.rmtree(tmp)
                tmp.mkdir()
                getattr(self, f"{tower}_backbone").save_files(tmp)
                atomic_replace_dir(tmp, directory / folder)
        atomic_write(directory / CONFIG_NAME, config.save)
        metadata = {"format": "pt", "atr_demo_config_version": str(self.config.version)}
        state = self.checkpoint_state_dict()
        atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(state, str(p), metadata))
        return directory


# -- the factory -------------------------------------------------------------------------------

def tiny_config() -> ModelConfig:
    """A tiny randomly initialised model for tests: hashing text tower, 1-D CNN audio tower."""
    return ModelConfig(
        audio=BackboneConfig(kind="tiny_audio", dim=32, trainable=True),
        text=BackboneConfig(kind="tiny_text", dim=32, trainable=True),
        embed_dim=16,
        name="tiny",
        max_duration_s=120.0,
    )


def base_config() -> ModelConfig:
    """The real offline backbones (aiSFX CNN + all-MiniLM-L6-v2) with untrained linear heads."""
    return ModelConfig(name="aisfx-minilm-untrained")


#: Built-in model names → config factories (random heads, seeded).
BUILTIN_MODELS = {"tiny": tiny_config, "aisfx-minilm": base_config}


def bundled_model_dir() -> Path:
    """Folder of the bundled checkpoint (``ATR_BUNDLED_MODEL`` overrides it)."""
    override = os.environ.get("ATR_BUNDLED_MODEL")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent / BUNDLED_DIR_NAME


def create_model(
    config: ModelConfig, seed: int = 0, pretrained: bool = True, root: str | Path | None = None
) -> ATRModel:
    """A new model from ``config``; heads initialised from ``seed`` (deterministic). ``root``: the
    checkpoint folder holding the trained towers' sub-folders (see :func:`build_backbone`)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ATRModel(config, pretrained=pretrained, root=root)
    return model.eval()


def load_from_dir(directory: str | Path) -> ATRModel:
    """Load a checkpoint folder strictly (see the module docstring for the layout)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint folder {directory} does not exist")
    try:
        config = ModelConfig.load(directory / CONFIG_NAME)
    except ConfigError as exc:
        raise CheckpointError(f"cannot read the checkpoint config: {exc}") from exc
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"no {WEIGHTS_NAME} in {directory}: the checkpoint is incomplete")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{weights} is not a readable safetensors file ({exc}): re-download or re-save it"
        ) from exc
    model = create_model(config, pretrained=False, root=directory)
    model.load_checkpoint_state_dict(state, source=str(weights))
    model.source = str(directory)  # type: ignore[assignment]
    return model.eval()


def resolve_model_dir(name_or_path: str, revision: str | None = None) -> Path:
    """Map a local folder or a hub repo id to a local checkpoint folder.

    Hub repos go through ``huggingface_hub.snapshot_download``, which serves from the local
    cache when ``HF_HUB_OFFLINE=1`` is set.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if not _REPO_ID_RE.match(name_or_path):
        raise CheckpointError(
            f"model {name_or_path!r} is neither a folder, a built-in name ({', '.join(['bundled', *BUILTIN_MODELS])}) "
            "nor a hub repo id of the form owner/name"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(name_or_path, revision=revision))
    except LocalEntryNotFoundError as exc:
        raise CheckpointError(
            f"model {name_or_path!r} is not in the local hub cache and the hub cannot be reached: "
            "go online once to download it, or pass a local checkpoint folder"
        ) from exc
    except (RepositoryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise CheckpointError(f"cannot download model {name_or_path!r}: {exc}") from exc


def load_model(name_or_path: str | None = None, revision: str | None = None) -> ATRModel:
    """The model factory: bundled checkpoint, built-in name, local folder, or hub repo id.

    Args:
        name_or_path: ``None`` or ``"bundled"`` for the bundled checkpoint; ``"tiny"`` or
            ``"aisfx-minilm"`` for a built-in untrained model; a checkpoint folder; or
            ``owner/name`` on the Hugging Face Hub.
        revision: hub branch, tag or commit (hub repo ids only).
    """
    if name_or_path in (None, "", "bundled"):
        directory = bundled_model_dir()
        if not (directory / CONFIG_NAME).is_file():
            raise CheckpointError(
                f"the bundled checkpoint is missing from {directory}: pass --model with a checkpoint "
                "folder, a hub repo id, or a built-in name (tiny, aisfx-minilm)"
            )
        return load_from_dir(directory)
    if name_or_path in BUILTIN_MODELS:
        return create_model(BUILTIN_MODELS[name_or_path]())
    return load_from_dir(resolve_model_dir(name_or_path, revision))
