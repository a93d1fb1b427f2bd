"""The app's callbacks, plain functions of an :class:`AppState` and plain values.

Each returns plain data (lists of dicts, matplotlib figures, Markdown strings) and raises
:class:`~atr_demo.ui.errors.UserError` (a :class:`gradio.Error`) with a readable message for
anything a user can get wrong (an empty query, a corrupt upload, an unknown label template).
They are tested as functions, without a server.

Per-request bounds come from ``state.limits`` (:mod:`atr_demo.limits`); a request over one is
refused with a message stating the bound. Clips are named relative to their gallery folder (or,
for uploads, to Gradio's upload folder), never by a server path: :func:`clip_name`; the audio
players get the server path back from that name with :func:`playable`, for gallery files only.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import gradio as gr
import torch
from matplotlib.figure import Figure

from atr_demo.errors import ATRError, LimitError
from atr_demo.gallery import Gallery, index_gallery
from atr_demo.index.view import IndexGallery
from atr_demo.limits import DEFAULT_LIMITS, Limits, check_k
from atr_demo.retrieval import MODES, cost_matrix, score_matrix, scores_to_probabilities, top_k, transport_plan
from atr_demo.search import anchor_picks, display_name, label_clips, search_text
from atr_demo.ui.errors import UserError, hide_paths, user_errors
from atr_demo.ui.figures import transport_figure, zero_shot_figure
from atr_demo.ui.render import transport_summary
from atr_demo.ui.serving import gallery_url
from atr_demo.ui.state import DEFAULT_TEMPLATE, AppState, clip_captions, clip_choices
from atr_demo.zeroshot import ESC50_CLASSES, check_prompt_budget, check_template, parse_labels

#: Nearest gallery sounds shown on the audio → text tab.
NEAREST_SOUNDS = 5
#: Most clips / captions in a transport plan (the heatmap stays readable).
MAX_PLAN_ITEMS = 12
#: Default bounds of a zero-shot request and of a session library (``state.limits`` applies).
MAX_ZERO_SHOT_FILES = DEFAULT_LIMITS.max_files
MAX_LIBRARY_FILES = DEFAULT_LIMITS.max_library_files


def _file_path(value: Any) -> str | None:
    """A path from what Gradio hands a callback (a str, a ``FileData``-like object, or a dict)."""
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        return str(value)
    if isinstance(value, dict):
        return value.get("path") or value.get("name")
    return getattr(value, "path", None) or getattr(value, "name", None)


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise UserError(f"unknown scoring mode {mode!r}: choose one of {', '.join(MODES)}")
    return mode


def _check_k(k: Any, limit: int = 100, what: str = "k") -> int:
    return check_k(k, limit, what)


def upload_root() -> Path:
    """Gradio's upload folder (``$GRADIO_TEMP_DIR``, default ``<tmp>/gradio``): uploads are named relative to it."""
    return Path(gr.utils.get_upload_folder()).resolve()


def clip_name(state: AppState, path: str | Path) -> str:
    """A clip's public name: relative to its gallery folder, or to the upload folder (``<hash>/name.wav``)."""
    return display_name(path, [*state.roots, upload_root()])


def served_clips(state: AppState) -> Mapping[str, Path]:
    """Public name → server path of every shared gallery clip (built once; looked up per name for an index)."""
    if state._served is None and isinstance(state.gallery, IndexGallery):
        state._served = state.gallery.name_map()
    if state._served is None:
        state._served = {clip_name(state, f): Path(f) for f in state.gallery.files}
    return state._served


def playable(state: AppState, rows: Any, session: Gallery | None = None) -> Any:
    """Result rows with ``file`` mapped back to the server path and ``url`` set for the audio players.

    Server side only: ``url`` is ``gallery_audio/<name>`` for a shared gallery clip (no server path
    in the page, :func:`atr_demo.ui.serving.gallery_url`) and Gradio's file URL for a clip of this
    session's library (an upload). ``rows`` is a list of result rows, or a payload dict holding them
    under ``"results"`` (returned the same shape). Any other name (e.g. a crafted one) gets ``file``
    and ``url`` ``None``, so nothing else can be served.
    """
    if isinstance(rows, dict):
        return {**rows, "results": playable(state, rows.get("results"), session)}
    shared = served_clips(state)
    mine = {clip_name(state, f): Path(f) for f in session.files} if session is not None else {}
    out = []
    for row in rows or []:
        name = str(row.get("file", ""))
        if name in mine:
            path, url = mine[name], "gradio_api/file=" + quote(str(mine[name]))
        elif name in shared:
            path, url = shared[name], gallery_url(name)
        else:
            path, url = None, None
        out.append({**row, "file": str(path) if path is not None else None, "url": url})
    return out


def check_upload_size(state: AppState, path: str | Path) -> None:
    """Refuse an upload larger than ``state.limits.max_upload_mb`` (LimitError naming the file and the bound)."""
    try:
        size = Path(path).stat().st_size
    except OSError:
        return  # missing/unreadable: the decoder says so, naming the file
    bound = state.limits.max_upload_mb
    if size > bound * 1e6:
        raise LimitError(
            f"{Path(path).name} is {size / 1e6:.3g} MB, more than the upload limit of {bound:g} MB; "
            "trim it or export it compressed (e.g. mp3, ogg)"
        )


def _result_row(
    rank: int, meta: dict[str, Any], score: float, origin: str = "gallery", name: str | None = None
) -> dict[str, Any]:
    captions = clip_captions(meta)
    file = name if name is not None else Path(str(meta.get("file", ""))).name
    return {
        "rank": rank,
        "file": file,
        "name": Path(str(meta.get("file", ""))).name,
        "caption": captions[0] if captions else "",
        "score": float(score),
        "source": str(meta.get("source") or ""),
        "author": str(meta.get("author") or ""),
        "licence": str(meta.get("licence") or meta.get("license") or ""),
        "origin": origin,
    }


@user_errors
def search_text_cb(
    state: AppState, query: str, k: float = 10, mode: str = "cosine", session: Gallery | None = None
) -> dict[str, Any]:
    """Text → audio: the ``k`` best gallery clips for ``query``, best first.

    Returns ``{"query", "mode", "results", "best_cosine", "no_good_match", "threshold"}``:
    ``results`` is a list of ``{"rank", "file", "name", "caption", "score", "source", "author",
    "licence", "origin"}`` whose ``score`` is the cosine similarity, the negated ground-metric
    distance, or the transport plan's conditional probability, depending on ``mode``;
    ``best_cosine`` is the best clip's cosine and ``no_good_match`` whether it is under the calibrated
    ``threshold`` (:mod:`atr_demo.confidence`; ``None`` when the app has no calibration). The query
    travels with its results, so a page never shows them under another query.
    """
    query = (query or "").strip()
    if not query:
        raise UserError("the query is empty: type what you want to hear, e.g. 'a dog barks'")
    k, mode = _check_k(k, state.limits.max_k), _check_mode(mode)
    gallery = state.combined(session)
    if len(gallery) == 0:
        raise UserError(
            "the gallery is empty: add sounds in the 'Your library' tab or start the app with --gallery DIR"
        )
    if isinstance(gallery, IndexGallery):  # the index alone: its own search (ANN when it has an IVF)
        found, best = gallery.search(state.model.embed_texts([query]), k, mode)
        return {"query": query, "mode": mode,
                "results": [_result_row(rank, gallery.data.row_meta(i), score, "gallery", gallery.names()[i])
                            for rank, (i, score) in enumerate(found, 1)],
                **_match_verdict(state, best)}
    anchors = state.text_anchors() if mode == "transport" else None
    hits = search_text(state.model, gallery, [query], k=k, mode=mode, anchors=anchors)[0]["results"]
    n_shared = len(state.gallery)
    index = {str(f): i for i, f in enumerate(gallery.files)}
    best_cosine = float((gallery.embeddings @ state.model.embed_texts([query])[0]).max())
    return {
        "query": query,
        "mode": mode,
        "results": [
            _result_row(rank, hit, hit["score"], "gallery" if index.get(hit["file"], 0) < n_shared else "yours",
                        clip_name(state, hit["file"]))
            for rank, hit in enumerate(hits, 1)
        ],
        **_match_verdict(state, best_cosine),
    }


def _match_verdict(state: AppState, best_cosine: float) -> dict[str, Any]:
    """``best_cosine``, ``no_good_match`` (under the calibrated threshold; ``None`` without one), ``threshold``."""
    threshold = state.no_match_threshold()
    return {
        "best_cosine": round(best_cosine, 6),
        "no_good_match": None if threshold is None else bool(best_cosine < threshold),
        "threshold": threshold,
    }


def search_as_you_type(
    state: AppState, query: str, k: float, mode: str, session: Gallery | None, enabled: bool
) -> dict[str, Any] | Any:
    """Live search while typing: like :func:`search_text_cb`, but silent (``gr.skip()``) when
    disabled, when the query is shorter than 3 characters, or in the slower transport mode."""
    if not enabled or mode == "transport" or len((query or "").strip()) < 3:
        return gr.skip()
    return search_text_cb(state, query, k, mode, session)


@user_errors
def search_audio_cb(
    state: AppState,
    audio: Any,
    candidates: str = "",
    k: float = 10,
    mode: str = "cosine",
    session: Gallery | None = None,
) -> dict[str, Any]:
    """Audio → text: rank the user's candidate captions (among themselves) and the gallery's captions.

    Returns ``{"candidates": [{"rank", "caption", "score", "probability", "origin"}], "captions":
    [{"rank", "caption", "score", "probability", "origin", "file"}], "sounds": [result rows of the
    nearest gallery clips], "best_cosine", "no_good_match", "threshold"}``. ``candidates`` ranks
    only the typed captions (probabilities over them sum to 1; empty when none are typed);
    ``captions`` ranks the gallery's captions (``file`` is the clip a caption belongs to);
    ``no_good_match`` compares the best gallery caption's cosine with the calibrated threshold.
    """
    k, mode = _check_k(k, state.limits.max_k), _check_mode(mode)
    path = _file_path(audio)
    if path:
        check_upload_size(state, path)
    query = state.embed_upload(path)
    texts, owners, emb = state.gallery_captions()
    user = list(dict.fromkeys(line.strip() for line in (candidates or "").splitlines() if line.strip()))
    if not user and not texts:
        raise UserError("there are no captions to rank: type candidate captions, one per line")
    gallery = state.combined(session)
    anchors = gallery.rows(anchor_picks(len(gallery))) if mode == "transport" else None

    def rank(embeddings: torch.Tensor, captions: list[str], files: list[str] | None) -> list[dict[str, Any]]:
        scores = score_matrix(
            query, embeddings, mode=mode, metric=state.model.metric, eps=state.model.config.eps,
            anchors=anchors, mass=state.model.config.mass,
        )
        probs = scores_to_probabilities(scores, mode, state.model.config.eps)
        values, idx = top_k(scores, k)
        return [
            {"rank": r, "caption": captions[j], "score": float(v), "probability": float(probs[0, j]),
             "origin": "candidate" if files is None else "gallery", **({} if files is None else {"file": files[j]})}
            for r, (v, j) in enumerate(zip(values[0].tolist(), idx[0].tolist(), strict=True), 1)
        ]

    ranked_candidates = rank(state.model.embed_texts(user), user, None) if user else []
    captions = rank(emb, texts, [clip_name(state, state.gallery.files[i]) for i in owners]) if texts else []
    verdict = _match_verdict(state, float((emb @ query[0]).max())) if texts else {
        "best_cosine": None, "no_good_match": None, "threshold": state.no_match_threshold()}
    sounds: list[dict[str, Any]] = []
    if isinstance(gallery, IndexGallery):  # the index alone: its own search (ANN when it has an IVF)
        found, _ = gallery.search(query, NEAREST_SOUNDS, "metric" if mode == "metric" else "cosine")
        sounds = [_result_row(r, gallery.data.row_meta(i), v, "gallery", gallery.names()[i])
                  for r, (i, v) in enumerate(found, 1)]
    elif len(gallery):
        g_scores = score_matrix(query, gallery.embeddings, mode="metric" if mode == "metric" else "cosine",
                                metric=state.model.metric)
        g_values, g_idx = top_k(g_scores, NEAREST_SOUNDS)
        n_shared = len(state.gallery)
        sounds = [
            _result_row(r, gallery.metadata[i], v, "gallery" if i < n_shared else "yours",
                        clip_name(state, gallery.files[i]))
            for r, (v, i) in enumerate(zip(g_values[0].tolist(), g_idx[0].tolist(), strict=True), 1)
        ]
    return {"candidates": ranked_candidates, "captions": captions, "sounds": sounds, **verdict}


def _templates(template: str) -> list[str]:
    templates = [t.strip() for t in (template or "").splitlines() if t.strip()] or [DEFAULT_TEMPLATE]
    return [check_template(t) for t in templates]


def _upload_paths(files: Any) -> list[str]:
    """File paths from a ``gr.File(file_count="multiple")`` value (None, one file, or a list)."""
    values = files if isinstance(files, (list, tuple)) else [files] if files else []
    return [p for p in (_file_path(f) for f in values) if p]


@user_errors
def zero_shot_cb(
    state: AppState,
    files: Any = None,
    recording: Any = None,
    labels: str = "",
    template: str = DEFAULT_TEMPLATE,
    top: float = 5,
    mode: str = "cosine",
) -> tuple[list[dict[str, Any]], Figure]:
    """Zero-shot classification of uploaded files and/or a recording, file by file.

    ``labels``: one label per line (empty: the 50 ESC-50 classes). ``template``: one prompt
    template per line, ``{}`` standing for the label (several are ensembled).

    Returns ``([{"file", "name", "labels": [{"label", "probability"}]}], bar-chart figure)`` with one
    row per file in the order given; each file's probabilities over *all* labels sum to 1, the
    ``top`` best are listed. A file that cannot be used (unreadable, not audio, too long, too
    large) gets ``"labels": []`` and ``"error"``: the reason; the others are still classified.
    Raises when no file can be used, or the request is over a bound (files, prompts).
    """
    limits: Limits = state.limits
    mode = _check_mode(mode)
    top = _check_k(top, limit=50, what="top")
    paths = _upload_paths(files)
    if recording is not None and _file_path(recording):
        paths.append(str(_file_path(recording)))
    if not paths:
        raise UserError("no audio given: upload one or more files or record a clip")
    limits.check_count("files", len(paths), limits.max_files, "classify them in smaller batches")
    label_list = parse_labels(labels) if (labels or "").strip() else list(ESC50_CLASSES)
    templates = _templates(template)
    check_prompt_budget(label_list, templates, limits.max_prompts)
    embedded: list[tuple[int, torch.Tensor]] = []
    errors: dict[int, str] = {}
    for n, path in enumerate(paths):
        try:
            check_upload_size(state, path)
            embedded.append((n, _embed_named(state, path)))
        except ATRError as exc:
            errors[n] = hide_paths(str(exc))
    if not embedded:
        raise UserError("none of the files could be classified: " + "; ".join(errors.values()))
    label_set = state.label_set(label_list, templates)
    audio = torch.cat([e for _, e in embedded])
    anchors = state.gallery.rows(anchor_picks(len(state.gallery))) if mode == "transport" else None
    good = [n for n, _ in embedded]
    labelled = label_clips(state.model, [Path(paths[n]) for n in good], audio, label_set, top=top, mode=mode,
                           anchors=anchors)
    by_index = {
        n: [{"label": x["label"], "probability": x["score"]} for x in row["labels"]]
        for n, row in zip(good, labelled, strict=True)
    }
    results = []
    for n, path in enumerate(paths):
        row: dict[str, Any] = {"file": Path(path).name, "name": Path(path).name, "labels": by_index.get(n, [])}
        if n in errors:
            row["error"] = errors[n]
        results.append(row)
    return results, zero_shot_figure([r for r in results if "error" not in r])


def _embed_named(state: AppState, path: str) -> torch.Tensor:
    """Embed one upload, naming the file in the error message."""
    try:
        return state.embed_upload(path)
    except ATRError as exc:
        message = str(exc)
        name = Path(path).name
        raise type(exc)(message if name in message else f"{name}: {message}") from exc


def _resolve_clips(gallery: Gallery, names: Sequence[str]) -> list[int]:
    """Indices of gallery clips given by file name, relative name or full path."""
    if isinstance(gallery, IndexGallery):  # its names are unique: one lookup each, no pass over the clips
        found = [gallery.row_of(str(name)) for name in names]
        for name, row in zip(names, found, strict=True):
            if row is None:
                raise UserError(f"{name!r} is not a clip of the gallery: pick clips from the list")
        return [int(row) for row in found if row is not None]
    by_key: dict[str, int] = {}
    for i, f in enumerate(gallery.files):
        by_key.setdefault(Path(f).name, i)
        by_key[str(f)] = i
    for i, label in enumerate(clip_choices(gallery)):
        by_key[label] = i
    out = []
    for name in names:
        if str(name) not in by_key:
            raise UserError(f"{name!r} is not a clip of the gallery: pick clips from the list")
        out.append(by_key[str(name)])
    return out


def random_draw(
    state: AppState, n: int = 5, seed: int | None = None, session: Gallery | None = None
) -> tuple[list[str], str]:
    """``n`` random clips that have captions, and their captions in shuffled order."""
    gallery = state.combined(session)
    rng = random.Random(seed)
    choices = clip_choices(gallery)
    if isinstance(gallery, IndexGallery):
        captioned: Sequence[int] = gallery.captioned()
    else:
        captioned = [i for i, m in enumerate(gallery.metadata) if clip_captions(m)] or list(range(len(gallery)))
    picked = sorted(rng.sample(captioned, min(n, len(captioned))))
    captions = [(clip_captions(gallery.metadata[i]) or [Path(gallery.files[i]).stem])[0] for i in picked]
    rng.shuffle(captions)
    return [choices[i] for i in picked], "\n".join(captions)


@user_errors
def transport_plan_cb(
    state: AppState,
    files: Sequence[str] | str | None,
    captions: str,
    eps: float = 0.05,
    mass: float = 1.0,
    session: Gallery | None = None,
) -> tuple[dict[str, Any], Figure, str]:
    """The entropic (partial) OT plan between selected gallery clips and captions.

    Rows are clips (uniform marginal 1/n), columns captions (1/m); cost is the model's ground
    metric. ``mass`` < 1 transports only that mass (partial OT).

    Returns ``(data, figure, summary)``: ``data`` holds ``files``, ``captions``, ``plan``
    (n×m), ``cosine`` (n×m), ``row_marginals``, ``col_marginals``, ``transported_mass``,
    ``best_match`` (per row, the column with the largest plan entry), ``eps``, ``mass``.
    """
    if isinstance(files, str):
        files = [files]
    names = list(files or [])
    texts = [line.strip() for line in (captions or "").splitlines() if line.strip()]
    if not names:
        raise UserError("pick at least one gallery clip (or press 'Random draw')")
    if not texts:
        raise UserError("give at least one caption, one per line")
    if len(names) > MAX_PLAN_ITEMS or len(texts) > MAX_PLAN_ITEMS:
        raise UserError(f"at most {MAX_PLAN_ITEMS} clips and {MAX_PLAN_ITEMS} captions keep the plan readable")
    eps, mass = float(eps), float(mass)
    if not eps > 0:
        raise UserError(f"ε must be positive, got {eps}")
    if not 0 < mass <= 1:
        raise UserError(f"the transported mass must be in (0, 1], got {mass}")
    gallery = state.combined(session)
    idx = _resolve_clips(gallery, names)
    audio = gallery.rows(idx)
    text = state.model.embed_texts(texts)
    with torch.no_grad():
        cost = cost_matrix(audio, text, state.model.metric)
        plan = transport_plan(cost, eps, mass).to(torch.float64)
        cosine = (audio @ text.T).to(torch.float64)
    if not torch.isfinite(plan).all():
        raise UserError(f"the OT solver did not converge for ε = {eps}: increase ε")
    file_names = [clip_choices(gallery)[i] for i in idx]
    data = {
        "files": file_names,
        "captions": texts,
        "plan": plan.tolist(),
        "cosine": cosine.tolist(),
        "row_marginals": plan.sum(1).tolist(),
        "col_marginals": plan.sum(0).tolist(),
        "transported_mass": float(plan.sum()),
        "best_match": plan.argmax(1).tolist(),
        "eps": eps,
        "mass": mass,
    }
    return data, transport_figure(data), transport_summary(data)


@user_errors
def add_to_library_cb(
    state: AppState, files: Any, captions: str = "", session: Gallery | None = None
) -> tuple[Gallery, str, list[list[str]]]:
    """Index uploaded files into the session's own gallery (seen only by this browser session).

    ``captions``: optional, one per line in the order of the files. Returns the new session
    gallery, a status line, and a table (name, caption) of the session's clips.
    """
    paths = _upload_paths(files)
    if not paths:
        raise UserError("no files given: upload audio files to add them to your library")
    have = len(session) if session is not None else 0
    bound = state.limits.max_library_files
    if have + len(paths) > bound:
        raise LimitError(
            f"your library holds at most {bound} clips ({have} already, {len(paths)} given); add fewer files"
        )
    lines = [c.strip() for c in (captions or "").splitlines()]
    by_path = {p: (lines[i] if i < len(lines) else "") for i, p in enumerate(paths)}
    too_large: list[tuple[Path, str]] = []
    for path in list(paths):
        try:
            check_upload_size(state, path)
        except LimitError as exc:
            too_large.append((Path(path), str(exc)))
            paths.remove(path)
    added = index_gallery(state.model, paths, cache_dir=state.cache_dir, progress=False) if paths else Gallery(
        files=[], embeddings=torch.empty(0, state.model.config.embed_dim), metadata=[])
    added.skipped = too_large + added.skipped
    for meta in added.metadata:
        caption = by_path.get(meta["file"], "")
        if caption:
            meta["caption"] = caption
        meta.setdefault("source", "your upload")
    skipped = [(Path(f).name, hide_paths(r)) for f, r in added.skipped]
    new = added if session is None else session.extend(added)
    status = f"Added {len(added)} clip(s); your library holds {len(new)}."
    if skipped:
        status += " Skipped: " + "; ".join(f"{name} ({r})" for name, r in skipped)
    if len(added) == 0:
        raise UserError("none of the files could be added: " + "; ".join(f"{name}: {r}" for name, r in skipped))
    table = [[Path(m["file"]).name, (clip_captions(m) or [""])[0]] for m in new.metadata]
    return new, status, table
