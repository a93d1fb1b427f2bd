"""What one UI event shows: each view calls a callback and renders its result for the components.

One event per user action, outputs rendered in the same step (no chained ``.change`` events):
the text tab's results are one HTML list with lazy audio players, so a typed query shows in the
browser about as fast as the server answers. Views are plain functions, tested without a server.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
from matplotlib.figure import Figure

from atr_demo.gallery import Gallery
from atr_demo.ui.callbacks import (
    add_to_library_cb,
    playable,
    search_as_you_type,
    search_audio_cb,
    search_text_cb,
    transport_plan_cb,
    zero_shot_cb,
)
from atr_demo.ui.library import from_browser, library_names, library_table, remove_from_library, to_browser
from atr_demo.ui.render import (
    caption_table,
    match_note,
    results_html,
    score_meaning,
    search_status,
    zero_shot_table,
)
from atr_demo.ui.state import DEFAULT_TEMPLATE, AppState, dropdown_choices


def text_view(state: AppState, query: str, k: float, mode: str, session: Gallery | None) -> tuple[str, str]:
    """Text → audio: (status Markdown naming the query the results are for, results HTML)."""
    payload = search_text_cb(state, query, k, mode, session)
    return search_status(payload, state.calibration), results_html(
        playable(state, payload["results"], session), payload["query"]
    )


def text_view_live(
    state: AppState, query: str, k: float, mode: str, session: Gallery | None, enabled: bool
) -> tuple[Any, Any]:
    """Search as you type: :func:`text_view`, or nothing (``gr.skip()``) when :func:`search_as_you_type` skips."""
    payload = search_as_you_type(state, query, k, mode, session, enabled)
    if not isinstance(payload, dict) or "results" not in payload:  # gr.skip() is an update dict
        return gr.skip(), gr.skip()
    return search_status(payload, state.calibration), results_html(
        playable(state, payload["results"], session), payload["query"]
    )


def text_view_if_query(state: AppState, query: str, k: float, mode: str, session: Gallery | None) -> tuple[Any, Any]:
    """Re-run the search when k or the mode changes, if there is a query (else leave the page as it is)."""
    if not (query or "").strip():
        return gr.skip(), gr.skip()
    return text_view(state, query, k, mode, session)


def audio_view(
    state: AppState, audio: Any, candidates: str, k: float, mode: str, session: Gallery | None
) -> tuple[str, Any, Any, str]:
    """Audio → text: (note, your candidates' table, gallery captions' table, nearest sounds HTML)."""
    result = search_audio_cb(state, audio, candidates, k, mode, session)
    lines = [f"Scores: {score_meaning(mode, state.calibration)}."]
    note = match_note(result, state.calibration)
    if note:
        lines.append(note.replace("caption–clip pairs", "clip–caption pairs"))
    yours = caption_table(result, "candidates")
    return (
        "  \n".join(lines),
        gr.update(value=yours, visible=bool(yours)),
        caption_table(result, "captions"),
        results_html(playable(state, result["sounds"], session)),
    )


def zero_shot_view(
    state: AppState, files: Any, recording: Any, labels: str, template: str, top: float, mode: str
) -> tuple[list[list[Any]], Figure, str]:
    """Zero-shot: (table of file, rank, label, probability; bar charts; one line on the scores)."""
    results, figure = zero_shot_cb(state, files, recording, labels, template, top, mode)
    meaning = ("probability of each label: softmax of the cosine scores over all labels" if mode != "transport" else
               "probability of each label from the transport plan solved with the gallery's clips as competing "
               "anchors (each label receives an equal share of the mass)")
    return zero_shot_table(results), figure, f"Scores: {meaning}; the top labels of each file are listed."


def zero_shot_api(
    state: AppState,
    files: Any,
    recording: Any = None,
    labels: str = "",
    template: str = DEFAULT_TEMPLATE,
    top: float = 5,
    mode: str = "cosine",
) -> list[dict[str, Any]]:
    """``/zero_shot``: :func:`~atr_demo.ui.callbacks.zero_shot_cb`'s per-file results (no figure)."""
    return zero_shot_cb(state, files, recording, labels, template, top, mode)[0]


def transport_plan_api(
    state: AppState, files: Any, captions: str, eps: float = 0.05, mass: float = 1.0, session: Gallery | None = None
) -> dict[str, Any]:
    """``/transport_plan``: :func:`~atr_demo.ui.callbacks.transport_plan_cb`'s plan data (no figure)."""
    return transport_plan_cb(state, files, captions, eps, mass, session)[0]


def _library_outputs(state: AppState, session: Gallery | None, status: str) -> tuple[Any, ...]:
    """(session, status, table, remove-picker update, transport picker update, browser record)."""
    names = library_names(state, session)
    return (
        session, status, library_table(session), gr.update(choices=names, value=[]),
        gr.update(choices=dropdown_choices(state.combined(session), [])), to_browser(state, session),
    )


def add_view(state: AppState, files: Any, captions: str, session: Gallery | None) -> tuple[Any, ...]:
    """Add uploads to the session library (and the browser's copy)."""
    new, status, _ = add_to_library_cb(state, files, captions, session)
    return _library_outputs(state, new, status)


def remove_view(state: AppState, names: list[str] | None, session: Gallery | None) -> tuple[Any, ...]:
    """Remove the picked clips from the session library (and the browser's copy)."""
    if not names:
        return _library_outputs(state, session, "Pick the clips to remove first.")
    new = remove_from_library(state, session, names)
    return _library_outputs(state, new, f"Removed {len(names)} clip(s); your library holds {len(new or [])}.")


def restore_view(state: AppState, stored: Any) -> tuple[Any, ...]:
    """On page load: the library kept in this browser, if any."""
    session, status = from_browser(state, stored)
    return _library_outputs(state, session, status)[:5]
