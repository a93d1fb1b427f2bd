"""The Gradio Blocks: ``build_demo(state)`` wires the callbacks into tabs; it never launches a server.

Named API endpoints (``gradio_client``):

* ``/search_text``  (query, k, mode) → list of result dicts, best first
* ``/search_audio`` (file, candidates, k, mode) → ``{"captions": [...], "sounds": [...]}``
* ``/zero_shot``    (files, recording, labels, template, top, mode) → per-file label probabilities, figure
* ``/transport_plan`` (files, captions, eps, mass) → plan/cosine matrices and marginals, figure, summary
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import gradio as gr

from atr_demo.gallery import Gallery
from atr_demo.retrieval import MODES
from atr_demo.ui.callbacks import (
    MAX_PLAN_ITEMS,
    NEAREST_SOUNDS,
    add_to_library_cb,
    playable,
    random_draw,
    search_as_you_type,
    search_audio_cb,
    search_text_cb,
    transport_plan_cb,
    zero_shot_cb,
)
from atr_demo.ui.render import caption_table, model_info_markdown, render_slots, results_status, shorten
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
.result-slot { border-bottom: 1px solid var(--border-color-primary); padding-bottom: 4px; }
"""


def example_queries(state: AppState, n: int = 6) -> list[str]:
    """Example queries: a spread of the gallery's captions, or generic ones."""
    captions = state.gallery.captions()
    if len(captions) < 3:
        return list(FALLBACK_EXAMPLES[:n])
    step = max(1, len(captions) // n)
    return [shorten(c, 80) for c in captions[::step][:n]]


def _slots(n: int) -> tuple[list[gr.Row], list[gr.Audio], list[gr.Markdown]]:
    """``n`` hidden result slots (a row holding an audio player and a Markdown line), filled by ``render_slots``."""
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
    """Keyword arguments for ``demo.launch``: the files that may be served, the CSS, the upload limit.

    Only the gallery's audio files are served, each named explicitly (they were found by
    extension, :data:`atr_demo.fileio.AUDIO_EXTENSIONS`, skipping dotfiles and dot-folders): no
    other file of the gallery folders (metadata, ``.env``, notes) can be fetched over HTTP.
    """
    return {
        "allowed_paths": [str(Path(f).resolve()) for f in state.gallery.files],
        "css": CSS,
        "max_file_size": int(state.limits.max_upload_mb * 1_000_000),
    }


def build_demo(state: AppState, title: str = "atr-demo: audio-text retrieval with optimal transport") -> gr.Blocks:
    """The Gradio app for ``state`` (not launched; queue configured)."""
    modes = list(MODES)
    default_mode = state.mode_default if state.mode_default in modes else "cosine"
    cfg = state.model.config
    draw_files, draw_captions = random_draw(state, seed=0) if len(state.gallery) else ([], "")

    ttl = state.limits.upload_ttl_s
    with gr.Blocks(title="atr-demo", delete_cache=(ttl, ttl)) as demo:
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
                results.change(lambda r, q, mm, s: [results_status(r, q, mm),
                                                    *render_slots(playable(state, r, s), MAX_RESULTS)],
                               inputs=[results, query, mode, session],
                               outputs=[t_status, *t_rows, *t_audios, *t_texts], api_visibility="private")

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
                      inputs=[audio_in, candidates, a_k, a_mode, session], outputs=a_json, api_name="search_audio",
                      concurrency_id="heavy", concurrency_limit=1)
                a_json.change(lambda r, s: [caption_table(r),
                                            *render_slots(playable(state, (r or {}).get("sounds"), s), NEAREST_SOUNDS)],
                              inputs=[a_json, session], outputs=[a_table, *a_rows, *a_audios, *a_texts],
                              api_visibility="private")

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
                                                            outputs=[p_json, p_plot, p_summary],
                                                            api_visibility="private")
                transport_tab.select(
                    lambda f, c, e, m, s, current: (gr.skip(), gr.skip(), gr.skip()) if current is not None
                    else plan_fn(f, c, e, m, s),
                    inputs=[*plan_inputs, p_json], outputs=[p_json, p_plot, p_summary], api_visibility="private")

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
                            z_top = gr.Slider(1, 10, value=5, step=1, label="top classes")
                            z_mode = gr.Radio(modes, value="cosine", label="Scoring")
                        z_btn = gr.Button("Classify", variant="primary")
                    with gr.Column():
                        z_plot = gr.Plot(label="Top classes", elem_id="zs-plot")
                        z_json = gr.JSON(label="Label probabilities")
                gr.on([z_btn.click, z_files.upload, z_rec.stop_recording], fn=functools.partial(zero_shot_cb, state),
                      inputs=[z_files, z_rec, z_labels, z_template, z_top, z_mode], outputs=[z_json, z_plot],
                      api_name="zero_shot", concurrency_id="heavy", concurrency_limit=1)

            # -- library -----------------------------------------------------------------------
            with gr.Tab("Your library", id="library"):
                gr.Markdown(
                    f"The shared gallery holds **{len(state.gallery)}** clips. Sounds you add here are indexed with "
                    "the same model and searched together with it, in this browser session only."
                )
                with gr.Row():
                    with gr.Column():
                        l_files = gr.File(file_count="multiple",
                                          label=f"Audio files (≤ {state.limits.max_library_files})")
                        l_captions = gr.Textbox(label="Captions (optional, one per line, in file order)", lines=4)
                        l_btn = gr.Button("Add to my library", variant="primary")
                    with gr.Column():
                        l_status = gr.Markdown()
                        l_table = gr.Dataframe(headers=["file", "caption"], label="Your clips", interactive=False)

                def add(files: Any, captions: str, s: Gallery | None) -> tuple[Any, ...]:
                    new, status, table = add_to_library_cb(state, files, captions, s)
                    return new, status, table, gr.update(choices=dropdown_choices(state.combined(new), []))

                l_btn.click(add, inputs=[l_files, l_captions, session], outputs=[session, l_status, l_table, p_files],
                            api_visibility="private", concurrency_id="heavy", concurrency_limit=1)

            # -- model -------------------------------------------------------------------------
            with gr.Tab("Model", id="model"):
                gr.Markdown(model_info_markdown(state), elem_id="model-info")

    demo.queue(default_concurrency_limit=2, max_size=64)
    return demo
