"""What the app shows: views, honest answers (silence, no good match, metric mode, transport zero-shot),
the shipped gallery embeddings, and the session library kept in the browser. Tiny model, generated tones."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import soundfile as sf
import torch

from atr_demo import confidence, ui
from atr_demo.gallery import Gallery, index_gallery, model_fingerprint, shipped_embeddings_path
from atr_demo.model import load_model
from atr_demo.ui import callbacks, library, render, views
from atr_demo.ui.layout import FALLBACK_EXAMPLES, example_queries, labelled_captions

from tests.helpers import write_tone
from tests.test_app_callbacks import TONES, make_gallery


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> ui.AppState:
    root = make_gallery(tmp_path_factory.mktemp("gallery"))
    return ui.make_state(load_model("tiny"), [root], cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


# -- views ---------------------------------------------------------------------------------------


def test_text_view_labels_results_with_their_query(state: ui.AppState) -> None:
    status, html = views.text_view(state, "a <b>low</b> hum", 3, "cosine", None)
    assert "“a &lt;b&gt;low&lt;/b&gt; hum”" in status and "cosine similarity" in status
    assert 'data-query="a &lt;b&gt;low&lt;/b&gt; hum"' in html and html.count('class="result-slot"') == 3
    skip = views.text_view_live(state, "a", 3, "cosine", None, True)
    assert all(isinstance(x, dict) and x.get("__type__") == "update" for x in skip)  # gr.skip()
    assert views.text_view_if_query(state, "  ", 3, "cosine", None)[0] == gr.skip()


def test_audio_view_ranks_candidates_on_their_own(state: ui.AppState) -> None:
    note, yours, table, sounds = views.audio_view(state, str(state.gallery.files[0]), "a cat\na dog", 5, "cosine",
                                                  None)
    assert yours["visible"] and {row[1] for row in yours["value"]} == {"a cat", "a dog"}
    assert len(table) == 5 and not {row[1] for row in table} & {"a cat", "a dog"}
    assert note.startswith("Scores: cosine similarity") and sounds.count('class="result-slot"') == 5
    _, none, _, _ = views.audio_view(state, str(state.gallery.files[0]), "", 5, "cosine", None)
    assert none["visible"] is False


def test_zero_shot_view_is_a_table(state: ui.AppState, tmp_path: Path) -> None:
    silent = tmp_path / "silence.wav"
    sf.write(str(silent), np.zeros(16000, dtype=np.float32), 16000)
    rows, figure, note = views.zero_shot_view(state, [str(state.gallery.files[0]), str(silent)], None,
                                              "dog\ncat\nrain", "the sound of {}", 2, "cosine")
    assert [r[:3] for r in rows[:2]] == [["beep.wav", 1, rows[0][2]], ["beep.wav", 2, rows[1][2]]]
    assert all(r[3].endswith("%") for r in rows[:2])
    assert rows[2][0] == "silence.wav" and "is silence" in rows[2][2]  # reported, not labelled
    assert "probability" in note and len(figure.axes) >= 1


def test_api_wrappers_return_json_ready_data(state: ui.AppState) -> None:
    labels = views.zero_shot_api(state, [str(state.gallery.files[0])], labels="dog\ncat", top=2)
    assert json.loads(json.dumps(labels))[0]["labels"][0]["label"] in {"dog", "cat"}
    names = ui.state.clip_choices(state.gallery)[:2]
    plan = views.transport_plan_api(state, names, "a beep\na hum", 0.1, 1.0)
    assert np.array(plan["plan"]).shape == (2, 2)


# -- honest answers ------------------------------------------------------------------------------


def test_silence_and_near_silence_are_reported(state: ui.AppState, tmp_path: Path) -> None:
    quiet = tmp_path / "quiet.wav"
    rng = np.random.default_rng(0)
    sf.write(str(quiet), (1e-4 * rng.standard_normal(16000)).astype(np.float32), 16000)  # about −80 dBFS
    with pytest.raises(gr.Error, match=r"quiet\.wav is silence \(RMS level -8\d dBFS"):
        callbacks.search_audio_cb(state, str(quiet), "", 3, "cosine")
    assert confidence.rms_dbfs(torch.zeros(10)) == -np.inf
    assert confidence.rms_dbfs(torch.full((100,), 0.5)) == pytest.approx(-6.02, abs=0.01)
    loud = write_tone(tmp_path / "tone.wav", seconds=0.5)
    assert confidence.check_not_silent(torch.from_numpy(sf.read(str(loud))[0]).float(), "tone.wav") > -10


def test_metric_mode_offered_only_when_it_ranks_differently(state: ui.AppState) -> None:
    metric = state.model.metric
    assert confidence.metric_ranks_like_cosine(None) and confidence.metric_ranks_like_cosine(metric)
    assert state.modes == ["cosine", "transport"]
    saved = metric.M.detach().clone()
    try:
        with torch.no_grad():
            metric.M.mul_(3.0)  # c·I still ranks like cosine
        assert confidence.metric_ranks_like_cosine(metric)
        with torch.no_grad():
            metric.M.copy_(torch.diag(torch.linspace(0.5, 2.0, len(saved))))
        assert not confidence.metric_ranks_like_cosine(metric) and state.modes == ["cosine", "metric", "transport"]
    finally:
        with torch.no_grad():
            metric.M.copy_(saved)


def test_no_match_calibration_on_held_out_pairs() -> None:
    gen = torch.Generator().manual_seed(0)
    audio = torch.nn.functional.normalize(torch.randn(40, 16, generator=gen), dim=-1)
    text = torch.nn.functional.normalize(audio + 0.3 * torch.randn(40, 16, generator=gen), dim=-1)  # matched
    cal = confidence.calibrate_no_match(audio, text, [[i] for i in range(40)])
    assert cal is not None
    unrelated = (text @ audio.T)[~torch.eye(40, dtype=torch.bool)]
    assert cal["threshold"] == pytest.approx(float(torch.quantile(unrelated.double(), 0.95)), abs=1e-5)
    assert cal["present_flagged"] < 0.1 < cal["absent_flagged"]  # a useful flag on well-separated data
    assert confidence.calibrate_no_match(audio[:5], text[:5], [[i] for i in range(5)]) is None  # too few clips


def test_no_good_match_flag_in_results(state: ui.AppState) -> None:
    saved = state.calibration
    try:
        state.calibration = {"threshold": 2.0, "level": 0.95, "present_flagged": 0.1, "absent_flagged": 0.2,
                             "clips": 10}
        payload = callbacks.search_text_cb(state, "a bird chirps", 3, "cosine")
        assert payload["no_good_match"] is True and payload["threshold"] == 2.0
        assert "No good match" in render.search_status(payload, state.calibration)
        state.calibration = {**state.calibration, "threshold": -2.0}
        payload = callbacks.search_text_cb(state, "a bird chirps", 3, "cosine")
        assert payload["no_good_match"] is False
        assert "No good match" not in render.search_status(payload, state.calibration)
        state.calibration = None
        assert callbacks.search_text_cb(state, "a bird chirps", 3, "cosine")["no_good_match"] is None
    finally:
        state.calibration = saved


def test_transport_zero_shot_of_one_file_is_not_uniform(state: ui.AppState) -> None:
    results, _ = callbacks.zero_shot_cb(state, [str(state.gallery.files[2])], None, "dog\ncat\nrain\nwind",
                                        "the sound of {}", 4, "transport")
    probs = [x["probability"] for x in results[0]["labels"]]
    assert sum(probs) == pytest.approx(1.0, abs=1e-4)
    assert max(probs) - min(probs) > 1e-3  # solved with the gallery's clips as anchors: not 1/4 each


# -- shipped embeddings --------------------------------------------------------------------------


def test_shipped_embeddings_are_used_and_recomputed_on_mismatch(tmp_path: Path) -> None:
    from training.bundle_gallery import ship_embeddings

    root = make_gallery(tmp_path / "gallery")
    summary = ship_embeddings(root, "tiny", tmp_path / "cache0")
    model = load_model("tiny")
    store = shipped_embeddings_path(root, model_fingerprint(model))
    assert summary["store"] == store and summary["entries"] == len(TONES) and store.is_file()
    assert summary["calibration"] is None  # six clips: too few to calibrate
    fresh = index_gallery(model, [root], cache_dir=tmp_path / "cache1", progress=False)
    write_tone(root / "beep.wav", freq=990.0)  # one file changes: only it is embedded again
    calls: list[int] = []
    encode = model.encode_audio
    model.encode_audio = lambda waves: calls.append(len(waves)) or encode(waves)  # type: ignore[method-assign]
    again = index_gallery(model, [root], cache_dir=tmp_path / "cache2", progress=False)
    assert calls == [1]
    same = [i for i, f in enumerate(again.files) if Path(f).name != "beep.wav"]
    torch.testing.assert_close(again.embeddings[same], fresh.embeddings[same])


# -- the library in the browser ------------------------------------------------------------------


def test_library_round_trip_and_removal(state: ui.AppState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(callbacks, "upload_root", lambda: tmp_path.resolve())
    monkeypatch.setattr(library, "upload_root", lambda: tmp_path.resolve())
    a = write_tone(tmp_path / "u1" / "mine.wav", freq=500.0)
    b = write_tone(tmp_path / "u2" / "other.wav", freq=700.0)
    out = views.add_view(state, [str(a), str(b)], "my tone\nanother", None)
    session, status, table, pick, _, stored = out
    assert "Added 2 clip" in status and table == [["mine.wav", "my tone"], ["other.wav", "another"]]
    assert pick["choices"] == ["u1/mine.wav", "u2/other.wav"]
    assert stored["model"] == state.fingerprint and str(tmp_path) not in json.dumps(stored)
    restored, note = library.from_browser(state, json.loads(json.dumps(stored)))
    assert "Restored" in note and [Path(f).name for f in restored.files] == ["mine.wav", "other.wav"]
    torch.testing.assert_close(restored.embeddings, session.embeddings, atol=1e-5, rtol=0)
    hits = callbacks.search_text_cb(state, "my tone", 20, "cosine", restored)["results"]
    assert sum(r["origin"] == "yours" for r in hits) == 2
    session2, status2, table2, *_ = views.remove_view(state, ["u1/mine.wav"], restored)
    assert table2 == [["other.wav", "another"]] and "Removed 1" in status2 and len(session2) == 1
    assert views.remove_view(state, ["u2/other.wav"], session2)[0] is None


def test_library_from_browser_trusts_nothing(state: ui.AppState, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(library, "upload_root", lambda: tmp_path.resolve())
    dim = state.model.config.embed_dim
    good = {"name": "x/a.wav", "caption": "a", "embedding": [1.0] + [0.0] * (dim - 1)}
    record = {"version": library.RECORD_VERSION, "model": state.fingerprint, "clips": [
        good, {**good, "name": "../../etc/passwd"}, {**good, "name": "y/b.wav", "embedding": [1.0, 2.0]},
        {**good, "name": "z/c.wav", "embedding": ["nan"] * dim}, {"name": "w/d.wav"}]}
    gallery, note = library.from_browser(state, record)
    assert [Path(f).name for f in gallery.files] == ["a.wav"] and "4 damaged" in note
    assert library.from_browser(state, {**record, "model": "other"})[0] is None
    assert library.from_browser(state, None) == (None, "")


def test_example_queries_prefer_everyday_sounds(state: ui.AppState) -> None:
    rows = [{"caption": f"game sound {i}"} for i in range(30)]
    rows += [{"captions": [f"a {k} sound", "other"], "esc50": k} for k in ("dog", "rain", "cat", "dog", "frog",
                                                                             "siren", "clapping", "wind")]
    gallery = Gallery(files=[Path(f"{i}.wav") for i in range(len(rows))], embeddings=torch.zeros(len(rows), 2),
                      metadata=rows)
    assert labelled_captions(gallery) == ["a cat sound", "a clapping sound", "a dog sound", "a frog sound",
                                          "a rain sound", "a siren sound", "a wind sound"]
    everyday = example_queries(replace_gallery(state, gallery))
    assert len(everyday) == 6 and all(q.startswith("a ") for q in everyday)
    few = Gallery(files=gallery.files[:32], embeddings=gallery.embeddings[:32], metadata=rows[:32])
    assert all(q.startswith("game sound") for q in example_queries(replace_gallery(state, few)))  # < 6 classes
    none = Gallery(files=[], embeddings=torch.zeros(0, 2), metadata=[])
    assert example_queries(replace_gallery(state, none)) == list(FALLBACK_EXAMPLES)


def replace_gallery(state: ui.AppState, gallery: Gallery) -> ui.AppState:
    return dataclasses.replace(state, gallery=gallery)
