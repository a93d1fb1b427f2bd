"""A searchable sound library: a folder of audio files, their embeddings, and their metadata.

Embeddings are cached on disk per model, keyed by the SHA-256 of each file's bytes, so
re-indexing a folder only embeds new or changed files. The cache folder for a model is
``<cache_dir>/<model fingerprint>/`` holding ``embeddings.safetensors`` (a
:class:`~atr_demo.fileio.TensorStore`: safe with concurrent writers, progress checkpointed while
indexing). A ``gallery.jsonl`` (or ``manifest.jsonl``) in the folder, one JSON object per clip with
an ``audio`` path relative to the folder and optional ``caption``/``captions``, ``source``,
``author``, ``licence``, gives each clip its metadata; ``in_training`` (true/false) says whether the
model saw the clip in training (:meth:`Gallery.held_out` keeps the clips it did not).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from atr_demo.audio import load_audio
from atr_demo.errors import ATRError, AudioError, InputFileError
from atr_demo.fileio import AUDIO_EXTENSIONS, TensorStore, cache_home, file_digest
from atr_demo.model import ATRModel

logger = logging.getLogger(__name__)

METADATA_FILES = ("gallery.jsonl", "manifest.jsonl")
#: File name of a model's embedding store inside its cache folder.
EMBEDDINGS_NAME = "embeddings.safetensors"
#: Environment variable forcing the CNN's inference precision (``fp32`` or ``bf16``).
PRECISION_ENV = "ATR_DEMO_PRECISION"
#: Longest time between two progress checkpoints of the embedding cache while indexing.
CHECKPOINT_SECONDS = 10.0


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


def open_cache(model: ATRModel, cache_dir: str | Path | None = None) -> TensorStore:
    """The embedding cache of ``model`` (a :class:`TensorStore` keyed by file digest)."""
    return TensorStore(Path(cache_dir or default_cache_dir()) / model_fingerprint(model) / EMBEDDINGS_NAME,
                       "embedding cache")


#: Folder of a gallery holding its shipped (precomputed) embeddings, one store per model fingerprint.
SHIPPED_DIR = "embeddings"


def shipped_embeddings_path(root: str | Path, fingerprint: str) -> Path:
    """Where a gallery folder ships precomputed embeddings for the model with ``fingerprint``:
    ``<root>/embeddings/<fingerprint>.safetensors``, a :class:`TensorStore` keyed by file digest
    (written by ``python -m training bundle-gallery --embeddings``)."""
    return Path(root) / SHIPPED_DIR / f"{fingerprint}.safetensors"


def seed_from_shipped(cache: TensorStore, sources: list[Path], fingerprint: str) -> int:
    """Put the shipped embeddings of ``sources``' folders for this model into ``cache`` (entries the
    cache lacks only); returns how many. A file whose digest is not shipped (changed or new) and a
    model with another fingerprint find nothing here and are embedded as usual."""
    added = 0
    for source in sources:
        path = shipped_embeddings_path(source, fingerprint)
        if not Path(source).is_dir() or not path.is_file():
            continue
        shipped = TensorStore(path, "shipped embeddings")
        for key in list(shipped.entries):
            if key not in cache:
                cache.put(key, shipped.get(key))
                added += 1
    if added:
        logger.info("%d embedding(s) taken from the gallery's shipped embeddings", added)
    return added


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def inference_precision() -> str:
    """``"bf16"`` when the CPU has native bfloat16 matrix units, else ``"fp32"``.

    Native means AMX (``amx_bf16``) or AVX-512 BF16 (``avx512_bf16``) in ``/proc/cpuinfo`` or
    ``torch.backends.cpu.get_cpu_capability()`` naming AMX, and oneDNN's bf16 path available. On
    such CPUs bf16 autocast roughly halves the CNN's time and keeps clip embeddings within cosine
    0.999 of fp32 (checked in tests/test_index.py); elsewhere bf16 is emulated and slower. The
    environment variable ``ATR_DEMO_PRECISION`` (``fp32`` or ``bf16``) overrides the choice.
    """
    forced = os.environ.get(PRECISION_ENV, "").strip().lower()
    if forced in ("fp32", "bf16"):
        return forced
    native = "AMX" in torch.backends.cpu.get_cpu_capability() or bool({"amx_bf16", "avx512_bf16"} & _cpu_flags())
    return "bf16" if native and torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def encode_waves(model: ATRModel, waves: list[torch.Tensor], precision: str = "fp32") -> torch.Tensor:
    """(N,) waveforms → (N, D) float32 L2-normalised embeddings, under bf16 autocast when asked."""
    model.eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        emb = model.encode_audio(waves)
    return torch.nn.functional.normalize(emb.float(), dim=-1).cpu()


def embed_into_cache(
    model: ATRModel,
    files: list[Path],
    keys: list[str],
    cache: TensorStore,
    batch_size: int = 8,
    progress: bool = True,
    checkpoint_s: float = CHECKPOINT_SECONDS,
    precision: str | None = None,
    durations: dict[str, float] | None = None,
) -> list[tuple[Path, str]]:
    """Embed ``files`` and put each embedding in ``cache`` under ``keys[i]``; return the skipped files.

    Decoding runs in a background thread one batch ahead of the CNN (PyAV, soundfile and the
    resampler release the GIL), so decoding overlaps inference. Progress is written as a
    :meth:`TensorStore.checkpoint` segment at least every ``checkpoint_s`` seconds and at the end,
    so a killed run keeps everything but the batches of the last ``checkpoint_s`` seconds.
    ``precision`` is ``"fp32"`` or ``"bf16"`` (default: :func:`inference_precision`). When
    ``durations`` is given, it receives each embedded clip's decoded duration in seconds by key.
    """
    precision = precision or inference_precision()
    skipped: list[tuple[Path, str]] = []
    if not files:
        return skipped
    logger.info("embedding %d clip(s) with %s inference", len(files), precision)
    batches = [list(range(i, min(i + batch_size, len(files)))) for i in range(0, len(files), batch_size)]

    def decode(batch: list[int]) -> list[tuple[int, torch.Tensor | AudioError]]:
        out: list[tuple[int, torch.Tensor | AudioError]] = []
        for i in batch:
            try:
                out.append((i, load_audio(files[i], model.sample_rate, model.config.max_duration_s)))
            except AudioError as exc:
                out.append((i, exc))
        return out

    bar = tqdm(total=len(files), desc="indexing", unit="clip", disable=not progress)
    last = time.monotonic()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="atr-decode") as pool:
        ahead = pool.submit(decode, batches[0])
        for n in range(len(batches)):
            decoded = ahead.result()
            if n + 1 < len(batches):
                ahead = pool.submit(decode, batches[n + 1])
            ok = [(i, w) for i, w in decoded if isinstance(w, torch.Tensor)]
            for i, err in decoded:
                if not isinstance(err, torch.Tensor):
                    logger.warning("skipping %s: %s", files[i], err)
                    skipped.append((files[i], str(err)))
            if ok:
                emb = encode_waves(model, [w for _, w in ok], precision)
                for (i, w), e in zip(ok, emb, strict=True):
                    cache.put(keys[i], e)
                    if durations is not None:
                        durations[keys[i]] = round(w.shape[-1] / model.sample_rate, 3)
            bar.update(len(decoded))
            if time.monotonic() - last >= checkpoint_s:
                cache.checkpoint()
                last = time.monotonic()
    bar.close()
    cache.checkpoint()
    return skipped


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
    fix = 'write one JSON object per line, e.g. {"audio": "dog.wav", "caption": "a dog barks"}'
    for name in METADATA_FILES:
        path = root / name
        if path.is_file():
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise InputFileError(f"{path} is not UTF-8 text (offset {exc.start}); save it as UTF-8") from exc
            except OSError as exc:  # unreadable: index the audio without metadata
                logger.warning("%s cannot be read (%s); clips are indexed without its metadata", path, exc)
                return {}
            rows = {}
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputFileError(f"{path} line {n} is not valid JSON ({exc.msg}); {fix}") from exc
                if not isinstance(row, dict):
                    raise InputFileError(f"{path} line {n} is a JSON {type(row).__name__}, not an object; {fix}")
                if not isinstance(row.get("audio", ""), str):
                    raise InputFileError(f"{path} line {n}: \"audio\" must be a file path (text); {fix}")
                if "audio" in row:
                    rows[str((root / row["audio"]).resolve())] = row
            return rows
    return {}


def clip_captions(meta: dict[str, Any]) -> list[str]:
    """All non-blank captions of one clip's metadata (``captions`` list, else ``caption``), stripped."""
    captions = meta.get("captions") or ([meta["caption"]] if meta.get("caption") else [])
    return [str(c).strip() for c in captions if str(c).strip()]


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

    def rows(self, idx: slice | list[int]) -> torch.Tensor:
        """(m, d) float32 embeddings of the clips ``idx`` selects."""
        return self.embeddings[idx]

    def subset(self, idx: list[int]) -> Gallery:
        """A new gallery of the clips ``idx`` selects, in that order (skipped files are kept)."""
        return Gallery(
            files=[self.files[i] for i in idx],
            embeddings=self.embeddings[idx] if idx else self.embeddings[:0],
            metadata=[self.metadata[i] for i in idx],
            skipped=list(self.skipped),
        )

    def held_out(self) -> Gallery:
        """The clips whose metadata says ``in_training: false``; the whole gallery when no clip
        carries the mark (galleries without it)."""
        if not any("in_training" in m for m in self.metadata):
            return self
        return self.subset([i for i, m in enumerate(self.metadata) if m.get("in_training") is False])

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


def _digests(files: list[Path]) -> tuple[dict[Path, str], list[tuple[Path, str]]]:
    """Content digests of ``files``, and the files that cannot be read with the reason (never raises)."""
    digests: dict[Path, str] = {}
    unreadable: list[tuple[Path, str]] = []
    for f in files:
        try:
            digests[f] = file_digest(f)
        except OSError as exc:  # permissions, I/O error: a per-file reason, not an abort
            reason = (f"{f.name} cannot be read ({exc.strerror or exc}); make it readable (`chmod a+r FILE`) "
                      "or move it out of the folder")
            logger.warning("skipping %s: %s", f, reason)
            unreadable.append((f, reason))
    return digests, unreadable


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
    cache = open_cache(model, cache_dir)
    seed_from_shipped(cache, [Path(s) for s in sources], cache.path.parent.name)
    digests, unreadable = _digests(files)
    todo = [f for f in files if f in digests and digests[f] not in cache]
    if todo:
        logger.info("embedding %d new or changed file(s) of %d", len(todo), len(files))
    skipped = embed_into_cache(model, todo, [digests[f] for f in todo], cache, batch_size=batch_size,
                               progress=progress)
    cache.save()
    skipped = unreadable + skipped
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
