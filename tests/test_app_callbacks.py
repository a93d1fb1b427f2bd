"""The app's callbacks as plain functions, on the tiny model and a gallery of generated tones."""

from __future__ import annotations

import json
import math
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

from atr_demo import ui
from atr_demo.errors import ATRError
from atr_demo.model import load_model
from atr_demo.ui import callbacks, render
from atr_demo.ui import state as ui_state
from atr_demo.zeroshot import ESC50_CLASSES

from tests.helpers import write_tone

TONES = {
    "beep.wav": (880.0, "a high beep"),
    "hum.wav": (110.0, "a low electrical hum"),
    "buzz.wav": (220.0, "a buzzing insect"),
    "whistle.wav": (1760.0, "someone whistles"),
    "rumble.wav": (60.0, "thunder rumbles far away"),
    "chirp.wav": (3000.0, "a bird chirps"),
}


def make_gallery(root: Path) -> Path:
    """Six 1-second tones in ``root`` (one in a subfolder) with a ``gallery.jsonl`` of captions."""
    rows = []
    for i, (name, (freq, caption)) in enumerate(TONES.items()):
        rel = f"sub/{name}" if i == 5 else name
        write_tone(root / rel, freq=freq, seconds=1.0, sr=16000, noise=0.01 * i, seed=i)
        rows.append({"audio": rel, "caption": caption, "source": "generated", "author": "tests", "licence": "CC0-1.0"})
    (root / "gallery.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> ui.AppState:
    root = make_gallery(tmp_path_factory.mktemp("gallery"))
    cache = tmp_path_factory.mktemp("cache")
    return ui.make_state(load_model("tiny"), [root], cache_dir=cache, progress=False, max_upload_s=5.0)


@pytest.fixture()
def bad_files(tmp_path: Path) -> dict[str, Path]:
    """Uploads that must be refused: corrupt, empty, not audio, too long."""
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x01\x00\x00WAVEfmt " + bytes(range(200)))
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("these are not audio samples\n" * 20, encoding="utf-8")
    long = write_tone(tmp_path / "long.wav", seconds=6.0, sr=8000)
    return {"corrupt": corrupt, "empty": empty, "text": text, "long": long}


# -- state -------------------------------------------------------------------------------------


def test_make_state_indexes_gallery_with_metadata(state: ui.AppState) -> None:
    assert len(state.gallery) == len(TONES)
    captions = sorted(m["caption"] for m in state.gallery.metadata)
    assert captions == sorted(c for _, c in TONES.values())
    assert state.max_upload_s == 5.0
    assert all(Path(f).is_absolute() for f in state.gallery.files)


def test_make_state_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(ATRError, match="does not exist"):
        ui.make_state(load_model("tiny"), [tmp_path / "nope"], cache_dir=tmp_path, progress=False)


# -- text → audio ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["cosine", "metric", "transport"])
def test_search_text_sorted_and_complete(state: ui.AppState, mode: str) -> None:
    payload = callbacks.search_text_cb(state, "a low hum", 4, mode)
    assert (payload["query"], payload["mode"]) == ("a low hum", mode)  # the query travels with its results
    results = payload["results"]
    assert [r["rank"] for r in results] == [1, 2, 3, 4]
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert len({r["file"] for r in results}) == 4
    for r in results:
        assert set(r) >= {"file", "name", "caption", "score", "source", "author", "licence"}
        assert r["licence"] == "CC0-1.0" and r["source"] == "generated" and r["caption"]
        assert not Path(r["file"]).is_absolute() and (state.roots[0] / r["file"]).is_file()  # gallery-relative
    if mode == "transport":
        assert all(0 <= s <= 1 for s in scores)
        every = callbacks.search_text_cb(state, "a low hum", len(TONES), mode)["results"]
        assert math.isclose(sum(r["score"] for r in every), 1.0, abs_tol=1e-4)


def test_search_text_cosine_scores_match_embeddings(state: ui.AppState) -> None:
    payload = callbacks.search_text_cb(state, "a bird chirps", len(TONES), "cosine")
    results = payload["results"]
    q = state.model.embed_texts(["a bird chirps"])[0]
    assert payload["best_cosine"] == pytest.approx(results[0]["score"], abs=1e-5)
    expected = {callbacks.clip_name(state, f): float(e @ q)
                for f, e in zip(state.gallery.files, state.gallery.embeddings, strict=True)}
    for r in results:
        assert r["score"] == pytest.approx(expected[r["file"]], abs=1e-5)


@pytest.mark.parametrize(
    ("query", "k", "mode", "message"),
    [("", 5, "cosine", "query is empty"), ("   \n", 5, "cosine", "query is empty"),
     ("a dog", 5, "nearest", "unknown scoring mode"), ("a dog", 0, "cosine", "k must be between")],
)
def test_search_text_errors(state: ui.AppState, query: str, k: int, mode: str, message: str) -> None:
    with pytest.raises(gr.Error, match=message):
        callbacks.search_text_cb(state, query, k, mode)


def test_search_as_you_type_is_silent_when_it_should_be(state: ui.AppState) -> None:
    skip = type(gr.skip())
    assert isinstance(callbacks.search_as_you_type(state, "a bird", 3, "cosine", None, False), skip)
    assert isinstance(callbacks.search_as_you_type(state, "a", 3, "cosine", None, True), skip)
    assert isinstance(callbacks.search_as_you_type(state, "a bird", 3, "transport", None, True), skip)
    assert len(callbacks.search_as_you_type(state, "a bird", 3, "cosine", None, True)["results"]) == 3


def test_search_text_k_larger_than_gallery(state: ui.AppState) -> None:
    assert len(callbacks.search_text_cb(state, "a dog", 50, "cosine")["results"]) == len(TONES)


# -- audio → text ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["cosine", "metric", "transport"])
def test_search_audio_ranks_captions_and_finds_itself(state: ui.AppState, mode: str) -> None:
    clip = state.gallery.files[0]
    out = callbacks.search_audio_cb(state, str(clip), "a cat meows\nwater boils\n\na cat meows", 50, mode)
    captions, yours = out["captions"], out["candidates"]
    assert len(captions) == len(TONES) and {c["origin"] for c in captions} == {"gallery"}
    assert [c["caption"] for c in yours] in (["a cat meows", "water boils"], ["water boils", "a cat meows"])
    for ranked in (captions, yours):  # each ranked on its own: probabilities over its own captions
        scores = [c["score"] for c in ranked]
        assert scores == sorted(scores, reverse=True)
        assert sum(c["probability"] for c in ranked) == pytest.approx(1.0, abs=1e-4)
    assert {c["origin"] for c in yours} == {"candidate"}
    nearest = out["sounds"][0]
    assert nearest["file"] == callbacks.clip_name(state, clip)  # the clip is its own nearest neighbour
    if mode != "metric":
        assert nearest["score"] == pytest.approx(1.0, abs=1e-4)
    assert len(out["sounds"]) == callbacks.NEAREST_SOUNDS


@pytest.mark.parametrize(
    ("kind", "message"),
    [("corrupt", "not readable audio"), ("empty", "empty"), ("text", "not readable audio"), ("long", "longer than")],
)
def test_search_audio_bad_uploads(state: ui.AppState, bad_files: dict[str, Path], kind: str, message: str) -> None:
    with pytest.raises(gr.Error, match=message) as info:
        callbacks.search_audio_cb(state, str(bad_files[kind]), "", 5, "cosine")
    assert str(bad_files[kind].parent) not in str(info.value)  # server paths are not shown


def test_search_audio_no_file(state: ui.AppState) -> None:
    with pytest.raises(gr.Error, match="no audio given"):
        callbacks.search_audio_cb(state, None, "", 5, "cosine")


# -- zero-shot ---------------------------------------------------------------------------------


def test_zero_shot_esc50_default(state: ui.AppState) -> None:
    files = [str(f) for f in state.gallery.files[:2]]
    results, fig = callbacks.zero_shot_cb(state, files, None, "", "the sound of {}", 5)
    assert [r["name"] for r in results] == [Path(f).name for f in files]
    for r in results:
        probs = [x["probability"] for x in r["labels"]]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True)
        assert {x["label"] for x in r["labels"]} <= set(ESC50_CLASSES)
    assert len([ax for ax in fig.axes if ax.get_title()]) == 2  # one chart per file


def test_zero_shot_custom_labels_sum_to_one(state: ui.AppState) -> None:
    labels = "dog\ncat\n rain \n\ndog"
    results, _ = callbacks.zero_shot_cb(state, [str(state.gallery.files[0])], str(state.gallery.files[1]), labels,
                                 "the sound of {}\na recording of {}", 10)
    assert len(results) == 2  # a file plus a recording
    for r in results:
        assert sorted(x["label"] for x in r["labels"]) == ["cat", "dog", "rain"]
        assert sum(x["probability"] for x in r["labels"]) == pytest.approx(1.0, abs=1e-5)


def test_zero_shot_label_cache_reused(state: ui.AppState) -> None:
    state.warm_up()
    assert (tuple(ESC50_CLASSES), tuple(state.model.config.prompt_templates)) in state._labels
    first = state.label_set(["dog", "cat"], ["the sound of {}"])
    assert state.label_set(["dog", "cat"], ["the sound of {}"]) is first


@pytest.mark.parametrize(
    ("files", "labels", "template", "message"),
    [(None, "", "the sound of {}", "no audio given"),
     ("GALLERY", "dog", "no placeholder", "has no '{}'"),
     ("GALLERY", "\n \n", "{}", None)],
)
def test_zero_shot_errors(
    state: ui.AppState, files: str | None, labels: str, template: str, message: str | None
) -> None:
    paths = [str(state.gallery.files[0])] if files == "GALLERY" else None
    if message is None:  # blank labels fall back to ESC-50
        results, _ = callbacks.zero_shot_cb(state, paths, None, labels, template, 3)
        assert results[0]["labels"][0]["label"] in ESC50_CLASSES
        return
    with pytest.raises(gr.Error, match=message):
        callbacks.zero_shot_cb(state, paths, None, labels, template, 3)


def test_zero_shot_names_bad_file(state: ui.AppState, bad_files: dict[str, Path]) -> None:
    results, _ = callbacks.zero_shot_cb(state, [str(state.gallery.files[0]), str(bad_files["corrupt"])], None, "",
                                        "{}", 3)
    assert len(results[0]["labels"]) == 3 and "error" not in results[0]  # the good file is still classified
    assert results[1]["labels"] == [] and "corrupt.wav" in results[1]["error"]
    with pytest.raises(gr.Error, match="none of the files.*corrupt.wav"):
        callbacks.zero_shot_cb(state, [str(bad_files["corrupt"])], None, "", "{}", 3)


# -- transport plan ----------------------------------------------------------------------------


def test_random_draw_is_deterministic_and_matches_clips(state: ui.AppState) -> None:
    files, captions = callbacks.random_draw(state, n=4, seed=3)
    assert (files, captions) == callbacks.random_draw(state, n=4, seed=3)
    assert len(files) == 4 and len(set(files)) == 4
    by_name = {ui_state.clip_choices(state.gallery)[i]: m["caption"] for i, m in enumerate(state.gallery.metadata)}
    assert sorted(captions.splitlines()) == sorted(by_name[f] for f in files)


def test_dropdown_choices_sample_large_galleries(state: ui.AppState) -> None:
    names = ui_state.clip_choices(state.gallery)
    assert ui_state.dropdown_choices(state.gallery, []) == names
    small = ui_state.dropdown_choices(state.gallery, [names[0]], limit=2)
    assert len(small) in (2, 3) and names[0] in small and set(small) <= set(names)


def test_transport_plan_balanced_marginals(state: ui.AppState) -> None:
    files = ui_state.clip_choices(state.gallery)[:4]
    captions = "a high beep\na low electrical hum\na buzzing insect"
    data, fig, summary = callbacks.transport_plan_cb(state, files, captions, 0.1, 1.0)
    plan = np.array(data["plan"])
    assert plan.shape == (4, 3) and (plan >= 0).all()
    np.testing.assert_allclose(plan.sum(1), 1 / 4, atol=1e-5)
    np.testing.assert_allclose(plan.sum(0), 1 / 3, atol=1e-5)
    assert data["transported_mass"] == pytest.approx(1.0, abs=1e-5)
    assert data["best_match"] == plan.argmax(1).tolist()
    assert np.array(data["cosine"]).shape == (4, 3)
    assert np.abs(np.array(data["cosine"])).max() <= 1 + 1e-5
    assert "Transported mass" in summary and "Row marginals" in summary
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert len(titled) == 2
    assert [t.get_text() for t in titled[0].get_xticklabels()][0] == "A  a high beep"  # key + label
    assert titled[0].get_ylabel() == "gallery clips (rows)" and titled[1].get_xlabel().startswith("captions")
    bars = [ax for ax in fig.axes if ax not in titled]
    assert [b.get_ylabel() for b in bars] == ["cosine similarity ⟨audio, text⟩",
                                              "plan mass π_ij (all entries sum to the mass)"]
    assert "| A | a high beep |" in summary and "| C | a buzzing insect |" in summary  # full labels, keyed


def test_transport_plan_partial_mass(state: ui.AppState) -> None:
    files = ui_state.clip_choices(state.gallery)[:3]
    data, _, _ = callbacks.transport_plan_cb(state, files, "a bird chirps\nsomeone whistles\nthunder", 0.05, 0.6)
    plan = np.array(data["plan"])
    assert plan.sum() == pytest.approx(0.6, abs=1e-4)
    assert (plan.sum(1) <= 1 / 3 + 1e-5).all() and (plan.sum(0) <= 1 / 3 + 1e-5).all()


@pytest.mark.parametrize(
    ("files", "captions", "eps", "mass", "message"),
    [([], "a beep", 0.1, 1.0, "pick at least one"),
     (["beep.wav"], "\n", 0.1, 1.0, "at least one caption"),
     (["nope.wav"], "a beep", 0.1, 1.0, "not a clip of the gallery"),
     (["beep.wav"], "a beep", 0.0, 1.0, "must be positive"),
     (["beep.wav"], "a beep", 0.1, 1.5, "mass must be in"),
     (["beep.wav"], "\n".join(f"c{i}" for i in range(20)), 0.1, 1.0, "at most")],
)
def test_transport_plan_errors(
    state: ui.AppState, files: list[str], captions: str, eps: float, mass: float, message: str
) -> None:
    with pytest.raises(gr.Error, match=message):
        callbacks.transport_plan_cb(state, files, captions, eps, mass)


# -- library -----------------------------------------------------------------------------------


def test_add_to_library_then_search_finds_upload(
    state: ui.AppState, tmp_path: Path, bad_files: dict[str, Path]
) -> None:
    mine = write_tone(tmp_path / "mine.wav", freq=500.0, sr=22050)
    session, status, table = callbacks.add_to_library_cb(state, [str(mine), str(bad_files["corrupt"])], "my own tone")
    assert len(session) == 1 and "Added 1 clip" in status and "corrupt.wav" in status
    assert table == [["mine.wav", "my own tone"]]
    results = callbacks.search_text_cb(state, "my own tone", 50, "cosine", session)["results"]
    assert len(results) == len(TONES) + 1
    assert [r for r in results if r["origin"] == "yours"][0]["caption"] == "my own tone"
    assert len(state.gallery) == len(TONES)  # the shared gallery is unchanged
    nearest = callbacks.search_audio_cb(state, str(mine), "", 3, "cosine", session)["sounds"][0]
    assert nearest["origin"] == "yours"
    with pytest.raises(gr.Error, match="none of the files"):
        callbacks.add_to_library_cb(state, [str(bad_files["empty"])], "")
    with pytest.raises(gr.Error, match="no files"):
        callbacks.add_to_library_cb(state, [], "")


# -- model panel, rendering --------------------------------------------------------------------


def test_model_info_reads_model_card(state: ui.AppState, tmp_path: Path) -> None:
    card = tmp_path / "README.md"
    card.write_text("---\nlicense: mit\n---\n# m\n## Usage\nx\n## Evaluation\n\n| metric | value |\n|---|---|\n"
                    "| t2a R@1 | 0.123 |\n\n## Backbones\nmore\n", encoding="utf-8")
    metrics = render.model_card_metrics(tmp_path)
    assert "t2a R@1 | 0.123" in metrics and "Usage" not in metrics and "license" not in metrics
    assert render.model_card_metrics(tmp_path / "missing") == ""
    info = render.model_info_markdown(state)
    assert "tiny" in info and "tiny_audio" in info and f"{len(TONES)} clips" in info
    assert "No evaluation metrics" in info


def test_results_html_escapes_and_plays_lazily(state: ui.AppState) -> None:
    results = callbacks.search_text_cb(state, "a beep", 3, "cosine")["results"]
    rows = callbacks.playable(state, results)
    assert rows[0]["file"] == str(state.roots[0] / results[0]["file"])  # the server path, server side only
    html = render.results_html(rows, "<b>a beep</b>")
    assert html.count('class="result-slot"') == 3 and html.count('preload="none"') == 3
    assert results[0]["caption"] in html and "CC0-1.0" in html and "<b>a beep</b>" not in html
    assert render.results_html([], "x") == ""
    crafted = render.results_html([{**results[0], "caption": "<img src=x onerror=alert(1)>", "file": None}])
    assert "<img" not in crafted and "audio not available" in crafted


def test_build_demo_does_not_launch(state: ui.AppState) -> None:
    demo = ui.build_demo(state)
    assert isinstance(demo, gr.Blocks)
    assert not getattr(demo, "is_running", False)
    names = {fn.api_name for fn in demo.fns.values() if fn.api_name}
    assert {"search_text", "search_audio", "zero_shot", "transport_plan"} <= names


# -- app.py ------------------------------------------------------------------------------------


def test_app_args(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import app

    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setenv("ATR_MODEL", "tiny")
    args = app.parse_args(["--gallery", str(tmp_path)])
    assert (args.model, args.host, args.port, args.share) == ("tiny", "127.0.0.1", 7860, False)
    monkeypatch.setenv("SPACE_ID", "someone/atr-demo")
    assert app.parse_args(["--gallery", str(tmp_path)]).host == "0.0.0.0"
    monkeypatch.setattr(app, "BUNDLED_GALLERY", tmp_path / "missing")
    with pytest.raises(SystemExit):
        app.parse_args([])


def test_app_missing_model_exits_with_message(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import app

    assert app.main(["--model", str(tmp_path / "no-model"), "--gallery", str(tmp_path)]) == 2
    assert "does not exist" in caplog.text or "neither a folder" in caplog.text


# -- the bundled model over the bundled gallery (when both are present) -----------------------

BUNDLED_MODEL = Path(__file__).resolve().parent.parent / "bundled_model"
BUNDLED_GALLERY = Path(__file__).resolve().parent.parent / "bundled_gallery"


@pytest.mark.integration
def test_bundled_model_retrieves_gallery_captions(tmp_path: Path) -> None:
    if not (BUNDLED_MODEL / "config.json").is_file() or not BUNDLED_GALLERY.is_dir():
        pytest.skip("bundled_model/ or bundled_gallery/ is not there yet")
    state = ui.make_state(load_model(None), [BUNDLED_GALLERY], cache_dir=tmp_path, progress=False)
    clips = list(zip(state.gallery.files, state.gallery.metadata, strict=True))
    captioned = [(str(f), m["caption"]) for f, m in clips if m.get("caption")]
    assert len(captioned) >= 20
    # about 50 queries per mode keep the test short; measured R@10 ≈ 0.76 cosine, 0.75 transport over the
    # 1426-clip gallery (1265 of its clips were in training)
    captioned = captioned[:: max(1, len(captioned) // 50)]
    for mode in ("cosine", "transport"):
        hits = sum(
            any(r["file"] == callbacks.clip_name(state, f)
                for r in callbacks.search_text_cb(state, caption, 10, mode)["results"])
            for f, caption in captioned
        )
        assert hits / len(captioned) >= 0.3, f"{mode}: text→audio R@10 {hits / len(captioned):.2f} (chance ≈ 0.1)"
    labelled = [(str(f), m["esc50"]) for f, m in clips if m.get("esc50")][:10]
    if labelled:
        top5 = 0
        for f, label in labelled:
            results, _ = callbacks.zero_shot_cb(state, [f], None, "", "the sound of {}", 5)
            top5 += label in [x["label"] for x in results[0]["labels"]]
        assert top5 / len(labelled) >= 0.3  # measured ≈ 0.8 on 20 clips
    files, captions = callbacks.random_draw(state, n=5, seed=0)
    data, _, _ = callbacks.transport_plan_cb(state, files, captions, state.model.config.eps, 1.0)
    assert sum(data["row_marginals"]) == pytest.approx(1.0, abs=1e-4)
