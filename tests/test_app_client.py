"""The launched app on localhost, through its named API endpoints: ``gradio_client`` and plain HTTP.

The ``CURL`` examples are the README's, run for real with ``bash`` and ``curl`` against the app
(``$URL`` set to its address, ``$CLIP`` to an audio file).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file

from atr_demo import ui
from atr_demo.model import load_model
from atr_demo.ui.state import clip_choices

from tests.test_app_callbacks import TONES, make_gallery

#: Plain-HTTP calls of each endpoint, as printed in the README (``$URL``: the app, ``$CLIP``: an audio file).
#: Each call is two requests: POST the inputs and get an event id, then GET the result (server-sent events;
#: the last ``data:`` line holds the outputs, a JSON list).
CURL = {
    "search_text": """
EVENT=$(curl -s -X POST "$URL/gradio_api/call/search_text" -H 'Content-Type: application/json' \\
  -d '{"data": ["a dog barks", 5, "cosine"]}' | jq -r .event_id)
curl -s "$URL/gradio_api/call/search_text/$EVENT"
""",
    "search_audio": """
FILE=$(curl -s -F "files=@$CLIP" "$URL/gradio_api/upload" | jq -r '.[0]')
EVENT=$(curl -s -X POST "$URL/gradio_api/call/search_audio" -H 'Content-Type: application/json' \\
  -d '{"data": [{"path": "'"$FILE"'", "meta": {"_type": "gradio.FileData"}}, "a cat meows\\nrain", 5, "cosine"]}' \\
  | jq -r .event_id)
curl -s "$URL/gradio_api/call/search_audio/$EVENT"
""",
    "zero_shot": """
FILE=$(curl -s -F "files=@$CLIP" "$URL/gradio_api/upload" | jq -r '.[0]')
EVENT=$(curl -s -X POST "$URL/gradio_api/call/zero_shot" -H 'Content-Type: application/json' \\
  -d '{"data": [[{"path": "'"$FILE"'", "meta": {"_type": "gradio.FileData"}}], null, "dog\\ncat\\nrain",
       "the sound of {}", 3, "cosine"]}' | jq -r .event_id)
curl -s "$URL/gradio_api/call/zero_shot/$EVENT"
""",
    "transport_plan": """
EVENT=$(curl -s -X POST "$URL/gradio_api/call/transport_plan" -H 'Content-Type: application/json' \\
  -d '{"data": [["CLIP_A", "CLIP_B"], "a high beep\\na bird chirps", 0.1, 1.0]}' | jq -r .event_id)
curl -s "$URL/gradio_api/call/transport_plan/$EVENT"
""",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, ui.AppState, str]]:
    root = make_gallery(tmp_path_factory.mktemp("gallery"))
    state = ui.make_state(load_model("tiny"), [root], cache_dir=tmp_path_factory.mktemp("cache"), progress=False)
    demo = ui.build_demo(state)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **ui.launch_options(state))
    url = f"http://127.0.0.1:{port}"
    try:
        yield Client(url + "/", verbose=False), state, url
    finally:
        demo.close()


def test_named_endpoints_have_meaningful_names(served: tuple[Client, ui.AppState, str]) -> None:
    client, _, _ = served
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/search_text", "/search_audio", "/zero_shot", "/transport_plan"}
    params = {name: [p["parameter_name"] for p in ep["parameters"]] for name, ep in endpoints.items()}
    assert params == {
        "/search_text": ["query", "k", "mode"],
        "/search_audio": ["audio", "candidates", "k", "mode"],
        "/zero_shot": ["files", "recording", "labels", "template", "top", "mode"],
        "/transport_plan": ["files", "captions", "eps", "mass"],
    }
    returns = {name: [r["label"] for r in ep["returns"]] for name, ep in endpoints.items()}
    assert returns["/search_text"] == ["search results"] and returns["/zero_shot"] == ["labels per file"]
    optional = {p["parameter_name"] for p in endpoints["/search_audio"]["parameters"] if p["parameter_has_default"]}
    assert optional == {"candidates", "k", "mode"}  # only the audio is required
    optional = {p["parameter_name"] for p in endpoints["/zero_shot"]["parameters"] if p["parameter_has_default"]}
    assert optional == {"recording", "labels", "template", "top", "mode"}


def test_search_text_endpoint(served: tuple[Client, ui.AppState, str]) -> None:
    client, state, _ = served
    for mode in ("cosine", "metric", "transport"):
        out = client.predict(query="a low electrical hum", k=3, mode=mode, api_name="/search_text") \
            if mode in state.modes else None
        if out is None:  # metric is not offered for this model (M = I): the API refuses it like the UI
            with pytest.raises(Exception, match="metric"):
                client.predict(query="a low electrical hum", k=3, mode=mode, api_name="/search_text")
            continue
        assert out["query"] == "a low electrical hum" and out["mode"] == mode
        results = out["results"]
        assert [r["rank"] for r in results] == [1, 2, 3]
        assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
        assert all(r["caption"] and r["licence"] == "CC0-1.0" for r in results)
    assert len(client.predict(query="a bird chirps", api_name="/search_text")["results"]) == len(TONES)  # k = 10


def test_search_audio_endpoint(served: tuple[Client, ui.AppState, str]) -> None:
    client, state, _ = served
    clip = state.gallery.files[1]
    out = client.predict(audio=handle_file(str(clip)), candidates="a cat meows", k=20, api_name="/search_audio")
    assert len(out["captions"]) == len(TONES) and [c["caption"] for c in out["candidates"]] == ["a cat meows"]
    assert sum(c["probability"] for c in out["captions"]) == pytest.approx(1.0, abs=1e-4)
    assert out["sounds"][0]["name"] == Path(clip).name
    without = client.predict(audio=handle_file(str(clip)), api_name="/search_audio")  # candidates optional
    assert without["candidates"] == [] and len(without["captions"]) == len(TONES)


def test_zero_shot_endpoint(served: tuple[Client, ui.AppState, str]) -> None:
    client, state, _ = served
    results = client.predict(files=[handle_file(str(state.gallery.files[0]))], labels="dog\ncat\nrain", top=3,
                             api_name="/zero_shot")
    assert len(results) == 1 and results[0]["name"] == Path(state.gallery.files[0]).name
    assert sum(x["probability"] for x in results[0]["labels"]) == pytest.approx(1.0, abs=1e-5)


def test_transport_plan_endpoint(served: tuple[Client, ui.AppState, str]) -> None:
    client, state, _ = served
    files = clip_choices(state.gallery)[:3]
    data = client.predict(files=files, captions="a high beep\na bird chirps", eps=0.1, mass=1.0,
                          api_name="/transport_plan")
    plan = np.array(data["plan"])
    assert plan.shape == (3, 2)
    np.testing.assert_allclose(plan.sum(1), 1 / 3, atol=1e-5)
    np.testing.assert_allclose(plan.sum(0), 1 / 2, atol=1e-5)


def _curl(name: str, url: str, clip: Path, files: list[str]) -> list:
    """Run the README's curl example of ``name``; the outputs of the final ``data:`` line."""
    script = CURL[name].replace("CLIP_A", files[0]).replace("CLIP_B", files[1])
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "URL": url, "CLIP": str(clip)}, check=False)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert "event: complete" in lines, run.stdout[-2000:]
    return json.loads([line for line in lines if line.startswith("data: ")][-1][len("data: "):])


@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("jq") is None, reason="needs curl and jq")
def test_readme_curl_examples(served: tuple[Client, ui.AppState, str]) -> None:
    _, state, url = served
    clip, files = state.gallery.files[0], clip_choices(state.gallery)[:2]
    (text,) = _curl("search_text", url, clip, files)
    assert text["query"] == "a dog barks" and len(text["results"]) == 5
    (audio,) = _curl("search_audio", url, clip, files)
    assert {c["caption"] for c in audio["candidates"]} == {"a cat meows", "rain"}
    assert audio["sounds"][0]["name"] == Path(clip).name
    (labels,) = _curl("zero_shot", url, clip, files)
    assert [len(r["labels"]) for r in labels] == [3]
    (plan,) = _curl("transport_plan", url, clip, files)
    assert np.array(plan["plan"]).shape == (2, 2)


def test_errors_are_reported_and_server_keeps_serving(
    served: tuple[Client, ui.AppState, str], tmp_path: Path
) -> None:
    client, _, _ = served
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(300))
    with pytest.raises(Exception, match="not readable audio") as info:
        client.predict(handle_file(str(corrupt)), "", 5, "cosine", api_name="/search_audio")
    assert str(tmp_path) not in str(info.value)
    with pytest.raises(Exception, match="query is empty"):
        client.predict("  ", 5, "cosine", api_name="/search_text")
    assert len(client.predict("a bird chirps", 2, "cosine", api_name="/search_text")["results"]) == 2
