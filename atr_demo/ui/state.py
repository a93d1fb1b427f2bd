"""The app's state: model, shared gallery and caches (:class:`AppState`), and :func:`make_state`."""

from __future__ import annotations

import functools
import logging
import random
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from atr_demo.audio import load_audio
from atr_demo.confidence import (
    calibrate_gallery,
    caption_owners,
    check_not_silent,
    metric_ranks_like_cosine,
    model_digest,
    read_calibration,
)
from atr_demo.errors import ATRError
from atr_demo.gallery import Gallery, index_gallery, model_fingerprint
from atr_demo.gallery import clip_captions as clip_captions  # re-exported for the callbacks
from atr_demo.index.view import IndexGallery
from atr_demo.limits import Limits
from atr_demo.model import ATRModel
from atr_demo.retrieval import MODES
from atr_demo.search import text_anchors
from atr_demo.ui.errors import UserError
from atr_demo.zeroshot import ESC50_CLASSES, LabelSet, embed_labels

logger = logging.getLogger(__name__)

#: Longest upload accepted by the app (seconds); the model's own limit applies when lower.
DEFAULT_MAX_UPLOAD_S = 120.0
#: Prompt template when neither the model nor the user gives one.
DEFAULT_TEMPLATE = "the sound of {}"
#: Most clip names offered in the transport tab's picker (large galleries: a sample).
MAX_DROPDOWN = 1000


@dataclass
class AppState:
    """What every callback needs: the model, the gallery, and caches shared by all sessions.

    Attributes:
        model: the joint audio-text model (eval mode).
        gallery: the indexed sound library every user searches.
        roots: folders the gallery came from (the server may serve files from them).
        cache_dir: on-disk embedding cache (``None``: the library default).
        max_upload_s: longest accepted upload / recording in seconds.
        model_ref: how the model was asked for (``--model`` and revision), for the model panel.
        limits: per-request bounds (files, prompts, upload size, k; see :mod:`atr_demo.limits`).
        calibration: the "no good match" calibration (:func:`atr_demo.confidence.calibrate_no_match`):
            shipped with the gallery for this model, else computed from the gallery's captions by
            :meth:`warm_up`; ``None`` until then or when the gallery has too few captions.
    """

    model: ATRModel
    gallery: Gallery
    roots: list[Path] = field(default_factory=list)
    cache_dir: Path | None = None
    max_upload_s: float = DEFAULT_MAX_UPLOAD_S
    model_ref: str | None = None
    limits: Limits = field(default_factory=Limits)
    _served: Mapping[str, Path] | None = field(default=None, repr=False)
    _anchors: torch.Tensor | None = field(default=None, repr=False)
    _captions: tuple[list[str], list[int], torch.Tensor] | None = field(default=None, repr=False)
    _labels: dict[tuple[tuple[str, ...], tuple[str, ...]], LabelSet] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    calibration: dict[str, Any] | None = None
    _calibrated: bool = field(default=False, repr=False)
    _warm: threading.Event = field(default_factory=threading.Event, repr=False)

    def __post_init__(self) -> None:
        self.max_upload_s = min(float(self.max_upload_s), float(self.model.config.max_duration_s))

    @functools.cached_property
    def fingerprint(self) -> str:
        """The model's embedding fingerprint (:func:`atr_demo.gallery.model_fingerprint`), computed once."""
        return model_fingerprint(self.model)

    @property
    def modes(self) -> list[str]:
        """Scoring modes worth offering: ``metric`` only when it ranks differently from cosine
        (the ground metric ``M`` is not a multiple of the identity)."""
        if metric_ranks_like_cosine(self.model.metric):
            return [m for m in MODES if m != "metric"]
        return list(MODES)

    def no_match_threshold(self) -> float | None:
        """The cosine under which a best match is "no good match" (``None``: not calibrated)."""
        return float(self.calibration["threshold"]) if self.calibration else None

    def calibrate(self) -> dict[str, Any] | None:
        """Compute the calibration from the gallery's own captions when none was shipped (once)."""
        if not self._calibrated:
            if self.calibration is None and len(self.gallery):
                texts, _, emb = self.gallery_captions()
                self.calibration = calibrate_gallery(self.model, self.gallery, emb) if texts else None
                if self.calibration:
                    logger.info("no-match threshold %.3f computed from the gallery's captions",
                                self.calibration["threshold"])
            self._calibrated = True
        return self.calibration

    @property
    def mode_default(self) -> str:
        """The model's default scoring mode."""
        return self.model.config.scoring

    def text_anchors(self) -> torch.Tensor:
        """Reference captions that compete with a lone text query in transport mode (cached)."""
        with self._lock:
            if self._anchors is None:
                self._anchors = text_anchors(self.model, self.gallery)
            return self._anchors

    def gallery_captions(self) -> tuple[list[str], list[int], torch.Tensor]:
        """Every distinct caption of the gallery, the clip it belongs to, and its embedding (cached)."""
        with self._lock:
            if self._captions is None:
                texts, owners = (self.gallery.caption_owners() if isinstance(self.gallery, IndexGallery)
                                 else caption_owners(self.gallery))
                emb = self.model.embed_texts(texts) if texts else torch.empty(0, self.model.config.embed_dim)
                self._captions = (texts, [o[0] for o in owners], emb)
            return self._captions

    def label_set(self, labels: Sequence[str], templates: Sequence[str]) -> LabelSet:
        """Prompt-ensemble embeddings of ``labels`` (cached per labels and templates)."""
        key = (tuple(labels), tuple(templates))
        with self._lock:
            cached = self._labels.get(key)
        if cached is not None:
            return cached
        label_set = embed_labels(self.model, list(labels), list(templates))
        with self._lock:
            if len(self._labels) > 32:
                self._labels.clear()
            self._labels[key] = label_set
        return label_set

    def warm_up(self) -> None:
        """Fill the caches the first requests need (transport anchors, caption and ESC-50 label
        embeddings, the no-match calibration). Safe to run in a background thread while serving:
        a request that needs a cache meanwhile computes it (or waits for it) itself."""
        try:
            if len(self.gallery):
                self.text_anchors()
                self.gallery_captions()
                self.calibrate()
            self.label_set(list(ESC50_CLASSES), list(self.model.config.prompt_templates) or [DEFAULT_TEMPLATE])
        finally:
            self._warm.set()

    def warm_up_in_background(self) -> threading.Thread:
        """Run :meth:`warm_up` in a daemon thread (the page is served meanwhile); returns the thread."""
        thread = threading.Thread(target=self.warm_up, name="atr-warm-up", daemon=True)
        thread.start()
        return thread

    def combined(self, session: Gallery | None) -> Gallery:
        """The shared gallery plus a session's own uploads."""
        if session is None or len(session) == 0:
            return self.gallery
        return self.gallery.extend(session)

    def embed_upload(self, path: str | Path | None) -> torch.Tensor:
        """Decode an uploaded / recorded file and embed it → (1, d). Raises ATRError subclasses."""
        if path is None or str(path).strip() == "":
            raise UserError("no audio given: upload a file or record a clip first")
        wave = load_audio(path, self.model.sample_rate, self.max_upload_s)
        check_not_silent(wave, Path(path).name)
        with torch.inference_mode():
            self.model.eval()
            return self.model.encode_audio([wave]).cpu()


def make_state(
    model: ATRModel,
    gallery_dirs: Sequence[str | Path],
    cache_dir: str | Path | None = None,
    progress: bool = True,
    max_upload_s: float = DEFAULT_MAX_UPLOAD_S,
    limits: Limits | None = None,
) -> AppState:
    """Index ``gallery_dirs`` (on-disk cache, progress bar) and build the :class:`AppState`."""
    roots = [Path(d).expanduser().resolve() for d in gallery_dirs]
    for root in roots:
        if not root.exists():
            raise ATRError(f"gallery folder {root} does not exist: pass --gallery with a folder of audio files")
    gallery = index_gallery(model, list(roots), cache_dir=cache_dir, progress=progress)
    for path, reason in gallery.skipped:
        logger.warning("gallery: skipped %s (%s)", path, reason)
    logger.info("gallery: %d clip(s) indexed from %s", len(gallery), ", ".join(map(str, roots)))
    return AppState(
        model=model, gallery=gallery, roots=roots,
        cache_dir=Path(cache_dir) if cache_dir else None, max_upload_s=max_upload_s,
        limits=limits or Limits(max_upload_s=max_upload_s),
        calibration=read_calibration(roots, model_digest(model)),
    )


def clip_choices(gallery: Gallery) -> list[str]:
    """Unique, readable names of the gallery's clips (the file name, made unique with its folder;
    for an opened index, the stored path relative to the library folder, built per clip on no call)."""
    if isinstance(gallery, IndexGallery):
        return gallery.names()
    names = [Path(f).name for f in gallery.files]
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return [n if counts[n] == 1 else f"{Path(f).parent.name}/{n}" for n, f in zip(names, gallery.files, strict=True)]


def dropdown_choices(gallery: Gallery, keep: Sequence[str], limit: int = MAX_DROPDOWN) -> list[str]:
    """Clip names for the transport tab's picker: all of them, or a seeded sample of ``limit``
    (plus ``keep``) for large galleries; any other clip name can still be typed in."""
    names = clip_choices(gallery)
    if len(names) <= limit:
        return names
    sample = set(random.Random(0).sample(names, limit)) | set(keep)
    return sorted(sample)
