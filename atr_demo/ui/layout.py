"""The Gradio Blocks: ``build_demo(state)`` wires the views into tabs; it never launches a server.

Every UI event is private and renders its outputs in one step (:mod:`atr_demo.ui.views`). The
public API is a separate set of named endpoints, each on a hidden trigger, with named
parameters (the callbacks' own: ``query``, ``k``, ``mode``, …) and one JSON output
(``gradio_client``: ``Client(url).predict(..., api_name="/search_text")``; plain HTTP:
``POST /gradio_api/call/<name>`` then ``GET /gradio_api/call/<name>/<event_id>``):

* ``/search_text``  (query, k=10, mode) → ``{"query", "mode", "results": [...], "best_cosine", "no_good_match", …}``
* ``/search_audio`` (audio, candidates="", k=10, mode) → ``{"candidates", "captions", "sounds", "best_cosine", …}``
* ``/zero_shot``    (files, recording=None, labels="", template, top=5, mode) → per-file top labels
* ``/transport_plan`` (files, captions, eps, mass) → plan/cosine matrices, marginals, best matches
"""

from __future__ import annotations

import functools
from typing import Any

import gradio as gr
from starlette.middleware import Middleware

from atr_demo.gallery import Gallery, clip_captions
from atr_demo.index.view import IndexGallery
from atr_demo.ui import views
from atr_demo.ui.callbacks import (
    MAX_PLAN_ITEMS,
    random_draw,
    search_audio_cb,
    search_text_cb,
    served_clips,
    transport_plan_cb,
)
from atr_demo.ui.render import model_info_markdown, shorten
from atr_demo.ui.serving import GalleryFileGuard, served_paths
from atr_demo.ui.state import DEFAULT_TEMPLATE, AppState, dropdown_choices
from atr_demo.zeroshot import ESC50_CLASSES

#: Result slots (audio player + caption) shown on the text → audio tab; also the largest k.
MAX_RESULTS = 20
#: Example queries for a gallery with fewer than three captions.
FALLBACK_EXAMPLES = (
    "a dog barks in the distance",
    "rain falling on a roof",
    "footsteps on gravel",
    "a door creaks open",
    "birds chirping in the morning",
    "a car engine starts",
)
#: Page CSS (passed to ``demo.launch`` by :func:`launch_options`).
CSS = """
.atr-results { list-style: none; padding: 0; margin: 0; }
.atr-results .result-slot { border-bottom: 1px solid var(--border-color-primary); padding: 6px 0; }
.atr-results .result-head { display: flex; gap: 0.5em; align-items: baseline; }
.atr-results .result-score { margin-left: auto; font-variant-numeric: tabular-nums; opacity: 0.8; }
.atr-results audio { width: 100%; height: 32px; margin: 2px 0; }
.atr-results .result-meta { font-size: 0.85em; opacity: 0.75; overflow-wrap: anywhere; }
#app-header h1 { font-size: 1.4em; margin: 0; }
#app-header p { margin: 2px 0; font-size: 0.9em; }
"""
#: Storage key of the session library in the browser's localStorage.
LIBRARY_KEY = "atr-demo-library"


def labelled_captions(gallery: Gallery) -> list[str]:
    """The first caption of the first clip of each ESC-50 class the gallery's clips are labelled with
    (``esc50`` in their metadata, as the bundled gallery's are), in class-name order: everyday sounds.
    [] for an index gallery (its metadata is not read into memory for this)."""
    if isinstance(gallery, IndexGallery):
        return []
    by_label: dict[str, str] = {}
    for meta in gallery.metadata:
        label, captions = meta.get("esc50"), clip_captions(meta)
        if label and captions and label not in by_label:
            by_label[str(label)] = captions[0]
    return [by_label[label] for label in sorted(by_label)]


def example_queries(state: AppState, n: int = 6) -> list[str]:
    """Example queries: captions of everyday sounds spread over the ESC-50 classes the gallery holds
    (:func:`labelled_captions`) when it has at least ``n`` of them, else a spread of all its
    captions, or generic ones for a gallery with fewer than three captions."""
    captions = labelled_captions(state.gallery)
    if len(captions) < n:
        captions = state.gallery.captions()
    if len(captions) < 3:
        return list(FALLBACK_EXAMPLES[:n])
    step = max(1, len(captions) // n)
    return [shorten(c, 80) for c in captions[::step][:n]]


def launch_options(state: AppState) -> dict[str, Any]:
    """Keyword arguments for ``demo.launch``: the files that may be served, the CSS, the upload limit.

    Only the gallery's audio files are served (found by extension,
    :data:`atr_demo.fileio.AUDIO_EXTENSIONS`, skipping dotfiles and dot-folders): the gallery
    folders are allowed, and :class:`~atr_demo.ui.serving.GalleryFileGuard` refuses (403) every
    other file under them (metadata, ``.env``, notes), with one set lookup per request.
    """
    guard = Middleware(GalleryFileGuard, roots=[str(r) for r in state.roots],
                       served=state.gallery.served() if isinstance(state.gallery, IndexGallery)
                       else served_paths(state.gallery.files), names=served_clips(state))
    return {
        "allowed_paths": [str(r) for r in state.roots],
        "app_kwargs": {"middleware": [guard]},
        "css": CSS,
        "max_file_size": int(state.limits.max_upload_mb * 1_000_000),
    }


def build_demo(state: AppState, title: str = "atr-demo: audio-text retrieval with optimal transport") -> gr.Blocks:
    """The Gradio app for ``state`` (not launched; queue configured)."""
    modes = state.modes
    default_mode = state.mode_default if state.mode_default in modes else "cosine"
    cfg = state.model.config
    draw_files, draw_captions = random_draw(state, seed=0) if len(state.gallery) else ([], "")
    ttl = state.limits.upload_ttl_s
    fast = {"api_visibility": "private", "concurrency_id": "text", "concurrency_limit": 4}
    heavy = {"api_visibility": "private", "concurrency_id": "heavy", "concurrency_limit": 1}
    # one clip / one small plan: a queue of its own, so a zero-shot request (up to max_files clips and
    # max_prompts prompts, ~20 s on 2 cores) never holds an audio search up (benchmarks/concurrent_clients.py)
    medium = {"api_visibility": "private", "concurrency_id": "medium", "concurrency_limit": 1}

    with gr.Blocks(title="atr-demo", delete_cache=(ttl, ttl)) as demo:
        session = gr.State(None)
        stored = gr.BrowserState(None, storage_key=LIBRARY_KEY, secret=f"atr-demo-{state.fingerprint}")
        gr.Markdown(f"# {title}\nSearch **{len(state.gallery)}** sound clips by description, find captions for a "
                    f"sound, label sounds, see optimal transport at work. Model **{cfg.name}**.",
                    elem_id="app-header")
        with gr.Tabs():
            # -- text → audio ------------------------------------------------------------------
            with gr.Tab("Text → audio", id="text"):
                query = gr.Textbox(value="", label="Describe a sound", placeholder="a dog barks in the distance",
                                   elem_id="query", submit_btn=True)
                with gr.Row(equal_height=True):
                    k = gr.Slider(1, MAX_RESULTS, value=min(10, MAX_RESULTS), step=1, label="k (results)",
                                  min_width=160)
                    mode = gr.Radio(modes, value=default_mode, label="Scoring", min_width=160, elem_id="text-mode")
                    as_you_type = gr.Checkbox(value=True, label="Search as you type (not in transport mode)",
                                              min_width=160)
                t_status = gr.Markdown(elem_id="results-status")
                t_html = gr.HTML(elem_id="text-results")
                examples = gr.Dataset(components=["textbox"], samples=[[q] for q in example_queries(state)],
                                      label="Examples (click to search)", type="values")
                t_in = [query, k, mode, session]
                gr.on([query.submit], functools.partial(views.text_view, state), inputs=t_in,
                      outputs=[t_status, t_html], show_progress="minimal", trigger_mode="always_last", **fast)
                query.input(functools.partial(views.text_view_live, state), inputs=[*t_in, as_you_type],
                            outputs=[t_status, t_html], show_progress="hidden", trigger_mode="always_last", **fast)
                gr.on([k.release, mode.change], functools.partial(views.text_view_if_query, state), inputs=t_in,
                      outputs=[t_status, t_html], show_progress="hidden", trigger_mode="always_last", **fast)
                examples.click(lambda sample, kk, mm, s: (sample[0], *views.text_view(state, sample[0], kk, mm, s)),
                               inputs=[examples, k, mode, session], outputs=[query, t_status, t_html], **fast)

            # -- audio → text ------------------------------------------------------------------
            with gr.Tab("Audio → text", id="audio"):
                with gr.Row():
                    with gr.Column():
                        audio_in = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Your sound",
                                            elem_id="audio-query")
                        candidates = gr.Textbox(value="", label="Your candidate captions (optional, one per line; "
                                                "ranked on their own)", lines=3,
                                                placeholder="a cat meows\nwater boils in a kettle")
                        with gr.Row():
                            a_k = gr.Slider(1, 50, value=10, step=1, label="k (captions)", min_width=160)
                            a_mode = gr.Radio(modes, value=default_mode, label="Scoring", min_width=160)
                        a_btn = gr.Button("Rank captions", variant="primary")
                    with gr.Column():
                        a_note = gr.Markdown(elem_id="audio-note")
                        a_yours = gr.Dataframe(headers=["rank", "caption", "score", "probability"], visible=False,
                                               label="Your candidates, ranked among themselves", interactive=False,
                                               wrap=True, elem_id="candidate-table")
                        a_table = gr.Dataframe(headers=["rank", "caption", "score", "probability"],
                                               label="Best captions of the gallery", interactive=False, wrap=True,
                                               elem_id="caption-table")
                gr.Markdown("#### Nearest gallery sounds")
                a_sounds = gr.HTML(elem_id="audio-sounds")
                gr.on([a_btn.click, audio_in.upload, audio_in.stop_recording],
                      functools.partial(views.audio_view, state), inputs=[audio_in, candidates, a_k, a_mode, session],
                      outputs=[a_note, a_yours, a_table, a_sounds],
                      **medium)

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
                p_json = gr.JSON(visible=False, label="transport plan")
                plan_fn = functools.partial(transport_plan_cb, state)
                plan_inputs = [p_files, p_captions, p_eps, p_mass, session]
                gr.on([p_btn.click, p_eps.release, p_mass.release], fn=plan_fn, inputs=plan_inputs,
                      outputs=[p_json, p_plot, p_summary], **medium)
                p_draw.click(lambda s: random_draw(state, session=s), inputs=session, outputs=[p_files, p_captions],
                             api_visibility="private").then(plan_fn, inputs=plan_inputs,
                                                            outputs=[p_json, p_plot, p_summary], **medium)
                transport_tab.select(
                    lambda f, c, e, m, s, current: (gr.skip(), gr.skip(), gr.skip()) if current is not None
                    else plan_fn(f, c, e, m, s),
                    inputs=[*plan_inputs, p_json], outputs=[p_json, p_plot, p_summary], **medium)

            # -- zero-shot ---------------------------------------------------------------------
            with gr.Tab("Zero-shot ESC-50", id="zeroshot"):
                with gr.Row():
                    with gr.Column():
                        z_files = gr.File(file_count="multiple", label=f"Audio files (≤ {state.limits.max_files})",
                                          elem_id="zs-files")
                        z_rec = gr.Audio(sources=["microphone"], type="filepath", label="…or record")
                        z_template = gr.Textbox(value="\n".join(cfg.prompt_templates) or DEFAULT_TEMPLATE, lines=2,
                                                label="Prompt templates ({} = label; one per line, ensembled)")
                        z_labels = gr.Textbox(value="\n".join(ESC50_CLASSES), lines=8, max_lines=12,
                                              label="Labels (one per line; empty = ESC-50)")
                        with gr.Row():
                            z_top = gr.Slider(1, 10, value=5, step=1, label="top classes", min_width=160)
                            z_mode = gr.Radio(modes, value="cosine", label="Scoring", min_width=160)
                        z_btn = gr.Button("Classify", variant="primary")
                    with gr.Column():
                        z_note = gr.Markdown(elem_id="zs-note")
                        z_table = gr.Dataframe(headers=["file", "rank", "label", "probability"], interactive=False,
                                               wrap=True, label="Top labels", elem_id="zs-table")
                        z_plot = gr.Plot(label="Top classes", elem_id="zs-plot")
                gr.on([z_btn.click, z_files.upload, z_rec.stop_recording],
                      functools.partial(views.zero_shot_view, state),
                      inputs=[z_files, z_rec, z_labels, z_template, z_top, z_mode], outputs=[z_table, z_plot, z_note],
                      **heavy)

            # -- library -----------------------------------------------------------------------
            with gr.Tab("Your library", id="library"):
                gr.Markdown(
                    f"The shared gallery holds **{len(state.gallery)}** clips. Sounds you add here are indexed with "
                    "the same model and searched together with it; only you see them, and this browser keeps "
                    "your library across reloads."
                )
                with gr.Row():
                    with gr.Column():
                        l_files = gr.File(file_count="multiple", elem_id="library-files",
                                          label=f"Audio files (≤ {state.limits.max_library_files})")
                        l_captions = gr.Textbox(label="Captions (optional, one per line, in file order)", lines=3)
                        l_btn = gr.Button("Add to my library", variant="primary")
                        l_status = gr.Markdown(elem_id="library-status")
                    with gr.Column():
                        l_table = gr.Dataframe(headers=["file", "caption"], label="Your clips", interactive=False,
                                               elem_id="library-table")
                        with gr.Row(equal_height=True):
                            l_pick = gr.Dropdown([], multiselect=True, label="Clips to remove", scale=3,
                                                 elem_id="library-remove")
                            l_remove = gr.Button("Remove", scale=1)
                lib_out = [session, l_status, l_table, l_pick, p_files, stored]
                l_btn.click(functools.partial(views.add_view, state), inputs=[l_files, l_captions, session],
                            outputs=lib_out, show_progress_on=[l_status], **heavy)
                l_remove.click(functools.partial(views.remove_view, state), inputs=[l_pick, session], outputs=lib_out,
                               show_progress_on=[l_status], api_visibility="private")
                demo.load(functools.partial(views.restore_view, state), inputs=stored, outputs=lib_out[:5],
                          api_visibility="private")

            # -- model -------------------------------------------------------------------------
            with gr.Tab("Model", id="model"):
                gr.Markdown(model_info_markdown(state), elem_id="model-info")

        # -- the public API: hidden triggers, named parameters, one JSON output each -----------
        with gr.Row(visible=False):
            api_out = {name: gr.JSON(label=label) for name, label in (
                ("search_text", "search results"), ("search_audio", "ranked captions and nearest sounds"),
                ("zero_shot", "labels per file"), ("transport_plan", "transport plan"))}
            triggers = {name: gr.Button(name) for name in api_out}
        triggers["search_text"].click(functools.partial(search_text_cb, state), inputs=t_in,
                                      outputs=api_out["search_text"], api_name="search_text",
                                      concurrency_id="text", concurrency_limit=4)
        triggers["search_audio"].click(functools.partial(search_audio_cb, state),
                                       inputs=[audio_in, candidates, a_k, a_mode, session],
                                       outputs=api_out["search_audio"], api_name="search_audio",
                                       concurrency_id="medium", concurrency_limit=1)
        triggers["zero_shot"].click(functools.partial(views.zero_shot_api, state),
                                    inputs=[z_files, z_rec, z_labels, z_template, z_top, z_mode],
                                    outputs=api_out["zero_shot"], api_name="zero_shot",
                                    concurrency_id="heavy", concurrency_limit=1)
        triggers["transport_plan"].click(functools.partial(views.transport_plan_api, state), inputs=plan_inputs,
                                         outputs=api_out["transport_plan"], api_name="transport_plan",
                                         concurrency_id="medium", concurrency_limit=1)

    demo.queue(default_concurrency_limit=2, max_size=64)
    return demo
