"""The Gradio demo: callbacks as plain functions, and ``build_demo`` that wires them into Blocks.

Every callback takes an :class:`AppState` (model, gallery, caches) first and plain values
after it, returns plain data (lists of dicts, matplotlib figures, Markdown strings) and raises
:class:`gradio.Error` with a readable message for anything a user can get wrong (an empty query,
a corrupt upload, an unknown label template). They are tested as functions, without a server.

``build_demo(state)`` returns a :class:`gradio.Blocks`; it never launches a server. ``app.py``
launches it. Named API endpoints (``gradio_client``):

* ``/search_text``  (query, k, mode) → list of result dicts, best first
* ``/search_audio`` (file, candidates, k, mode) → ``{"captions": [...], "sounds": [...]}``
* ``/zero_shot``    (files, recording, labels, template, top, mode) → per-file label probabilities, figure
* ``/transport_plan`` (files, captions, eps, mass) → plan/cosine matrices and marginals, figure, summary

Figures are built with :class:`matplotlib.figure.Figure` (no pyplot, no global backend change),
so concurrent requests do not share state.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from atr_demo.audio import load_audio
from atr_demo.errors import ATRError
from atr_demo.gallery import Gallery, index_gallery
from atr_demo.model import ATRModel
from atr_demo.retrieval import MODES, cost_matrix, score_matrix, scores_to_probabilities, top_k, transport_plan
from atr_demo.search import MAX_ANCHORS, search_text, text_anchors
from atr_demo.zeroshot import ESC50_CLASSES, LabelSet, classify, embed_labels, parse_labels

logger = logging.getLogger(__name__)

#: Result slots (audio player + caption) shown on the text → audio tab; also the largest k.
MAX_RESULTS = 20
#: Nearest gallery sounds shown on the audio → text tab.
NEAREST_SOUNDS = 5
#: Most clips / captions in a transport plan (the heatmap stays readable).
MAX_PLAN_ITEMS = 12
#: Most files classified in one zero-shot request, and added to a session library at once.
MAX_ZERO_SHOT_FILES = 8
MAX_LIBRARY_FILES = 50
#: Most clip names offered in the transport tab's picker (large galleries: a sample).
MAX_DROPDOWN = 1000
#: Longest upload accepted by the app (seconds); the model's own limit applies when lower.
DEFAULT_MAX_UPLOAD_S = 120.0
DEFAULT_TEMPLATE = "the sound of {}"
FALLBACK_EXAMPLES = (
    "a dog barks in the distance",
    "rain falling on a roof",
    "footsteps on gravel",
    "a door creaks open",
    "birds chirping in the morning",
    "a car engine starts",
)
CSS = """
.result-slot { border-bottom: 1px solid var(--border-color-primary); padding-bottom: 4px; }
"""

F = TypeVar("F", bound=Callable[..., Any])
_QUOTED_PATH = re.compile(r"(['\"])(?:/[^'\"/]+)+/([^'\"/]+)\1")


def _hide_paths(message: str) -> str:
    """Show quoted absolute paths in an error message by their file name (no server paths leak)."""
    return _QUOTED_PATH.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(1)}", message)


class UserError(gr.Error):
    """A :class:`gradio.Error` for problems the user can fix: shown in the UI, not logged as a traceback."""

    def __init__(self, message: str, duration: float | None = 10, title: str = "Cannot do that") -> None:
        super().__init__(message, duration=duration, title=title, print_exception=False)


def user_errors(fn: F) -> F:
    """Turn :class:`ATRError` (a user-caused problem) into :class:`gradio.Error` with its message.

    Gradio shows ``gr.Error`` as a toast in the UI and as an error to API clients; the server
    keeps serving.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ATRError as exc:
            logger.info("%s: user error: %s", fn.__name__, exc)
            raise UserError(_hide_paths(str(exc))) from exc

    return wrapper  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------------


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
    """

    model: ATRModel
    gallery: Gallery
    roots: list[Path] = field(default_factory=list)
    cache_dir: Path | None = None
    max_upload_s: float = DEFAULT_MAX_UPLOAD_S
    model_ref: str | None = None
    _anchors: torch.Tensor | None = field(default=None, repr=False)
    _captions: tuple[list[str], list[int], torch.Tensor] | None = field(default=None, repr=False)
    _labels: dict[tuple[tuple[str, ...], tuple[str, ...]], LabelSet] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.max_upload_s = min(float(self.max_upload_s), float(self.model.config.max_duration_s))

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
                seen: dict[str, int] = {}
                for i, meta in enumerate(self.gallery.metadata):
                    for caption in _clip_captions(meta):
                        seen.setdefault(caption, i)
                texts = list(seen)
                emb = self.model.embed_texts(texts) if texts else torch.empty(0, self.model.config.embed_dim)
                self._captions = (texts, list(seen.values()), emb)
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
        """Fill the caches the first requests need (transport anchors, caption and ESC-50 label embeddings)."""
        if len(self.gallery):
            self.text_anchors()
            self.gallery_captions()
        self.label_set(list(ESC50_CLASSES), list(self.model.config.prompt_templates) or [DEFAULT_TEMPLATE])

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
        with torch.inference_mode():
            self.model.eval()
            return self.model.encode_audio([wave]).cpu()


def make_state(
    model: ATRModel,
    gallery_dirs: Sequence[str | Path],
    cache_dir: str | Path | None = None,
    progress: bool = True,
    max_upload_s: float = DEFAULT_MAX_UPLOAD_S,
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
    )


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _clip_captions(meta: dict[str, Any]) -> list[str]:
    captions = meta.get("captions") or ([meta["caption"]] if meta.get("caption") else [])
    return [str(c).strip() for c in captions if str(c).strip()]


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


def _check_k(k: Any, limit: int = 100) -> int:
    try:
        value = int(k)
    except (TypeError, ValueError) as exc:
        raise UserError(f"k must be a whole number, got {k!r}") from exc
    if not 1 <= value <= limit:
        raise UserError(f"k must be between 1 and {limit}, got {value}")
    return value


def _result_row(rank: int, meta: dict[str, Any], score: float, origin: str = "gallery") -> dict[str, Any]:
    captions = _clip_captions(meta)
    return {
        "rank": rank,
        "file": str(meta.get("file", "")),
        "name": Path(str(meta.get("file", ""))).name,
        "caption": captions[0] if captions else "",
        "score": float(score),
        "source": str(meta.get("source") or ""),
        "author": str(meta.get("author") or ""),
        "licence": str(meta.get("licence") or meta.get("license") or ""),
        "origin": origin,
    }


def _short(text: str, width: int = 38) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def describe_result(row: dict[str, Any]) -> str:
    """Markdown line under a result's audio player: caption, score, source, author, licence."""
    caption = row.get("caption") or f"*{row.get('name', '')}* (no caption)"
    bits = [f"score **{row['score']:.4f}**", f"`{row.get('name', '')}`"]
    if row.get("source"):
        bits.append(f"source: {row['source']}")
    if row.get("author"):
        bits.append(f"by {row['author']}")
    if row.get("licence"):
        bits.append(f"licence: {row['licence']}")
    if row.get("origin") == "yours":
        bits.append("your upload")
    return f"**{row['rank']}.** {caption}  \n" + " · ".join(bits)


def example_queries(state: AppState, n: int = 6) -> list[str]:
    """Example queries: a spread of the gallery's captions, or generic ones."""
    captions = state.gallery.captions()
    if len(captions) < 3:
        return list(FALLBACK_EXAMPLES[:n])
    step = max(1, len(captions) // n)
    return [_short(c, 80) for c in captions[::step][:n]]


# ---------------------------------------------------------------------------------------------
# Callbacks
# ---------------------------------------------------------------------------------------------


@user_errors
def search_text_cb(
    state: AppState, query: str, k: float = 10, mode: str = "cosine", session: Gallery | None = None
) -> list[dict[str, Any]]:
    """Text → audio: the ``k`` best gallery clips for ``query``, best first.

    Returns a list of ``{"rank", "file", "name", "caption", "score", "source", "author",
    "licence", "origin"}``; ``score`` is the cosine similarity, the negated ground-metric
    distance, or the transport plan's conditional probability, depending on ``mode``.
    """
    query = (query or "").strip()
    if not query:
        raise UserError("the query is empty: type what you want to hear, e.g. 'a dog barks'")
    k, mode = _check_k(k), _check_mode(mode)
    gallery = state.combined(session)
    if len(gallery) == 0:
        raise UserError("the gallery is empty: add sounds in the 'Your library' tab or start the app with --gallery DIR")
    anchors = state.text_anchors() if mode == "transport" else None
    hits = search_text(state.model, gallery, [query], k=k, mode=mode, anchors=anchors)[0]["results"]
    n_shared = len(state.gallery)
    index = {str(f): i for i, f in enumerate(gallery.files)}
    return [
        _result_row(rank, hit, hit["score"], "gallery" if index.get(hit["file"], 0) < n_shared else "yours")
        for rank, hit in enumerate(hits, 1)
    ]


def search_as_you_type(
    state: AppState, query: str, k: float, mode: str, session: Gallery | None, enabled: bool
) -> list[dict[str, Any]] | Any:
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
    """Audio → text: rank the gallery's captions plus user candidates for an uploaded clip.

    Returns ``{"captions": [{"rank", "caption", "score", "probability", "origin", "file"}],
    "sounds": [result rows of the nearest gallery clips]}``. ``origin`` is ``"candidate"`` for
    a user-supplied caption, ``"gallery"`` for a caption of the gallery (``file`` is its clip).
    """
    k, mode = _check_k(k), _check_mode(mode)
    query = state.embed_upload(_file_path(audio))
    texts, owners, emb = state.gallery_captions()
    user = [c for c in dict.fromkeys(line.strip() for line in (candidates or "").splitlines() if line.strip()) if c not in texts]
    if user:
        emb = torch.cat([state.model.embed_texts(user), emb])
    all_texts = user + texts
    if not all_texts:
        raise UserError("there are no captions to rank: type candidate captions, one per line")
    origins = ["candidate"] * len(user) + ["gallery"] * len(texts)
    files = [""] * len(user) + [str(state.gallery.files[i]) for i in owners]
    gallery = state.combined(session)
    anchors = gallery.embeddings[:MAX_ANCHORS] if mode == "transport" else None
    scores = score_matrix(
        query, emb, mode=mode, metric=state.model.metric, eps=state.model.config.eps,
        anchors=anchors, mass=state.model.config.mass,
    )
    probs = scores_to_probabilities(scores, mode, state.model.config.eps)
    values, idx = top_k(scores, k)
    captions = [
        {"rank": r, "caption": all_texts[j], "score": float(v), "probability": float(probs[0, j]),
         "origin": origins[j], "file": files[j]}
        for r, (v, j) in enumerate(zip(values[0].tolist(), idx[0].tolist()), 1)
    ]
    sounds: list[dict[str, Any]] = []
    if len(gallery):
        g_scores = score_matrix(query, gallery.embeddings, mode="metric" if mode == "metric" else "cosine",
                                metric=state.model.metric)
        g_values, g_idx = top_k(g_scores, NEAREST_SOUNDS)
        n_shared = len(state.gallery)
        sounds = [
            _result_row(r, gallery.metadata[i], v, "gallery" if i < n_shared else "yours")
            for r, (v, i) in enumerate(zip(g_values[0].tolist(), g_idx[0].tolist()), 1)
        ]
    return {"captions": captions, "sounds": sounds}


def _templates(template: str) -> list[str]:
    templates = [t.strip() for t in (template or "").splitlines() if t.strip()] or [DEFAULT_TEMPLATE]
    for t in templates:
        if "{}" not in t:
            raise UserError(f"the prompt template {t!r} has no '{{}}' where the label goes, e.g. 'the sound of {{}}'")
    return templates


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
    """Zero-shot classification of uploaded files and/or a recording.

    ``labels``: one label per line (empty: the 50 ESC-50 classes). ``template``: one prompt
    template per line, ``{}`` standing for the label (several are ensembled).

    Returns ``([{"file", "name", "labels": [{"label", "probability"}]}], bar-chart figure)``;
    each file's probabilities over *all* labels sum to 1, the ``top`` best are listed.
    """
    mode = _check_mode(mode)
    top = _check_k(top, limit=50)
    paths = [_file_path(f) for f in (files if isinstance(files, (list, tuple)) else [files] if files else [])]
    if recording is not None:
        paths.append(_file_path(recording))
    paths = [p for p in paths if p]
    if not paths:
        raise UserError("no audio given: upload one or more files or record a clip")
    if len(paths) > MAX_ZERO_SHOT_FILES:
        raise UserError(f"{len(paths)} files given; classify at most {MAX_ZERO_SHOT_FILES} at a time")
    label_list = parse_labels(labels) if (labels or "").strip() else list(ESC50_CLASSES)
    label_set = state.label_set(label_list, _templates(template))
    audio = torch.cat([_embed_named(state, p) for p in paths])
    anchors = state.gallery.embeddings[:MAX_ANCHORS] if mode == "transport" else None
    probs = classify(state.model, audio, label_set, mode=mode, anchors=anchors)
    values, idx = top_k(probs, top)
    results = [
        {"file": Path(p).name, "name": Path(p).name,
         "labels": [{"label": label_set.labels[j], "probability": float(v)} for v, j in zip(vals, ids)]}
        for p, vals, ids in zip(paths, values.tolist(), idx.tolist())
    ]
    return results, zero_shot_figure(results)


def _embed_named(state: AppState, path: str) -> torch.Tensor:
    """Embed one upload, naming the file in the error message."""
    try:
        return state.embed_upload(path)
    except ATRError as exc:
        message = str(exc)
        name = Path(path).name
        raise type(exc)(message if name in message else f"{name}: {message}") from exc


def zero_shot_figure(results: list[dict[str, Any]]) -> Figure:
    """Horizontal bar charts, one per file, of the top labels and their probabilities."""
    n = max(1, len(results))
    top = max((len(r["labels"]) for r in results), default=1)
    fig = Figure(figsize=(7.5, max(2.2, (0.42 * top + 0.9)) * n), layout="constrained")
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    for ax, result in zip(axes, results):
        labels = [_short(x["label"].replace("_", " "), 30) for x in result["labels"]][::-1]
        values = [x["probability"] for x in result["labels"]][::-1]
        bars = ax.barh(labels, values, color="#4c72b0")
        ax.bar_label(bars, labels=[f"{v:.1%}" for v in values], padding=3, fontsize=9)
        ax.set_xlim(0, min(1.0, max(values) * 1.25 + 0.05))
        ax.set_xlabel("probability")
        ax.set_title(_short(result["name"], 60), fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
    return fig


def _resolve_clips(gallery: Gallery, names: Sequence[str]) -> list[int]:
    """Indices of gallery clips given by file name, relative name or full path."""
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


def clip_choices(gallery: Gallery) -> list[str]:
    """Unique, readable names of the gallery's clips (the file name, made unique with its folder)."""
    names = [Path(f).name for f in gallery.files]
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return [n if counts[n] == 1 else f"{Path(f).parent.name}/{n}" for n, f in zip(names, gallery.files)]


def dropdown_choices(gallery: Gallery, keep: Sequence[str], limit: int = MAX_DROPDOWN) -> list[str]:
    """Clip names for the transport tab's picker: all of them, or a seeded sample of ``limit``
    (plus ``keep``) for large galleries; any other clip name can still be typed in."""
    names = clip_choices(gallery)
    if len(names) <= limit:
        return names
    sample = set(random.Random(0).sample(names, limit)) | set(keep)
    return sorted(sample)


def random_draw(state: AppState, n: int = 5, seed: int | None = None, session: Gallery | None = None) -> tuple[list[str], str]:
    """``n`` random clips that have captions, and their captions in shuffled order."""
    gallery = state.combined(session)
    rng = random.Random(seed)
    choices = clip_choices(gallery)
    captioned = [i for i, m in enumerate(gallery.metadata) if _clip_captions(m)] or list(range(len(gallery)))
    picked = sorted(rng.sample(captioned, min(n, len(captioned))))
    captions = [(_clip_captions(gallery.metadata[i]) or [Path(gallery.files[i]).stem])[0] for i in picked]
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
    audio = gallery.embeddings[idx]
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


def transport_figure(data: dict[str, Any]) -> Figure:
    """Cosine-similarity matrix beside the transport plan; the plan's best match per row is boxed."""
    n, m = len(data["files"]), len(data["captions"])
    ylabels = [_short(f, 28) for f in data["files"]]
    xlabels = [_short(c, 34) for c in data["captions"]]
    fig = Figure(figsize=(max(9.0, 1.3 * m + 5.5), max(4.0, 0.5 * n + 3.2)), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    plan = torch.tensor(data["plan"])
    panels = (
        (axes[0], torch.tensor(data["cosine"]), "cosine similarity", "viridis"),
        (axes[1], plan, f"transport plan π (ε = {data['eps']:g}, mass = {data['mass']:g})", "magma"),
    )
    for ax, values, title, cmap in panels:
        image = ax.imshow(values.numpy(), cmap=cmap, aspect="auto")
        fig.colorbar(image, ax=ax, shrink=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(m), xlabels, rotation=40, ha="right", fontsize=8)
        ax.set_yticks(range(n), ylabels, fontsize=8)
        for i, j in enumerate(data["best_match"]):
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="#00e5ff", lw=2))
    axes[1].tick_params(labelleft=False)
    if n * m <= 64:
        for i in range(n):
            for j in range(m):
                axes[1].text(j, i, f"{plan[i, j]:.2f}", ha="center", va="center", fontsize=7,
                             color="white" if plan[i, j] < plan.max() * 0.6 else "black")
    return fig


def transport_summary(data: dict[str, Any]) -> str:
    """Markdown under the heatmap: marginals, transported mass, best matches."""
    n, m = len(data["files"]), len(data["captions"])
    rows = ", ".join(f"{v:.3f}" for v in data["row_marginals"])
    cols = ", ".join(f"{v:.3f}" for v in data["col_marginals"])
    lines = [
        f"- **Transported mass:** {data['transported_mass']:.4f} (target {data['mass']:g}); "
        f"ε = {data['eps']:g}. Boxes mark the plan's best caption for each clip.",
        f"- **Row marginals** (clips, target ≤ 1/{n} = {1 / n:.3f}): {rows}",
        f"- **Column marginals** (captions, target ≤ 1/{m} = {1 / m:.3f}): {cols}",
        "",
        "| clip | plan's best caption | share of the clip's mass |",
        "|---|---|---|",
    ]
    for i, j in enumerate(data["best_match"]):
        row_sum = sum(data["plan"][i]) or 1.0
        lines.append(f"| `{data['files'][i]}` | {_short(data['captions'][j], 70)} | {data['plan'][i][j] / row_sum:.1%} |")
    return "\n".join(lines)


@user_errors
def add_to_library_cb(
    state: AppState, files: Any, captions: str = "", session: Gallery | None = None
) -> tuple[Gallery, str, list[list[str]]]:
    """Index uploaded files into the session's own gallery (seen only by this browser session).

    ``captions``: optional, one per line in the order of the files. Returns the new session
    gallery, a status line, and a table (name, caption) of the session's clips.
    """
    paths = [_file_path(f) for f in (files if isinstance(files, (list, tuple)) else [files] if files else [])]
    paths = [p for p in paths if p]
    if not paths:
        raise UserError("no files given: upload audio files to add them to your library")
    have = len(session) if session is not None else 0
    if have + len(paths) > MAX_LIBRARY_FILES:
        raise UserError(f"your library holds at most {MAX_LIBRARY_FILES} clips ({have} already)")
    lines = [c.strip() for c in (captions or "").splitlines()]
    added = index_gallery(state.model, paths, cache_dir=state.cache_dir, progress=False)
    by_path = {p: (lines[i] if i < len(lines) else "") for i, p in enumerate(paths)}
    for meta in added.metadata:
        caption = by_path.get(meta["file"], "")
        if caption:
            meta["caption"] = caption
        meta.setdefault("source", "your upload")
    too_long = [(f, r) for f, r in added.skipped]
    new = added if session is None else session.extend(added)
    status = f"Added {len(added)} clip(s); your library holds {len(new)}."
    if too_long:
        status += " Skipped: " + "; ".join(f"{Path(f).name} ({r})" for f, r in too_long)
    if len(added) == 0:
        raise UserError("none of the files could be added: " + "; ".join(f"{Path(f).name}: {r}" for f, r in too_long))
    table = [[Path(m["file"]).name, (_clip_captions(m) or [""])[0]] for m in new.metadata]
    return new, status, table


def model_card_metrics(source: str | Path | None) -> str:
    """The evaluation / metrics section of the model card ``README.md`` in ``source``, if any."""
    if not source:
        return ""
    card = Path(source) / "README.md"
    if not card.is_file():
        return ""
    text = card.read_text(encoding="utf-8")
    text = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)
    sections = re.split(r"(?m)^(?=## )", text)
    keep = [s for s in sections if re.match(r"## .*(evaluat|metric|result)", s, flags=re.I)]
    return "\n".join(s.strip() for s in keep)


def model_info_markdown(state: AppState) -> str:
    """Model panel: name, backbones, scoring settings, gallery, and the model card's metrics."""
    cfg = state.model.config

    def tower(b: Any) -> str:
        name = f" `{b.name}`" if b.name else ""
        rev = f" @ `{b.revision}`" if b.revision else ""
        return f"{b.kind}{name}{rev}" + (" (fine-tuned)" if b.trainable else " (frozen)")

    source = getattr(state.model, "source", None)
    loaded = state.model_ref or (Path(source).name if source else "built-in")
    lines = [
        f"### {cfg.name}",
        "",
        "| setting | value |",
        "|---|---|",
        f"| loaded from | `{loaded}` |",
        f"| audio backbone | {tower(cfg.audio)} |",
        f"| text backbone | {tower(cfg.text)} |",
        f"| joint space | {cfg.embed_dim}-d, {cfg.head} heads |",
        f"| ground metric | {cfg.metric} |",
        f"| training loss | {cfg.loss} |",
        f"| ε / transported mass | {cfg.eps:g} / {cfg.mass:g} |",
        f"| default scoring | {cfg.scoring} |",
        f"| sample rate | {state.model.sample_rate} Hz |",
        f"| gallery | {len(state.gallery)} clips from {', '.join(f'`{r.name}/`' for r in state.roots) or '—'} |",
        "",
    ]
    metrics = model_card_metrics(source)
    lines.append(metrics or "*No evaluation metrics: the model has no model card (README.md) with an evaluation section.*")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Rendering of result slots (UI only)
# ---------------------------------------------------------------------------------------------


def render_slots(results: list[dict[str, Any]] | None, n_slots: int) -> list[Any]:
    """Updates for ``n_slots`` (row, audio, markdown) triples from result rows."""
    results = results or []
    rows, audios, texts = [], [], []
    for i in range(n_slots):
        if i < len(results):
            r = results[i]
            rows.append(gr.update(visible=True))
            audios.append(gr.update(value=r["file"], label=f"{r['rank']}. {r['name']}"))
            texts.append(describe_result(r))
        else:
            rows.append(gr.update(visible=False))
            audios.append(None)
            texts.append("")
    return rows + audios + texts


def results_status(results: list[dict[str, Any]] | None, query: str, mode: str) -> str:
    """One line above the results: how many, for which query, scored how."""
    if not results:
        return ""
    return f"**{len(results)}** result(s) for “{_short(query, 80)}” — {mode} scoring"


def caption_table(result: dict[str, Any] | None) -> list[list[Any]]:
    """Rows (rank, caption, score, probability, origin) for the audio → text table."""
    return [
        [c["rank"], c["caption"], round(c["score"], 4), round(c["probability"], 4), c["origin"]]
        for c in (result or {}).get("captions", [])
    ]


# ---------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------


def _slots(n: int) -> tuple[list[gr.Row], list[gr.Audio], list[gr.Markdown]]:
    rows, audios, texts = [], [], []
    for _ in range(n):
        with gr.Row(visible=False, elem_classes="result-slot") as row:
            audio = gr.Audio(type="filepath", interactive=False, show_label=True, scale=2,
                             elem_classes="result-audio")
            text = gr.Markdown(elem_classes="result-text")
        rows.append(row)
        audios.append(audio)
        texts.append(text)
    return rows, audios, texts


def launch_options(state: AppState) -> dict[str, Any]:
    """Keyword arguments for ``demo.launch``: the gallery folders may be served, the CSS, the upload limit."""
    return {"allowed_paths": [str(r) for r in state.roots], "css": CSS, "max_file_size": "50mb"}


def build_demo(state: AppState, title: str = "atr-demo: audio-text retrieval with optimal transport") -> gr.Blocks:
    """The Gradio app for ``state`` (not launched; queue configured)."""
    modes = list(MODES)
    default_mode = state.mode_default if state.mode_default in modes else "cosine"
    cfg = state.model.config
    draw_files, draw_captions = random_draw(state, seed=0) if len(state.gallery) else ([], "")

    with gr.Blocks(title="atr-demo") as demo:
        session = gr.State(None)
        gr.Markdown(
            f"# {title}\n"
            f"Model **{cfg.name}**, gallery of **{len(state.gallery)}** clips. Scoring: *cosine* similarity, "
            "the learned ground *metric*, or *transport* (entropic OT between your query and the gallery's "
            "reference captions — a hubness correction)."
        )
        with gr.Tabs():
            # -- text → audio ------------------------------------------------------------------
            with gr.Tab("Text → audio", id="text"):
                with gr.Row():
                    query = gr.Textbox(label="Describe a sound", placeholder="a dog barks in the distance",
                                       scale=4, elem_id="query", submit_btn=True)
                with gr.Row():
                    k = gr.Slider(1, MAX_RESULTS, value=min(10, MAX_RESULTS), step=1, label="k (results)")
                    mode = gr.Radio(modes, value=default_mode, label="Scoring")
                examples = gr.Dataset(components=["textbox"], samples=[[q] for q in example_queries(state)],
                                      label="Examples (click to search)", type="values")
                results = gr.JSON(visible=False)
                t_status = gr.Markdown(elem_id="results-status")
                with gr.Column(elem_id="text-results"):
                    t_rows, t_audios, t_texts = _slots(MAX_RESULTS)
                as_you_type = gr.Checkbox(value=True, label="Search as you type (cosine and metric scoring)")
                search = functools.partial(search_text_cb, state)
                gr.on([query.submit], fn=lambda q, kk, mm, s: search(q, kk, mm, s), inputs=[query, k, mode, session],
                      outputs=results, api_name="search_text")
                query.input(functools.partial(search_as_you_type, state), inputs=[query, k, mode, session, as_you_type],
                            outputs=results, trigger_mode="always_last", show_progress="hidden",
                            api_visibility="private")
                examples.click(lambda sample: sample[0], inputs=examples, outputs=query, api_visibility="private").then(
                    lambda q, kk, mm, s: search(q, kk, mm, s), inputs=[query, k, mode, session], outputs=results,
                    api_visibility="private")
                results.change(lambda r, q, mm: [results_status(r, q, mm), *render_slots(r, MAX_RESULTS)],
                               inputs=[results, query, mode], outputs=[t_status, *t_rows, *t_audios, *t_texts],
                               api_visibility="private")

            # -- audio → text ------------------------------------------------------------------
            with gr.Tab("Audio → text", id="audio"):
                with gr.Row():
                    with gr.Column():
                        audio_in = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Your sound",
                                            elem_id="audio-query")
                        candidates = gr.Textbox(label="Candidate captions (optional, one per line)", lines=4,
                                                placeholder="a cat meows\nwater boils in a kettle")
                        with gr.Row():
                            a_k = gr.Slider(1, 50, value=10, step=1, label="k (captions)")
                            a_mode = gr.Radio(modes, value=default_mode, label="Scoring")
                        a_btn = gr.Button("Rank captions", variant="primary")
                    with gr.Column():
                        a_table = gr.Dataframe(headers=["rank", "caption", "score", "probability", "origin"],
                                               label="Best captions", interactive=False, wrap=True,
                                               elem_id="caption-table")
                a_json = gr.JSON(visible=False)
                gr.Markdown("#### Nearest gallery sounds")
                a_rows, a_audios, a_texts = _slots(NEAREST_SOUNDS)
                gr.on([a_btn.click, audio_in.upload, audio_in.stop_recording],
                      fn=functools.partial(search_audio_cb, state),
                      inputs=[audio_in, candidates, a_k, a_mode, session], outputs=a_json, api_name="search_audio")
                a_json.change(lambda r: [caption_table(r), *render_slots((r or {}).get("sounds"), NEAREST_SOUNDS)],
                              inputs=a_json, outputs=[a_table, *a_rows, *a_audios, *a_texts], api_visibility="private")

            # -- transport plan ----------------------------------------------------------------
            with gr.Tab("Transport plan", id="transport") as transport_tab:
                with gr.Row():
                    with gr.Column(scale=1):
                        p_files = gr.Dropdown(dropdown_choices(state.gallery, draw_files), value=draw_files,
                                              multiselect=True, allow_custom_value=True,
                                              label=f"Gallery clips (rows, ≤ {MAX_PLAN_ITEMS})")
                        p_captions = gr.Textbox(value=draw_captions, lines=6,
                                                label=f"Captions (columns, one per line, ≤ {MAX_PLAN_ITEMS})")
                        p_eps = gr.Slider(0.005, 1.0, value=cfg.eps, step=0.005, label="ε (entropic regularisation)")
                        p_mass = gr.Slider(0.05, 1.0, value=cfg.mass, step=0.05, label="transported mass s")
                        with gr.Row():
                            p_draw = gr.Button("Random draw")
                            p_btn = gr.Button("Solve", variant="primary")
                    with gr.Column(scale=3):
                        p_plot = gr.Plot(label="Cosine similarity and transport plan", show_label=False,
                                         elem_id="transport-plot")
                        p_summary = gr.Markdown(elem_id="transport-summary")
                p_json = gr.JSON(visible=False)
                plan_fn = functools.partial(transport_plan_cb, state)
                plan_inputs = [p_files, p_captions, p_eps, p_mass, session]
                gr.on([p_btn.click, p_eps.release, p_mass.release], fn=plan_fn, inputs=plan_inputs,
                      outputs=[p_json, p_plot, p_summary], api_name="transport_plan")
                p_draw.click(lambda s: random_draw(state, session=s), inputs=session, outputs=[p_files, p_captions],
                             api_visibility="private").then(plan_fn, inputs=plan_inputs,
                                                            outputs=[p_json, p_plot, p_summary], api_visibility="private")
                transport_tab.select(
                    lambda f, c, e, m, s, current: (gr.skip(), gr.skip(), gr.skip()) if current is not None
                    else plan_fn(f, c, e, m, s),
                    inputs=[*plan_inputs, p_json], outputs=[p_json, p_plot, p_summary], api_visibility="private")

            # -- zero-shot ---------------------------------------------------------------------
            with gr.Tab("Zero-shot ESC-50", id="zeroshot"):
                with gr.Row():
                    with gr.Column():
                        z_files = gr.File(file_count="multiple", label=f"Audio files (≤ {MAX_ZERO_SHOT_FILES})",
                                          elem_id="zs-files")
                        z_rec = gr.Audio(sources=["microphone"], type="filepath", label="…or record")
                        z_template = gr.Textbox(value="\n".join(cfg.prompt_templates) or DEFAULT_TEMPLATE, lines=2,
                                                label="Prompt templates ({} = label; one per line, ensembled)")
                        z_labels = gr.Textbox(value="\n".join(ESC50_CLASSES), lines=8, max_lines=12,
                                              label="Labels (one per line; empty = ESC-50)")
                        with gr.Row():
                            z_top = gr.Slider(1, 10, value=5, step=1, label="top classes")
                            z_mode = gr.Radio(modes, value="cosine", label="Scoring")
                        z_btn = gr.Button("Classify", variant="primary")
                    with gr.Column():
                        z_plot = gr.Plot(label="Top classes", elem_id="zs-plot")
                        z_json = gr.JSON(label="Label probabilities")
                gr.on([z_btn.click, z_files.upload, z_rec.stop_recording], fn=functools.partial(zero_shot_cb, state),
                      inputs=[z_files, z_rec, z_labels, z_template, z_top, z_mode], outputs=[z_json, z_plot],
                      api_name="zero_shot")

            # -- library -----------------------------------------------------------------------
            with gr.Tab("Your library", id="library"):
                gr.Markdown(
                    f"The shared gallery holds **{len(state.gallery)}** clips. Sounds you add here are indexed with "
                    "the same model and searched together with it, in this browser session only."
                )
                with gr.Row():
                    with gr.Column():
                        l_files = gr.File(file_count="multiple", label=f"Audio files (≤ {MAX_LIBRARY_FILES})")
                        l_captions = gr.Textbox(label="Captions (optional, one per line, in file order)", lines=4)
                        l_btn = gr.Button("Add to my library", variant="primary")
                    with gr.Column():
                        l_status = gr.Markdown()
                        l_table = gr.Dataframe(headers=["file", "caption"], label="Your clips", interactive=False)

                def add(files: Any, captions: str, s: Gallery | None) -> tuple[Any, ...]:
                    new, status, table = add_to_library_cb(state, files, captions, s)
                    return new, status, table, gr.update(choices=dropdown_choices(state.combined(new), []))

                l_btn.click(add, inputs=[l_files, l_captions, session], outputs=[session, l_status, l_table, p_files],
                            api_visibility="private")

            # -- model -------------------------------------------------------------------------
            with gr.Tab("Model", id="model"):
                gr.Markdown(model_info_markdown(state), elem_id="model-info")

    demo.queue(default_concurrency_limit=2, max_size=64)
    return demo
