"""A searchable sound library: a folder of audio files, their embeddings, and their metadata.

Embeddings are cached on disk per model, keyed by the SHA-256 of each file's bytes, so
re-indexing a folder only embeds new or changed files. The cache folder for a model is
``<cache_dir>/<model fingerprint>/`` holding ``embeddings.safetensors`` (one tensor per content
hash). A ``gallery.jsonl`` (or ``manifest.jsonl``) in the folder, one JSON object per clip with
an ``audio`` path relative to the folder and optional ``caption``/``captions``, ``source``,
``author``, ``licence``, gives each clip its metadata.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from atr_demo.audio import load_audio
from atr_demo.errors import ATRError, AudioError
from atr_demo.fileio import AUDIO_EXTENSIONS, TensorStore, cache_home, file_digest
from atr_demo.model import ATRModel

logger = logging.getLogger(__name__)

METADATA_FILES = ("gallery.jsonl", "manifest.jsonl")
#: File name of a model's embedding store inside its cache folder.
EMBEDDINGS_NAME = "embeddings.safetensors"


def default_cache_dir() -> Path:
    """``<cache home>/embeddings`` (see :func:`atr_demo.fileio.cache_home`)."""
    return cache_home() / "embeddings"


def model_fingerprint(model: ATRModel) -> str:
    """A short digest of the model's config and the weights that produce audio embeddings."""
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for key, tensor in sorted(model.checkpoint_state_dict().items()):
        if key.startswith(("audio_", "metric.")):
            digest.update(key.encode())
            digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:16]


def find_audio_files(root: str | Path) -> list[Path]:
    """Audio files under ``root`` (recursive, sorted, hidden files skipped)."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise ATRError(f"{root} is neither an audio file nor a folder")
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def read_metadata(root: Path) -> dict[str, dict[str, Any]]:
    """Metadata rows of ``root``'s gallery.jsonl/manifest.jsonl keyed by resolved audio path."""
    for name in METADATA_FILES:
        path = root / name
        if path.is_file():
            rows = {}
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ATRError(f"{path}:{n} is not valid JSON ({exc})") from exc
                if "audio" in row:
                    rows[str((root / row["audio"]).resolve())] = row
            return rows
    return {}


@dataclass
class Gallery:
    """Indexed clips: ``files[i]`` has embedding ``embeddings[i]`` and metadata ``metadata[i]``."""

    files: list[Path]
    embeddings: torch.Tensor
    metadata: list[dict[str, Any]]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.files)

    def captions(self) -> list[str]:
        """The first caption of each clip that has one."""
        return [c for m in self.metadata for c in (m.get("captions") or [m.get("caption")])[:1] if c]

    def extend(self, other: Gallery) -> Gallery:
        """A new gallery with ``other``'s clips appended (files already present are skipped)."""
        known = {str(f) for f in self.files}
        keep = [i for i, f in enumerate(other.files) if str(f) not in known]
        return Gallery(
            files=self.files + [other.files[i] for i in keep],
            embeddings=torch.cat([self.embeddings, other.embeddings[keep]]),
            metadata=self.metadata + [other.metadata[i] for i in keep],
            skipped=self.skipped + other.skipped,
        )


def index_gallery(
    model: ATRModel,
    sources: list[str | Path] | str | Path,
    cache_dir: str | Path | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> Gallery:
    """Embed every audio file under ``sources`` (files or folders), reusing the disk cache.

    Files that fail to decode are skipped and listed in :attr:`Gallery.skipped` with the reason.
    """
    if isinstance(sources, (str, Path)):
        sources = [sources]
    files: list[Path] = []
    metadata_by_path: dict[str, dict[str, Any]] = {}
    for source in sources:
        source = Path(source)
        files.extend(find_audio_files(source))
        if source.is_dir():
            metadata_by_path.update(read_metadata(source))
    cache = TensorStore(Path(cache_dir or default_cache_dir()) / model_fingerprint(model) / EMBEDDINGS_NAME,
                        "embedding cache")
    digests = {f: file_digest(f) for f in files}
    todo = [f for f in files if digests[f] not in cache]
    skipped: list[tuple[Path, str]] = []
    if todo:
        logger.info("embedding %d new or changed file(s) of %d", len(todo), len(files))
    bar = tqdm(total=len(todo), desc="indexing", unit="clip", disable=not progress or not todo)
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        waves, ok = [], []
        for f in batch:
            try:
                waves.append(load_audio(f, model.sample_rate, model.config.max_duration_s))
                ok.append(f)
            except AudioError as exc:
                logger.warning("skipping %s: %s", f, exc)
                skipped.append((f, str(exc)))
        if waves:
            with torch.inference_mode():
                model.eval()
                emb = model.encode_audio(waves).cpu()
            for f, e in zip(ok, emb, strict=True):
                cache.put(digests[f], e)
        bar.update(len(batch))
    bar.close()
    cache.save()
    bad = {f for f, _ in skipped}
    kept = [f for f in files if f not in bad]
    metadata = [
        {"file": str(f), **metadata_by_path.get(str(f.resolve()), {})} for f in kept
    ]
    embeddings = (
        torch.stack([cache.get(digests[f]) for f in kept])
        if kept else torch.empty(0, model.config.embed_dim)
    )
    return Gallery(files=kept, embeddings=embeddings, metadata=metadata, skipped=skipped)
