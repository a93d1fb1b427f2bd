"""A browser session's own library: removing clips, and keeping it in the browser across reloads.

The library is a :class:`~atr_demo.gallery.Gallery` held in the session (``gr.State``). After every
change it is also written to the browser's ``localStorage`` (``gr.BrowserState``) as
:func:`to_browser` data — per clip its public name (relative to Gradio's upload folder), caption and
embedding, and the model fingerprint — and :func:`from_browser` rebuilds it when the page is
reloaded. Nothing from the browser is trusted: a record for another model, a malformed embedding
or a name outside the upload folder is dropped, and only the embedding is used (the file is never
decoded again), so a crafted record can at worst add a vector to its own session's searches. An
upload deleted from the server meanwhile (uploads expire) stays searchable, without a player.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from atr_demo.gallery import Gallery, clip_captions
from atr_demo.ui.callbacks import clip_name, upload_root
from atr_demo.ui.state import AppState

#: Version of the stored record (bump when its shape changes; older records are dropped).
RECORD_VERSION = 1


def library_table(session: Gallery | None) -> list[list[str]]:
    """Rows (name, caption) of the session's clips."""
    if session is None:
        return []
    return [[Path(m["file"]).name, (clip_captions(m) or [""])[0]] for m in session.metadata]


def library_names(state: AppState, session: Gallery | None) -> list[str]:
    """Public names of the session's clips (what the remove picker offers)."""
    return [clip_name(state, f) for f in session.files] if session is not None else []


def remove_from_library(state: AppState, session: Gallery | None, names: list[str] | str | None) -> Gallery | None:
    """The session library without the clips called ``names`` (``None`` when it becomes empty)."""
    if session is None:
        return None
    drop = {names} if isinstance(names, str) else set(names or [])
    keep = [i for i, f in enumerate(session.files) if clip_name(state, f) not in drop]
    if not keep:
        return None
    return Gallery(
        files=[session.files[i] for i in keep], embeddings=session.embeddings[keep],
        metadata=[session.metadata[i] for i in keep],
    )


def to_browser(state: AppState, session: Gallery | None) -> dict[str, Any] | None:
    """The session library as JSON-ready data for ``gr.BrowserState`` (``None`` when empty)."""
    if session is None or len(session) == 0:
        return None
    clips = [
        {"name": clip_name(state, f), "caption": (clip_captions(m) or [""])[0],
         "embedding": [round(float(x), 6) for x in e]}
        for f, m, e in zip(session.files, session.metadata, session.embeddings, strict=True)
    ]
    return {"version": RECORD_VERSION, "model": state.fingerprint, "clips": clips}


def _restored_path(name: str) -> Path | None:
    """The upload a stored name refers to, if it lies inside Gradio's upload folder."""
    root = upload_root()
    path = (root / name).resolve()
    return path if path.is_relative_to(root) and path != root else None


def from_browser(state: AppState, stored: Any) -> tuple[Gallery | None, str]:
    """Rebuild the session library from :func:`to_browser` data; returns it and a status line."""
    if not isinstance(stored, dict) or not stored.get("clips"):
        return None, ""
    if stored.get("version") != RECORD_VERSION or stored.get("model") != state.fingerprint:
        return None, "Your saved library was made with another model or app version; add your clips again."
    dim = state.model.config.embed_dim
    files: list[Path] = []
    rows: list[torch.Tensor] = []
    metadata: list[dict[str, Any]] = []
    dropped = 0
    for clip in stored["clips"][: state.limits.max_library_files]:
        try:
            name, caption = str(clip["name"]), str(clip.get("caption") or "")
            vector = torch.tensor([float(x) for x in clip["embedding"]], dtype=torch.float32)
        except (KeyError, TypeError, ValueError):
            dropped += 1
            continue
        path = _restored_path(name)
        norm = float(vector.norm()) if vector.numel() == dim else 0.0
        if path is None or not math.isfinite(norm) or norm < 1e-6 or path in files:
            dropped += 1
            continue
        files.append(path)
        rows.append(vector / norm)
        metadata.append({"file": str(path), "source": "your upload", **({"caption": caption} if caption else {})})
    if not files:
        return None, "Your saved library could not be restored; add your clips again."
    status = f"Restored your library from this browser: {len(files)} clip(s)."
    if dropped:
        status += f" {dropped} damaged record(s) dropped."
    return Gallery(files=files, embeddings=torch.stack(rows), metadata=metadata), status
