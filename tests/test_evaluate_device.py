"""``evaluate --device/--batch-size/--text-batch-size``: the numbers do not depend on them, and a
device that is not there is one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from atr_demo.devices import resolve_device
from atr_demo.errors import ConfigError

from tests.helpers import write_caption_corpus
from training import evaluate

WORDS = ["dog barks", "rain falls", "bell rings", "engine runs", "bird sings", "wind blows", "car horn"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """7 seeded clips with 2 captions each (one ESC-50 labelled: zero-shot is scored too)."""
    return write_caption_corpus(tmp_path_factory.mktemp("evaldata"), WORDS, lambda i: "test", freq=(200, 110),
                                seconds=(0.3, 0.1), extra=lambda i: {"esc50": "dog" if i == 0 else None})


def _run(data: Path, out: Path, *extra: str) -> dict:
    args = ["--model", "tiny", "--data", str(data), "--json", "--out", str(out), *extra]
    assert evaluate.main(args) == 0
    return json.loads(out.read_text())


def _close(a: object, b: object) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for key in a:
            _close(a[key], b[key])
    elif isinstance(a, float):
        assert a == pytest.approx(b, abs=1e-6)
    else:
        assert a == b


def test_cpu_small_batches_give_the_default_numbers(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    default = _run(data, tmp_path / "default.json")
    small = _run(data, tmp_path / "small.json", "--device", "cpu", "--batch-size", "3", "--text-batch-size", "2")
    assert default["n_clips"] == 7 and default["n_captions"] == 14
    assert set(default["modes"]) == {"cosine", "metric", "transport"} and "zeroshot" in default["modes"]["cosine"]
    _close(small, default)


def test_unavailable_device_is_one_clear_error(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        assert evaluate.main(["--model", "tiny", "--data", str(data), "--device", name]) == 1
        err = capsys.readouterr().err
        assert "CUDA was asked for but no GPU is available; use cpu or auto" in err and "Traceback" not in err
    with pytest.raises(ConfigError, match="'gpu' is not one of cpu, cuda, cuda:N"):
        resolve_device("gpu")
    assert evaluate.main(["--model", "tiny", "--data", str(data), "--batch-size", "0"]) == 1
    assert "--batch-size and --text-batch-size must be at least 1" in capsys.readouterr().err


def test_gpu_index_out_of_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=r"has 2 GPU\(s\) \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_gives_the_cpu_numbers(data: Path, tmp_path: Path) -> None:
    cpu = _run(data, tmp_path / "cpu.json", "--device", "cpu")
    gpu = _run(data, tmp_path / "gpu.json", "--device", "cuda", "--batch-size", "4")
    for mode in ("cosine", "metric"):
        for direction in ("text_to_audio", "audio_to_text"):
            for key in ("R@1", "R@5", "mAP@10"):
                assert gpu["modes"][mode][direction][key] == pytest.approx(cpu["modes"][mode][direction][key], abs=1e-3)
