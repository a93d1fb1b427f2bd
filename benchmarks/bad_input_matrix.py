"""The bad-input matrix: each bad input through the CLI, the library and the app's callbacks.

Prints a Markdown table ``case | CLI | library | app`` with what each layer answers: the one-line
message (``error: …`` / ``skipped FILE: …`` on the CLI's stderr, the exception's message in the
library, the ``gradio.Error`` message or the per-file ``error`` in the app), or a count of the
results given for the good files. ``—`` marks a case that does not apply to a layer (e.g. the app
takes labels as typed text, not a file). Temporary folders are shown as ``…/``.

The CLI runs in this process (``atr_demo.cli.main`` with captured stdout/stderr), the app's
callbacks as plain functions on an :class:`~atr_demo.ui.AppState`. An unreadable file is faked by
making ``open`` raise ``PermissionError`` for that one path (``chmod 000`` does not stop root).

Usage::

    python benchmarks/bad_input_matrix.py [--model tiny]
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import io
import json
import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import soundfile as sf

from atr_demo import cli, ui
from atr_demo.audio import load_audio
from atr_demo.errors import ATRError
from atr_demo.fileio import markdown_table
from atr_demo.gallery import Gallery, index_gallery, read_metadata
from atr_demo.limits import Limits
from atr_demo.model import load_model
from atr_demo.search import search_text
from atr_demo.ui import callbacks
from atr_demo.zeroshot import embed_labels, load_labels

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(200)
NA = "—"


def tone(path: Path, seconds: float = 1.0, freq: float = 440.0, sr: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)
    return path


@contextlib.contextmanager
def unreadable(path: Path) -> Iterator[None]:
    """``open`` raises PermissionError for ``path`` inside the block (builtins and io)."""
    originals = {module: module.open for module in (builtins, io)}

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def fake_open(file: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(file, (str, Path)) and Path(file).resolve() == path.resolve():
                raise PermissionError(13, "Permission denied", str(file))
            return original(file, *args, **kwargs)
        return fake_open

    try:
        for module, original in originals.items():
            module.open = make(original)  # type: ignore[attr-defined]
        yield
    finally:
        for module, original in originals.items():
            module.open = original  # type: ignore[attr-defined]


class Matrix:
    """Runs the layers and collects one-line answers."""

    def __init__(self, model_name: str, work: Path) -> None:
        self.model_name = model_name
        self.work = work
        self.cache = work / "cache"
        self.model = load_model(model_name)
        self.gallery_dir = work / "gallery"
        for i in range(4):
            tone(self.gallery_dir / f"tone{i}.wav", freq=200.0 + 150 * i)
        (self.gallery_dir / "gallery.jsonl").write_text(
            "\n".join(json.dumps({"audio": f"tone{i}.wav", "caption": f"a tone number {i}"}) for i in range(4)) + "\n",
            encoding="utf-8",
        )
        self.state = ui.make_state(self.model, [self.gallery_dir], cache_dir=self.cache, progress=False)

    def short(self, text: str) -> str:
        text = " ".join(str(text).split())
        for prefix in (str(self.work.resolve()), str(self.work)):
            text = text.replace(prefix + "/", "…/").replace(prefix, "…")
        return text.replace("|", "\\|")

    def cli(self, argv: list[str]) -> str:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main([*argv, "--model", self.model_name, "--cache-dir", str(self.cache)])
        lines = [line for line in err.getvalue().splitlines() if line.startswith(("error:", "skipped"))]
        results = ""
        if out.getvalue().strip().startswith(("[", "{")):
            data = json.loads(out.getvalue())
            if isinstance(data, list) and data and "labels" in data[0] or (data and "error" in data[0]):
                good = sum(1 for d in data if d.get("labels"))
                results = f"{good} labelled; "
            elif isinstance(data, list) and data and "results" in data[0]:
                results = f"{len(data[0]['results'])} results; "
        return self.short(f"exit {code}: {results}" + " / ".join(lines))

    def lib(self, fn: Callable[[], Any]) -> str:
        try:
            value = fn()
        except ATRError as exc:
            return self.short(f"{type(exc).__name__}: {exc}")
        return self.short(value if isinstance(value, str) else f"ok: {value!r}"[:200])

    def app(self, fn: Callable[[], Any]) -> str:
        try:
            value = fn()
        except gr.Error as exc:
            return self.short(f"gr.Error: {exc.message}")
        except ATRError as exc:
            return self.short(f"{type(exc).__name__} at start-up: {exc}")
        return self.short(value if isinstance(value, str) else f"ok: {value!r}"[:200])

    def zero_shot(self, paths: list[Path], labels: str = "dog\ncat\nrain", template: str = "the sound of {}",
                  state: ui.AppState | None = None) -> str:
        results, _ = callbacks.zero_shot_cb(state or self.state, [str(p) for p in paths], None, labels, template, 3)
        good = [r for r in results if "error" not in r]
        bad = "; ".join(f"{r['name']}: {r['error']}" for r in results if "error" in r)
        return f"{len(good)} results; " + bad


def indexed(gallery: Gallery) -> str:
    reasons = " / ".join(f"skipped {p.name}: {r}" for p, r in gallery.skipped)
    return f"{len(gallery)} indexed; {reasons}"


def run(model_name: str) -> str:
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        m = Matrix(model_name, work)
        rows: list[list[str]] = []

        # one bad MP3 (a PNG renamed) among eight files
        batch = work / "batch"
        goods = [tone(batch / f"clip{i}.wav", freq=300.0 + 50 * i) for i in range(7)]
        png = batch / "song.mp3"
        png.write_bytes(PNG)
        rows.append(["8 files, one a PNG renamed .mp3",
                     m.cli(["label", str(batch), "--json", "--top", "3"]),
                     m.lib(lambda: indexed(index_gallery(m.model, batch, cache_dir=m.cache, progress=False))),
                     m.app(lambda: m.zero_shot([*goods[:3], png, *goods[3:]]))])

        # a file the process cannot read
        locked_dir = work / "locked"
        locked = [tone(locked_dir / f"clip{i}.wav", freq=500.0 + 50 * i) for i in range(3)][0]
        with unreadable(locked):
            rows.append(["unreadable file (permission denied) among 3",
                         m.cli(["label", str(locked_dir), "--json"]),
                         m.lib(lambda: indexed(index_gallery(m.model, locked_dir, cache_dir=m.cache, progress=False))),
                         m.app(lambda: m.zero_shot(sorted(locked_dir.glob("*.wav"))))])

        # labels file not UTF-8
        latin = work / "labels-latin1.txt"
        latin.write_bytes("café\nthé au jasmin\n".encode("latin-1"))
        rows.append(["labels file not UTF-8", m.cli(["label", str(goods[0]), "--labels", str(latin)]),
                     m.lib(lambda: load_labels(str(latin))), NA + " (labels are typed text)"])

        for template in ("the sound of {0}", "a {x} sound", "a {"):
            rows.append([f"template `{template}`",
                         m.cli(["label", str(goods[0]), "--template", template]),
                         m.lib(lambda t=template: embed_labels(m.model, ["dog"], [t])),
                         m.app(lambda t=template: m.zero_shot([goods[0]], template=t))])

        # gallery.jsonl with a non-object line
        bad_meta = work / "bad-meta"
        tone(bad_meta / "a.wav")
        (bad_meta / "gallery.jsonl").write_text('{"audio": "a.wav", "caption": "a tone"}\n["a.wav", "x"]\n')
        rows.append(["gallery.jsonl with a non-object line",
                     m.cli(["search", "a tone", "--gallery", str(bad_meta)]),
                     m.lib(lambda: read_metadata(bad_meta)),
                     m.app(lambda: ui.make_state(m.model, [bad_meta], cache_dir=m.cache, progress=False))])

        rows.append(["`embed --out` a folder", m.cli(["embed", str(goods[0]), "--out", str(work)]), NA, NA])

        empty_dir = work / "empty"
        empty_dir.mkdir()
        empty = index_gallery(m.model, empty_dir, cache_dir=m.cache, progress=False)
        rows.append(["search an empty gallery", m.cli(["search", "a dog", "--gallery", str(empty_dir)]),
                     m.lib(lambda: search_text(m.model, empty, ["a dog"])),
                     m.app(lambda: callbacks.search_text_cb(ui.AppState(model=m.model, gallery=empty), "a dog", 5))])

        for k in (0, -2):
            rows.append([f"k = {k}", m.cli(["search", "a dog", "--gallery", str(m.gallery_dir), "--k", str(k)]),
                         m.lib(lambda k=k: search_text(m.model, m.state.gallery, ["a dog"], k=k)),
                         m.app(lambda k=k: callbacks.search_text_cb(m.state, "a dog", k))])

        for name, query in (("empty query", "   "), ("huge query (5 000 characters)", "a dog " * 834)):
            rows.append([name, m.cli(["search", query, "--gallery", str(m.gallery_dir)]),
                         m.lib(lambda q=query: search_text(m.model, m.state.gallery, [q])),
                         m.app(lambda q=query: callbacks.search_text_cb(m.state, q, 5))])

        many = work / "labels-400.txt"
        many.write_text("\n".join(f"label {i}" for i in range(400)) + "\n", encoding="utf-8")
        three = ["--template", "{}", "--template", "a {}", "--template", "the {}"]
        rows.append(["400 labels × 3 templates (limit 1 000 prompts)",
                     m.cli(["label", str(goods[0]), "--labels", str(many), *three]),
                     m.lib(lambda: embed_labels(m.model, load_labels(str(many)), ["{}", "a {}", "the {}"],
                                                max_prompts=Limits().max_prompts)),
                     m.app(lambda: m.zero_shot([goods[0]], labels=many.read_text(), template="{}\na {}\nthe {}"))])

        rows.append(["9 files in one zero-shot request (limit 8)", NA + " (no per-run bound)", NA,
                     m.app(lambda: m.zero_shot([*goods, goods[0], goods[1]]))])

        huge = work / "huge.wav"
        with open(huge, "wb") as fh:  # a 51 MB file (sparse): over the 50 MB upload bound
            fh.truncate(51_000_000)
        rows.append(["51 MB upload (limit 50 MB)", NA + " (no size bound)", NA,
                     m.app(lambda: m.zero_shot([huge, goods[0]]))])

        long = tone(work / "long.wav", seconds=125.0, sr=8000)
        rows.append(["125 s clip (limit 120 s)", m.cli(["label", str(long), "--json"]),
                     m.lib(lambda: load_audio(long, m.model.sample_rate, m.state.max_upload_s)),
                     m.app(lambda: callbacks.search_audio_cb(m.state, str(long), "", 5))])

        html = "<img src=x onerror=alert(1)> dog"
        rows.append(["HTML in a query", NA, NA,
                     m.app(lambda: ui.render.search_status(callbacks.search_text_cb(m.state, html, 1, "cosine")))])
        return markdown_table(["case", "CLI", "library", "app"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="model for the checks (default: tiny)")
    args = parser.parse_args()
    print(run(args.model))


if __name__ == "__main__":
    main()
