"""The launched app on localhost, driven through its named API endpoints with ``gradio_client``."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file

from atr_demo import ui
from atr_demo.model import load_model
from atr_demo.ui.state import clip_choices

from tests.test_app_callbacks import TONES, make_gallery


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, ui.AppState]]:
    root = make_gallery(tmp_path_factory.mktemp("gallery"))
    state = ui.make_state(load_model("tiny"), [root], cache_dir=tmp_path_factory.mktemp("cache"), progress=False)
    demo = ui.build_demo(state)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **ui.launch_options(state))
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False), state
    finally:
        demo.close()


def test_named_endpoints_are_listed(served: tuple[Client, ui.AppState]) -> None:
    client, _ = served
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/search_text", "/search_audio", "/zero_shot", "/transport_plan"} <= set(endpoints)


def test_search_text_endpoint(served: tuple[Client, ui.AppState]) -> None:
    client, _ = served
    for mode in ("cosine", "metric", "transport"):
        results = client.predict("a low electrical hum", 3, mode, api_name="/search_text")
        assert isinstance(results, list) and len(results) == 3
        assert [r["rank"] for r in results] == [1, 2, 3]
        assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
        assert all(r["caption"] and r["licence"] == "CC0-1.0" for r in results)


def test_search_audio_endpoint(served: tuple[Client, ui.AppState]) -> None:
    client, state = served
    clip = state.gallery.files[1]
    out = client.predict(handle_file(str(clip)), "a cat meows", 20, "cosine", api_name="/search_audio")
    assert len(out["captions"]) == len(TONES) + 1
    assert sum(c["probability"] for c in out["captions"]) == pytest.approx(1.0, abs=1e-4)
    assert out["sounds"][0]["name"] == Path(clip).name


def test_zero_shot_endpoint(served: tuple[Client, ui.AppState]) -> None:
    client, state = served
    results, plot = client.predict([handle_file(str(state.gallery.files[0]))], None, "dog\ncat\nrain",
                                   "the sound of {}", 3, "cosine", api_name="/zero_shot")
    assert len(results) == 1 and results[0]["name"] == Path(state.gallery.files[0]).name
    assert sum(x["probability"] for x in results[0]["labels"]) == pytest.approx(1.0, abs=1e-5)
    assert plot["type"] == "matplotlib" and plot["plot"].startswith("data:image/")


def test_transport_plan_endpoint(served: tuple[Client, ui.AppState]) -> None:
    client, state = served
    files = clip_choices(state.gallery)[:3]
    data, plot, summary = client.predict(files, "a high beep\na bird chirps", 0.1, 1.0, api_name="/transport_plan")
    plan = np.array(data["plan"])
    assert plan.shape == (3, 2)
    np.testing.assert_allclose(plan.sum(1), 1 / 3, atol=1e-5)
    np.testing.assert_allclose(plan.sum(0), 1 / 2, atol=1e-5)
    assert plot["type"] == "matplotlib" and "Transported mass" in summary


def test_errors_are_reported_and_server_keeps_serving(served: tuple[Client, ui.AppState], tmp_path: Path) -> None:
    client, _ = served
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(300))
    with pytest.raises(Exception, match="not readable audio") as info:
        client.predict(handle_file(str(corrupt)), "", 5, "cosine", api_name="/search_audio")
    assert str(tmp_path) not in str(info.value)
    with pytest.raises(Exception, match="query is empty"):
        client.predict("  ", 5, "cosine", api_name="/search_text")
    assert len(client.predict("a bird chirps", 2, "cosine", api_name="/search_text")) == 2
