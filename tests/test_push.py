"""``push``: model card, Hub calls with the HTTP layer replaced, and loading back from a Hub cache."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import pytest
import torch
import yaml

from atr_demo.model import create_model, load_model, tiny_config

from tests.helpers import offline_hub_cache
from training import push as push_mod
from training.model_card import render_model_card

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    folder = tmp_path / "best"
    model = create_model(tiny_config(), seed=3)
    model.save_pretrained(folder)
    (folder / "train_config.json").write_text(json.dumps({"data": ["/data/corpus"], "loss": "mltm", "eps": 0.05}))
    (folder / "optimizer.safetensors").write_bytes(b"not for upload")
    (folder / "trainer_state.json").write_text("{}")
    return folder


class FakeHub:
    """Records the HfApi calls that would go over HTTP."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.uploaded: list[str] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from huggingface_hub import HfApi

        def create_repo(api: HfApi, repo_id: str, **kw: object) -> str:
            self.calls.append(("create_repo", {"repo_id": repo_id, **kw}))
            return f"https://huggingface.co/{repo_id}"

        def create_branch(api: HfApi, repo_id: str, **kw: object) -> None:
            self.calls.append(("create_branch", {"repo_id": repo_id, **kw}))

        def upload_folder(api: HfApi, **kw: object) -> str:
            self.calls.append(("upload_folder", dict(kw)))
            root = Path(str(kw["folder_path"]))
            ignore = list(kw.get("ignore_patterns") or [])
            allow = kw.get("allow_patterns")

            def kept(name: str) -> bool:
                allowed = allow is None or any(fnmatch.fnmatch(name, pat) for pat in allow)
                return allowed and not any(fnmatch.fnmatch(name, pat) for pat in ignore)

            names = (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
            self.uploaded = sorted(name for name in names if kept(name))
            return f"https://huggingface.co/{kw['repo_id']}/commit/{COMMIT}"

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "create_branch", create_branch)
        monkeypatch.setattr(HfApi, "upload_folder", upload_folder)


def test_push_calls_and_files(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = FakeHub()
    hub.install(monkeypatch)
    evaluation = {"data": ["corpus"], "split": "test", "n_clips": 4, "n_captions": 8, "modality_gap": 0.5,
                  "modes": {"cosine": {
                      "text_to_audio": {"R@1": 0.5, "R@5": 1.0, "R@10": 1.0, "mAP@10": 0.7, "median_rank": 1.5},
                      "audio_to_text": {"R@1": 0.25, "R@5": 1.0, "R@10": 1.0, "mAP@10": 0.6, "median_rank": 2.0},
                  }}}
    eval_file = tmp_path / "eval.json"
    eval_file.write_text(json.dumps(evaluation))
    code = push_mod.main(["--model", str(checkpoint), "--repo-id", "owner/name", "--private", "--revision", "exp1",
                          "--eval", str(eval_file)])
    assert code == 0 and "owner/name" in capsys.readouterr().out
    names = [name for name, _ in hub.calls]
    assert names == ["create_repo", "create_branch", "upload_folder"]
    assert hub.calls[0][1]["private"] is True and hub.calls[0][1]["exist_ok"] is True
    assert hub.calls[1][1]["branch"] == "exp1"
    assert hub.calls[2][1]["repo_id"] == "owner/name" and hub.calls[2][1]["revision"] == "exp1"
    assert hub.uploaded == ["README.md", "config.json", "eval.json", "model.safetensors", "train_config.json"]

    card = (checkpoint / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["library_name"] == "atr-demo" and meta["license"]
    assert set(meta["tags"]) >= {"audio-text-retrieval", "optimal-transport", "m-ltm", "zero-shot-audio-classification"}
    assert meta["datasets"] == ["corpus"] and "mAP@10" in meta["metrics"]
    assert "| cosine | 0.500 |" in card and '"eps": 0.05' in card


def test_push_uploads_the_allow_list_only(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = FakeHub()
    hub.install(monkeypatch)
    for name in ("weights.pt", "state.pkl", "pytorch_model.bin", "log.jsonl", "tb/events.out.tfevents.1.host",
                 "events.out.tfevents.2.host", "tokenizer.json", "vocab.txt", "preprocessor_config.json", "plot.png"):
        (checkpoint / name).parent.mkdir(parents=True, exist_ok=True)
        (checkpoint / name).write_bytes(b"x")
    assert push_mod.main(["--model", str(checkpoint), "--repo-id", "owner/name"]) == 0
    assert hub.uploaded == ["README.md", "config.json", "model.safetensors", "plot.png", "preprocessor_config.json",
                            "tokenizer.json", "train_config.json", "vocab.txt"]


def test_push_without_branch_and_failure(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = FakeHub()
    hub.install(monkeypatch)
    assert push_mod.main(["--model", str(checkpoint), "--repo-id", "owner/name"]) == 0
    assert [n for n, _ in hub.calls] == ["create_repo", "upload_folder"] and hub.calls[0][1]["private"] is False
    (checkpoint / "model.safetensors").write_bytes(b"broken")
    assert push_mod.main(["--model", str(checkpoint), "--repo-id", "owner/name"]) == 1
    assert "error" in capsys.readouterr().err


def test_model_card_attributions(tmp_path: Path) -> None:
    from atr_demo.config import BackboneConfig, ModelConfig

    config = ModelConfig(audio=BackboneConfig(kind="aisfx"),
                         text=BackboneConfig(kind="hf_text", name="sentence-transformers/all-MiniLM-L6-v2"))
    config.save(tmp_path / "config.json")
    card = render_model_card(tmp_path)
    assert "Ma & Lerch" in card and "CC BY 4.0" in card and "Apache-2.0" in card and "ISMIR 2022" in card
    assert yaml.safe_load(card.split("---")[1])["license"] == "cc-by-4.0"


def test_pushed_folder_loads_from_hub_cache(checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    offline_hub_cache(
        monkeypatch, tmp_path / "hub", "owner/name", checkpoint, ("config.json", "model.safetensors"), COMMIT
    )
    loaded = load_model("owner/name")
    original = create_model(tiny_config(), seed=3)
    assert all(torch.equal(v, original.checkpoint_state_dict()[k]) for k, v in loaded.checkpoint_state_dict().items())
    assert loaded.embed_texts(["a dog barks"]).shape == (1, 16)


def test_model_card_names_the_loss_and_shows_leakage(tmp_path: Path) -> None:
    from atr_demo.model import tiny_config

    config = tiny_config()
    config.loss = "cacl_mltm"
    config.save(tmp_path / "config.json")
    leak = {"seen_classes": {"dog": ["dog"]},
            "zeroshot": {"cosine": {
                g: {"top1": 0.5, "top5": 1.0, "n": 2, "n_classes": 1} for g in ("seen", "unseen", "all")
            }}}
    evaluation = {"data": ["d"], "split": "test", "n_clips": 2, "n_captions": 2, "modality_gap": 0.1, "modes": {},
                  "leakage": leak}
    card = render_model_card(tmp_path, evaluation)
    assert "**cacl_mltm** (CACL, English co-anchor" in card and "m-LTM optimal-transport term" in card
    assert "Zero-shot leakage" in card and "| cosine | 0.500 | 1.000 | 0.500 | 1.000 | 2 | 2 |" in card
