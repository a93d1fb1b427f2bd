"""How far to trust an answer: silence, "no good match", and whether metric scoring differs from cosine.

* **Silence.** :func:`rms_dbfs` is a waveform's RMS level in dB relative to full scale
  (``20 log10 sqrt(mean(x²))``; a full-scale sine is −3 dBFS). Below :data:`SILENCE_DBFS`
  a clip is reported as silence instead of being labelled (the model would still rank labels
  for it, and confidently: noise floors look like "wind" or "church bells").
* **No good match.** :func:`calibrate_no_match` derives a cosine threshold from held-out captioned
  clips (the bundled gallery is the corpus' test split): the 95 % quantile of the cosine of
  *unrelated* (caption, clip) pairs, those where the clip does not carry the caption. A best match
  under it scores no higher than one unrelated pair in twenty does: "no good match". How useful
  that is depends on the model, so the calibration also stores the share of held-out captions
  flagged with their clip in the gallery and with it removed (for the bundled model both are near
  10 %: its best-match cosine barely tells an answerable query from an unanswerable one, and the
  UI says so).
* **Metric vs cosine.** :func:`metric_ranks_like_cosine`: for unit vectors and M = c·I the
  Mahalanobis distance is sqrt(c (2 − 2 cos)), a decreasing function of the cosine, so metric
  scoring ranks exactly like cosine and is not worth offering as a separate choice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from atr_demo.errors import AudioError
from atr_demo.fileio import atomic_write_text
from atr_demo.gallery import Gallery, clip_captions
from atr_demo.metric import MahalanobisMetric
from atr_demo.model import ATRModel

logger = logging.getLogger(__name__)

#: RMS level (dBFS) under which a clip counts as silence (a quiet room recorded by a phone
#: is around −60 to −50 dBFS; digital silence is −inf).
SILENCE_DBFS = -60.0
#: Relative tolerance under which ``M`` counts as a multiple of the identity.
IDENTITY_RTOL = 1e-4
#: Quantile of unrelated-pair cosines used as the "no good match" threshold.
UNRELATED_LEVEL = 0.95
#: Fewest captioned clips a calibration is computed from (fewer: no "no good match" indication).
MIN_CALIBRATION_CLIPS = 10


class SilentAudioError(AudioError):
    """The clip is silence or near-silence: there is nothing to search or label."""


def rms_dbfs(wave: torch.Tensor) -> float:
    """RMS level of a waveform (samples,) with samples in [−1, 1], in dBFS (−inf for all zeros)."""
    if wave.numel() == 0:
        return -math.inf
    rms = float(wave.double().pow(2).mean().sqrt())
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


def check_not_silent(wave: torch.Tensor, name: str, threshold_dbfs: float = SILENCE_DBFS) -> float:
    """The clip's level in dBFS; :class:`SilentAudioError` naming ``name`` when it is under ``threshold_dbfs``."""
    level = rms_dbfs(wave)
    if level < threshold_dbfs:
        shown = "digital silence" if math.isinf(level) else f"{level:.0f} dBFS"
        raise SilentAudioError(
            f"{name} is silence (RMS level {shown}, below {threshold_dbfs:.0f} dBFS): there is nothing to "
            "recognise; record closer to the sound or upload a louder clip"
        )
    return level


def metric_ranks_like_cosine(metric: MahalanobisMetric | None, rtol: float = IDENTITY_RTOL) -> bool:
    """True when the ground metric is absent or ``M`` is a multiple of the identity (within ``rtol``),
    so that metric scoring gives the same ranking as cosine for unit-norm embeddings."""
    if metric is None:
        return True
    m = metric.M.detach().double()
    scale = float(torch.diagonal(m).mean())
    off = float(torch.linalg.matrix_norm(m - scale * torch.eye(m.shape[0], dtype=m.dtype)))
    return off <= rtol * max(float(torch.linalg.matrix_norm(m)), 1e-12)


def model_digest(model: ATRModel) -> str:
    """A short digest of the model's whole config and every tensor its checkpoint stores
    (both towers: a calibration depends on the text side too)."""
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for key, tensor in sorted(model.checkpoint_state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:16]


def calibrate_no_match(
    audio: torch.Tensor, text: torch.Tensor, owners: Sequence[Sequence[int]], level: float = UNRELATED_LEVEL
) -> dict[str, Any] | None:
    """The "no good match" cosine threshold of held-out clips and captions (see the module docstring).

    Args:
        audio: (n, d) unit embeddings of held-out clips.
        text: (q, d) unit embeddings of their distinct captions.
        owners: for each caption, the indices of the clips that carry it.
        level: the threshold is this quantile of the cosines of unrelated (caption, clip) pairs.

    Returns:
        ``{"threshold", "level", "unrelated_quantiles": {"50", "90", "95", "99"}, "matched_median",
        "present_flagged", "absent_flagged", "clips", "captions", "method"}``: ``present_flagged`` is
        the share of caption queries whose best clip is under the threshold with their own clip in the
        gallery, ``absent_flagged`` the same with their own clips removed (how useful the flag is);
        ``None`` with fewer than :data:`MIN_CALIBRATION_CLIPS` captioned clips.
    """
    carried = {i for clips in owners for i in clips}
    if len(carried) < MIN_CALIBRATION_CLIPS or len(text) < 2:
        return None
    sims = text.double() @ audio.double().T  # (q, n)
    own = torch.zeros_like(sims, dtype=torch.bool)
    for qi, clips in enumerate(owners):
        own[qi, list(clips)] = True
    unrelated, matched = sims[~own], sims[own]
    t = float(torch.quantile(unrelated, level))
    present = sims.max(dim=1).values
    absent = sims.masked_fill(own, -math.inf).max(dim=1).values
    return {
        "threshold": round(t, 6),
        "level": level,
        "unrelated_quantiles": {f"{int(p * 100)}": round(float(torch.quantile(unrelated, p)), 4)
                                for p in (0.5, 0.9, 0.95, 0.99)},
        "matched_median": round(float(matched.median()), 4),
        "present_flagged": round(float((present < t).double().mean()), 4),
        "absent_flagged": round(float((absent < t).double().mean()), 4),
        "clips": len(carried),
        "captions": len(text),
        "method": f"threshold = {level:.0%} quantile of the cosine of unrelated (caption, clip) pairs of the held-out "
                  "gallery; present/absent_flagged = share of its captions whose best clip is under it, with their "
                  "own clips in the gallery / removed",
    }


def caption_owners(gallery: Gallery) -> tuple[list[str], list[list[int]]]:
    """The gallery's distinct captions (first-seen order) and, for each, the clips that carry it."""
    owners: dict[str, list[int]] = {}
    for i, meta in enumerate(gallery.metadata):
        for caption in clip_captions(meta):
            owners.setdefault(caption, []).append(i)
    return list(owners), list(owners.values())


def calibrate_gallery(
    model: ATRModel, gallery: Gallery, caption_embeddings: torch.Tensor | None = None
) -> dict[str, Any] | None:
    """:func:`calibrate_no_match` over a gallery's clips and captions (``caption_embeddings``: the
    embeddings of :func:`caption_owners`' captions, computed when not given)."""
    texts, owners = caption_owners(gallery)
    if not texts:
        return None
    emb = caption_embeddings if caption_embeddings is not None else model.embed_texts(texts)
    return calibrate_no_match(gallery.embeddings, emb, owners)


def calibration_path(root: str | Path, digest: str) -> Path:
    """``<root>/embeddings/calibration-<model digest>.json``, beside the shipped embeddings."""
    return Path(root) / "embeddings" / f"calibration-{digest}.json"


def write_calibration(root: str | Path, digest: str, calibration: dict[str, Any]) -> Path:
    """Store ``calibration`` for the model with ``digest`` in gallery folder ``root``."""
    path = calibration_path(root, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"model_digest": digest, **calibration}, indent=2, sort_keys=True) + "\n")
    return path


def read_calibration(roots: Sequence[str | Path], digest: str) -> dict[str, Any] | None:
    """The calibration shipped for this model in one of ``roots`` (the first found), else ``None``."""
    for root in roots:
        path = calibration_path(root, digest)
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                logger.warning("ignoring unreadable calibration %s (%s)", path, exc)
                continue
            if data.get("model_digest") == digest:
                return data
    return None
