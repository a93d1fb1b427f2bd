"""Bad inputs through the CLI, the library and the app: per-file outcomes, one-line errors, bounds,
and nothing served or shown that should not be (issue 12, items 2, 3 and 5)."""

from __future__ import annotations

import builtins
import io
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import pytest

from atr_demo import cli, ui
from atr_demo.errors import ATRError, ConfigError, InputFileError, LimitError, TextInputError
from atr_demo.gallery import index_gallery, read_metadata
from atr_demo.limits import Limits, check_k
from atr_demo.model import load_model
from atr_demo.search import display_name, search_text
from atr_demo.ui import callbacks, render
from atr_demo.ui.serving import is_refused, served_paths
from atr_demo.zeroshot import check_template, embed_labels, load_labels

from tests.helpers import write_tone
from tests.test_app_callbacks import make_gallery

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(200)


@pytest.fixture(scope="module")
def model() -> Any:
    return load_model("tiny")


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory, model: Any) -> ui.AppState:
    root = make_gallery(tmp_path_factory.mktemp("gallery"))
    return ui.make_state(model, [root], cache_dir=tmp_path_factory.mktemp("cache"), progress=False, max_upload_s=5.0)


def _cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def deny_reading(monkeypatch: pytest.MonkeyPatch, denied: Path) -> None:
    """Make ``denied`` unreadable for this process (as ``chmod 000`` would for a non-root user)."""
    for module in (builtins, io):
        original: Callable[..., Any] = module.open

        def fake_open(file: Any, *args: Any, _original: Callable[..., Any] = original, **kwargs: Any) -> Any:
            if isinstance(file, (str, Path)) and Path(file).resolve() == denied.resolve():
                raise PermissionError(13, "Permission denied", str(file))
            return _original(file, *args, **kwargs)

        monkeypatch.setattr(module, "open", fake_open)


# -- per-file outcomes -----------------------------------------------------------------------------


def test_zero_shot_eight_files_one_bad_mp3_gives_seven_results_and_one_reason(
    state: ui.AppState, tmp_path: Path
) -> None:
    files = [write_tone(tmp_path / f"tone{i}.wav", freq=200.0 + 100 * i, sr=16000, seed=i) for i in range(7)]
    bad = tmp_path / "song.mp3"
    bad.write_bytes(PNG)
    paths = [str(f) for f in files[:3]] + [str(bad)] + [str(f) for f in files[3:]]
    results, figure = callbacks.zero_shot_cb(state, paths, None, "dog\ncat\nrain", "the sound of {}", 3)
    assert [r["name"] for r in results] == [Path(p).name for p in paths]  # one row per file, in order
    good = [r for r in results if "error" not in r]
    assert len(good) == 7 and all(len(r["labels"]) == 3 for r in good)
    (failed,) = [r for r in results if "error" in r]
    assert failed["name"] == "song.mp3" and failed["labels"] == []
    assert "PNG image" in failed["error"] and str(tmp_path) not in failed["error"]
    assert len([ax for ax in figure.axes if ax.get_title()]) == 7


def test_unreadable_file_is_a_per_file_reason_in_library_cli_and_app_start(
    tmp_path: Path, model: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_gallery(tmp_path / "gallery")
    locked = root / "hum.wav"
    deny_reading(monkeypatch, locked)
    gallery = index_gallery(model, root, cache_dir=tmp_path / "c", progress=False)
    assert len(gallery) == 5 and [(p.name, "Permission denied" in r) for p, r in gallery.skipped] == [("hum.wav", True)]
    code, out, err = _cli(capsys, ["label", str(root), "--model", "tiny", "--json", "--cache-dir", str(tmp_path / "c")])
    rows = json.loads(out)
    assert code == 1 and len(rows) == 6 and sum("labels" in r for r in rows) == 5
    assert "cannot be read (Permission denied)" in [r for r in rows if "error" in r][0]["error"]
    assert "Traceback" not in err and "skipped" in err
    code, out, err = _cli(capsys, ["search", "a hum", "--gallery", str(root), "--model", "tiny", "--json",
                                   "--cache-dir", str(tmp_path / "c")])
    assert code == 1 and len(json.loads(out)[0]["results"]) == 5 and "skipped hum.wav: hum.wav cannot be read" in err
    state = ui.make_state(model, [root], cache_dir=tmp_path / "c", progress=False)  # app start-up goes on
    assert len(state.gallery) == 5
    results, _ = callbacks.zero_shot_cb(state, [str(locked), str(root / "beep.wav")], None, "dog\ncat", "{}", 2)
    assert "permission denied" in results[0]["error"] and len(results[1]["labels"]) == 2


def test_png_renamed_mp3_reaches_cli_and_app(state: ui.AppState, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "song.mp3"
    bad.write_bytes(PNG)
    code, out, err = _cli(capsys, ["label", str(bad), "--model", "tiny", "--json", "--cache-dir", str(tmp_path / "c")])
    assert code == 1 and "it is a PNG image" in json.loads(out)[0]["error"] and "it is a PNG image" in err
    with pytest.raises(gr.Error, match="song.mp3.*PNG image"):
        callbacks.search_audio_cb(state, str(bad), "", 5, "cosine")


# -- one-line errors -------------------------------------------------------------------------------


def test_labels_file_not_utf8_or_unreadable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    latin = tmp_path / "labels.txt"
    latin.write_bytes("café\nthé\n".encode("latin-1"))
    with pytest.raises(InputFileError, match=r"labels.txt.*is not UTF-8 text.*save it as UTF-8"):
        load_labels(str(latin))
    code, _, err = _cli(capsys, ["label", str(tmp_path), "--labels", str(latin), "--model", "tiny"])
    assert code == 1 and err.startswith("error: labels file") and "UTF-8" in err and len(err.splitlines()) == 1
    with pytest.raises(InputFileError, match="is a folder"):
        load_labels(str(tmp_path))
    assert load_labels(str(_write(tmp_path / "bom.txt", "\ufeffdog\ncat\n"))) == ["dog", "cat"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("template", ["the sound of {0}", "a {x} sound", "{} and {}", "{", "braces } only {}",
                                      "{!r}", "no placeholder"])
def test_bad_templates_one_line_everywhere(
    template: str, state: ui.AppState, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match="prompt template") as info:
        check_template(template)
    assert template in str(info.value) and "'{}'" in str(info.value)
    write_tone(tmp_path / "a.wav")
    code, _, err = _cli(capsys, ["label", str(tmp_path / "a.wav"), "--model", "tiny", "--template", template])
    assert code == 1 and err.startswith("error: prompt template") and len(err.splitlines()) == 1
    with pytest.raises(gr.Error, match="prompt template"):
        callbacks.zero_shot_cb(state, [str(state.gallery.files[0])], None, "dog", template, 3)


def test_literal_braces_in_templates_are_fine() -> None:
    assert check_template("{{quiet}} the sound of {}") == "{{quiet}} the sound of {}"


@pytest.mark.parametrize(
    ("line", "message"),
    [('["a.wav", "a caption"]', "line 2 is a JSON list, not an object"),
     ('"just text"', "line 2 is a JSON str, not an object"),
     ("{not json", "line 2 is not valid JSON"),
     ('{"audio": 5}', 'line 2: "audio" must be a file path')],
)
def test_gallery_jsonl_bad_line(line: str, message: str, tmp_path: Path, model: Any,
                                capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "g"
    write_tone(root / "a.wav")
    _write(root / "gallery.jsonl", json.dumps({"audio": "a.wav", "caption": "a tone"}) + "\n" + line + "\n")
    with pytest.raises(InputFileError, match=message):
        read_metadata(root)
    code, _, err = _cli(capsys, ["search", "a tone", "--gallery", str(root), "--model", "tiny"])
    assert code == 1 and message in err and "one JSON object per line" in err and len(err.splitlines()) == 1
    with pytest.raises(ATRError, match=message):
        ui.make_state(model, [root], cache_dir=tmp_path / "c", progress=False)


def test_embed_out_a_folder_or_bad_suffix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tone(tmp_path / "a.wav")
    code, _, err = _cli(capsys, ["embed", str(tmp_path / "a.wav"), "--model", "tiny", "--out", str(tmp_path)])
    assert code == 1 and "is a folder; give a file path ending in .safetensors or .npy" in err
    code, _, err = _cli(capsys, ["embed", str(tmp_path / "a.wav"), "--model", "tiny", "--out", str(tmp_path / "x.pt")])
    assert code == 1 and "must end in .safetensors or .npy, got 'x.pt'" in err


def test_search_on_empty_gallery(tmp_path: Path, model: Any, state: ui.AppState,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    empty = index_gallery(model, tmp_path, cache_dir=tmp_path / "c", progress=False)
    with pytest.raises(ATRError, match="the gallery is empty"):
        search_text(model, empty, ["a dog"])
    code, _, err = _cli(capsys, ["search", "a dog", "--gallery", str(tmp_path), "--model", "tiny"])
    assert code == 1 and "no usable audio files in" in err and "add audio files" in err
    empty_state = ui.AppState(model=model, gallery=empty)
    with pytest.raises(gr.Error, match="the gallery is empty"):
        callbacks.search_text_cb(empty_state, "a dog", 5, "cosine")


@pytest.mark.parametrize("k", [0, -3, 2.5, "ten", True])
def test_k_out_of_range_is_rejected_not_clamped(k: Any, state: ui.AppState, model: Any,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(LimitError, match="between 1 and"):
        check_k(k, 100)
    with pytest.raises(LimitError, match="k must be"):
        search_text(model, state.gallery, ["a dog"], k=k)
    with pytest.raises(gr.Error, match="between 1 and 100"):
        callbacks.search_text_cb(state, "a dog", k, "cosine")
    if isinstance(k, int) and not isinstance(k, bool):
        code, _, err = _cli(capsys, ["search", "a dog", "--gallery", str(state.roots[0]), "--model", "tiny",
                                     "--k", str(k)])
        assert code == 1 and "--k must be at least 1" in err


@pytest.mark.parametrize(("query", "message"), [("   ", "empty"), ("x" * 5000, "longer than the 2000-character")])
def test_empty_or_huge_text(query: str, message: str, state: ui.AppState, model: Any) -> None:
    with pytest.raises(TextInputError, match=message):
        search_text(model, state.gallery, [query])
    with pytest.raises(gr.Error, match=message):
        callbacks.search_text_cb(state, query, 5, "cosine")


# -- bounds ----------------------------------------------------------------------------------------


def test_prompt_bound_is_checked_before_embedding(state: ui.AppState, model: Any) -> None:
    labels = [f"label {i}" for i in range(400)]
    calls: list[int] = []

    def embed(texts: list[str]) -> Any:
        calls.append(len(texts))
        return model.embed_texts(texts)

    with pytest.raises(LimitError, match=r"400 labels × 3 template\(s\) make 1200 prompts, more than the limit"):
        embed_labels(model, labels, ["{}", "a {}", "the {}"], embed=embed, max_prompts=1000)
    assert calls == []
    with pytest.raises(gr.Error, match="limit of 1000 prompts per request"):
        callbacks.zero_shot_cb(state, [str(state.gallery.files[0])], None, "\n".join(labels), "{}\na {}\nthe {}", 3)


def test_file_size_duration_and_count_bounds(state: ui.AppState, tmp_path: Path) -> None:
    small = ui.AppState(model=state.model, gallery=state.gallery, roots=state.roots, max_upload_s=2.0,
                        limits=Limits(max_files=2, max_upload_mb=0.01, max_library_files=1))
    big = write_tone(tmp_path / "big.wav", seconds=1.0, sr=16000)  # 16-bit PCM: 32 kB > 0.01 MB
    long = write_tone(tmp_path / "long.wav", seconds=3.0, sr=8000)  # 3 s > 2 s
    tiny = write_tone(tmp_path / "tiny.wav", seconds=0.2, sr=8000)  # 3.2 kB
    with pytest.raises(gr.Error, match="3 files is more than the limit of 2 per request"):
        callbacks.zero_shot_cb(small, [str(tiny)] * 3, None, "dog", "{}", 1)
    results, _ = callbacks.zero_shot_cb(small, [str(big), str(tiny)], None, "dog\ncat", "{}", 1)
    assert "big.wav is 0.032 MB, more than the upload limit of 0.01 MB" in results[0]["error"]
    assert len(results[1]["labels"]) == 1
    with pytest.raises(gr.Error, match="longer than"):
        callbacks.search_audio_cb(ui.AppState(model=state.model, gallery=state.gallery, max_upload_s=2.0),
                                  str(long), "", 3, "cosine")
    with pytest.raises(gr.Error, match="at most 1 clips"):
        callbacks.add_to_library_cb(small, [str(tiny), str(tiny)], "")


def test_limits_from_env_and_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    limits = Limits.from_env({"ATR_MAX_PROMPTS": "200", "ATR_MAX_UPLOAD_MB": "2.5", "ATR_MAX_FILES": ""})
    assert (limits.max_prompts, limits.max_upload_mb, limits.max_files) == (200, 2.5, 8)
    assert limits.replace(max_files=3, max_prompts=None).max_files == 3
    with pytest.raises(ConfigError, match="ATR_MAX_PROMPTS='lots' is not a whole number"):
        Limits.from_env({"ATR_MAX_PROMPTS": "lots"})
    with pytest.raises(ConfigError, match="max_files must be positive"):
        Limits(max_files=0)
    import app

    args = app.parse_args(["--gallery", str(tmp_path), "--max-prompts", "300", "--max-upload-mb", "5"])
    assert (args.max_prompts, args.max_upload_mb, args.max_files) == (300, 5.0, None)


def test_heavy_endpoints_share_one_worker_and_uploads_expire(state: ui.AppState) -> None:
    demo = ui.build_demo(state)
    assert demo.delete_cache == (state.limits.upload_ttl_s, state.limits.upload_ttl_s)
    by_name = {fn.api_name: fn for fn in demo.fns.values() if fn.api_name}
    assert by_name["zero_shot"].concurrency_id == "heavy" and by_name["zero_shot"].concurrency_limit == 1
    assert by_name["search_audio"].concurrency_id == "medium" and by_name["search_audio"].concurrency_limit == 1
    assert by_name["search_text"].concurrency_id not in ("heavy", "medium")


# -- nothing leaked --------------------------------------------------------------------------------


def test_results_carry_gallery_relative_names(state: ui.AppState, tmp_path: Path) -> None:
    payload = callbacks.search_text_cb(state, "a bird chirps", 6, "cosine")
    rows = payload["results"] if isinstance(payload, dict) else payload
    text = json.dumps(payload)
    assert str(state.roots[0]) not in text and "sub/chirp.wav" in {r["file"] for r in rows}
    audio = callbacks.search_audio_cb(state, str(state.gallery.files[0]), "a cat", 10, "cosine")
    assert str(state.roots[0]) not in json.dumps(audio)
    # the players get server paths for gallery clips only; a crafted name gets nothing
    mapped = callbacks.playable(state, [{"file": "sub/chirp.wav"}, {"file": "../../etc/passwd"}, {"file": ".env"}])
    assert mapped[0]["file"] == str(state.roots[0] / "sub" / "chirp.wav") and mapped[1]["file"] is None
    assert mapped[2]["file"] is None
    assert display_name(Path("/srv/other/x.wav"), [state.roots[0]]) == "x.wav"


def test_html_in_queries_and_captions_is_shown_as_text() -> None:
    query = "<img src=x onerror=alert(1)> dog"
    status = render.search_status({"query": query, "mode": "cosine", "results": [{"rank": 1}]})
    assert "<img" not in status and "&lt;img src=x onerror=alert(1)&gt; dog" in status
    listing = render.results_html([{"rank": 1, "caption": "<b>bold</b>", "score": 0.5, "name": "a.wav"}], query)
    assert "<b>bold" not in listing and "&lt;b&gt;bold&lt;/b&gt;" in listing and "<img" not in listing


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, model: Any) -> Iterator[tuple[str, ui.AppState]]:
    root = make_gallery(tmp_path_factory.mktemp("served"))
    _write(root / ".env", "API_KEY=secret\n")
    _write(root / "secret.txt", "do not serve\n")
    write_tone(root / ".hidden.wav")
    write_tone(root / ".private" / "dot-folder.wav")
    state = ui.make_state(model, [root], cache_dir=tmp_path_factory.mktemp("c2"), progress=False)
    demo = ui.build_demo(state)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **ui.launch_options(state))
    try:
        yield f"http://127.0.0.1:{port}", state
    finally:
        demo.close()


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_only_gallery_audio_is_served_over_http(served: tuple[str, ui.AppState]) -> None:
    base, state = served
    root = state.roots[0]
    assert _status(f"{base}/gradio_api/file={root / 'beep.wav'}") == 200
    assert _status(f"{base}/gradio_api/file={root / 'sub' / 'chirp.wav'}") == 200
    for name in (".env", "secret.txt", "gallery.jsonl", ".hidden.wav", ".private/dot-folder.wav"):
        assert _status(f"{base}/gradio_api/file={root / name}") == 403, name
    assert _status(f"{base}/gradio_api/file={root}/../{root.name}/.env") == 403
    # result players fetch gallery clips by public name: no server path in the page
    rows = callbacks.playable(state, [{"file": "sub/chirp.wav"}, {"file": ".env"}])
    assert rows[0]["url"] == "gallery_audio/sub/chirp.wav" and rows[1]["url"] is None
    assert _status(f"{base}/{rows[0]['url']}") == 200
    for name in (".env", "secret.txt", "gallery.jsonl", "../secret.txt", "nope.wav"):
        assert _status(f"{base}/gallery_audio/{name}") == 404, name
    payload = callbacks.search_text_cb(state, "a beep", 3, "cosine")
    html = render.results_html(callbacks.playable(state, payload["results"] if isinstance(payload, dict) else payload))
    assert str(root) not in html and 'src="gallery_audio/' in html


def test_gallery_file_guard_refuses_everything_but_served_audio(state: ui.AppState) -> None:
    root = str(state.roots[0])
    served = served_paths(state.gallery.files)
    for path in (f"{root}/beep.wav", f"{root}/sub/chirp.wav"):
        assert not is_refused(f"/gradio_api/file={path}", [root], served)
    for path in (f"{root}/.env", f"{root}/gallery.jsonl", f"{root}/sub/../secret.txt", root, f"{root}/sub"):
        assert is_refused(f"/gradio_api/file={path}", [root], served), path
    assert not is_refused("/gradio_api/file=/tmp/gradio/abc/upload.wav", [root], served)  # not a gallery path
    assert not is_refused(f"/gradio_api/info{root}/.env", [root], served)  # not the file route
    options = ui.launch_options(state)
    assert options["allowed_paths"] == [root] and options["max_file_size"] == 50_000_000


def test_uploads_are_deleted_after_the_ttl(tmp_path: Path, model: Any, state: ui.AppState) -> None:
    from gradio_client import Client, handle_file

    short = ui.AppState(model=model, gallery=state.gallery, roots=state.roots, limits=Limits(upload_ttl_s=1))
    demo = ui.build_demo(short)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **ui.launch_options(short))
    try:
        clip = write_tone(tmp_path / "upload-me.wav", seconds=0.5)
        Client(f"http://127.0.0.1:{port}/", verbose=False).predict(handle_file(str(clip)), "", 3, "cosine",
                                                                    api_name="/search_audio")
        uploads = [Path(f) for f in demo.upload_file_set if Path(f).name == "upload-me.wav"]
        assert uploads and all(f.is_file() for f in uploads)
        deadline = time.monotonic() + 15
        while any(f.exists() for f in uploads) and time.monotonic() < deadline:
            time.sleep(0.25)
        assert not any(f.exists() for f in uploads)  # deleted by the server after upload_ttl_s
    finally:
        demo.close()
