"""High-level operations shared by the CLI and the app: search a gallery, label clips.

Each returns plain Python data (lists of dicts) ready for JSON. ``file`` fields name a clip
relative to the gallery folder it came from (:func:`display_name`), never by a server path,
when the caller passes the gallery's ``roots``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from atr_demo.errors import ATRError
from atr_demo.gallery import Gallery
from atr_demo.limits import check_k
from atr_demo.model import ATRModel
from atr_demo.retrieval import score_matrix, top_k
from atr_demo.zeroshot import ESC50_CLASSES, ESC50_DESCRIPTIONS, LabelSet, classify

#: How many anchor queries the transport mode adds at most (keeps the OT problem small).
MAX_ANCHORS = 512


def anchor_picks(n: int, limit: int = MAX_ANCHORS) -> list[int]:
    """At most ``limit`` of ``n`` positions, evenly spaced (all of them when ``n <= limit``).

    Galleries are in file-name order, so the first ``limit`` rows would come from a few folders
    only; evenly spaced rows sample the whole gallery.
    """
    if n <= limit:
        return list(range(n))
    return sorted({int(i * n // limit) for i in range(limit)})


def text_anchors(model: ATRModel, gallery: Gallery) -> torch.Tensor:
    """Reference text queries that compete with a lone query in ``transport`` mode.

    The gallery's own captions when it has them (one per clip, the paper's setting; at most
    :data:`MAX_ANCHORS`, evenly spaced over the gallery), otherwise the ESC-50 class descriptions,
    a generic set of everyday sounds.
    """
    captions = gallery.captions()
    if not captions:
        captions = [d for label in ESC50_CLASSES for d in ESC50_DESCRIPTIONS[label]]
    return model.embed_texts([captions[i] for i in anchor_picks(len(captions))])


def display_name(path: str | Path, roots: Sequence[str | Path] = ()) -> str:
    """``path`` relative to the first of ``roots`` that holds it (POSIX separators), else as given.

    With ``roots`` given, a path under none of them is shown by its file name only, so no server
    path leaves the process.
    """
    path = Path(path)
    for root in roots:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            continue
    return path.name if roots else str(path)


def text_scores(
    model: ATRModel,
    gallery: Gallery,
    queries: list[str],
    mode: str = "cosine",
    anchors: torch.Tensor | None = None,
) -> torch.Tensor:
    """(n_query, n_clip) scores of every gallery clip for each text query, larger is better: what
    :func:`search_text` ranks (``transport`` without ``anchors`` uses :func:`text_anchors`).

    Raises :class:`ATRError` on an empty gallery, :class:`~atr_demo.errors.TextInputError` on an
    empty or huge query.
    """
    if len(gallery) == 0:
        raise ATRError("the gallery is empty: there is nothing to search; add audio files to the folder first")
    q = model.embed_texts(queries)
    if mode == "transport" and anchors is None:
        anchors = text_anchors(model, gallery)
    return score_matrix(
        q, gallery.embeddings, mode=mode, metric=model.metric, eps=model.config.eps,
        anchors=anchors, mass=model.config.mass,
    )


def search_text(
    model: ATRModel,
    gallery: Gallery,
    queries: list[str],
    k: int = 10,
    mode: str = "cosine",
    anchors: torch.Tensor | None = None,
    roots: Sequence[str | Path] = (),
) -> list[dict[str, Any]]:
    """Rank ``gallery`` for each text query → ``[{"query", "results": [{"file", "score", …}]}]``.

    ``k`` must be ≥ 1 (fewer results when the gallery is smaller); ``file`` is relative to
    ``roots`` (see :func:`display_name`). Raises :class:`ATRError` on an empty gallery,
    :class:`~atr_demo.errors.LimitError` on a bad ``k``, :class:`~atr_demo.errors.TextInputError`
    on an empty or huge query.
    """
    k = check_k(k)
    scores = text_scores(model, gallery, queries, mode=mode, anchors=anchors)
    values, indices = top_k(scores, k)
    out = []
    for query, vals, idx in zip(queries, values.tolist(), indices.tolist(), strict=True):
        results = [
            {**gallery.metadata[i], "file": display_name(gallery.files[i], roots), "score": float(v)}
            for v, i in zip(vals, idx, strict=True)
        ]
        out.append({"query": query, "results": results})
    return out


def label_clips(
    model: ATRModel,
    files: list[Path],
    audio: torch.Tensor,
    label_set: LabelSet,
    top: int = 5,
    mode: str = "cosine",
    anchors: torch.Tensor | None = None,
    roots: Sequence[str | Path] = (),
) -> list[dict[str, Any]]:
    """Zero-shot labels of embedded clips → ``[{"file", "labels": [{"label", "score"}]}]``.

    ``audio`` is (n, d), one row per file of ``files``; ``top`` ≥ 1. Files that could not be
    embedded are not passed here: :func:`~atr_demo.gallery.index_gallery` lists them with the reason.
    """
    top = check_k(top, what="top")
    if len(files) != len(audio):
        raise ValueError(f"{len(files)} files for {len(audio)} embeddings")
    if not len(files):
        return []
    probs = classify(model, audio, label_set, mode=mode, anchors=anchors)
    values, indices = top_k(probs, top)
    return [
        {
            "file": display_name(f, roots),
            "labels": [{"label": label_set.labels[i], "score": float(v)} for v, i in zip(vals, idx, strict=True)],
        }
        for f, vals, idx in zip(files, values.tolist(), indices.tolist(), strict=True)
    ]
