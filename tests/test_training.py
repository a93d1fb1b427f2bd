"""End-to-end training of the tiny model: train → checkpoint → evaluate → load → CLI; resume;
PSD invariant; config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from atr_demo import cli
from atr_demo.errors import ConfigError
from atr_demo.model import load_model

from tests.helpers import write_tone
from training import evaluate as evaluate_mod
from training import train as train_mod
from training.config import TrainConfig, load_train_config
from training.train import flatten_state, train, unflatten_state

WORDS = ["dog barks", "rain falls", "bell rings", "engine runs", "bird sings", "wind blows", "car horn",
         "clock ticks", "water drips", "fire crackles", "cow moos", "train passes", "siren wails",
         "door knocks", "glass breaks", "frog croaks", "crow caws", "pig grunts"]
ESC = {"dog barks": "dog", "rain falls": "rain", "cow moos": "cow", "siren wails": "siren"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """18 short seeded tone+noise clips: 10 train, 2 validation, 6 test (2 with ESC-50 labels)."""
    root = tmp_path_factory.mktemp("corpus")
    rows = []
    for i, words in enumerate(WORDS):
        split = "train" if i < 10 else "validation" if i < 14 else "test"
        if words in ESC:
            split = "test" if i >= 10 else split
        write_tone(root / "audio" / f"{i}.wav", freq=150 + 90 * i, seconds=0.4 + 0.05 * i, noise=0.05, seed=i)
        rows.append({"clip_id": f"c{i}", "audio": f"audio/{i}.wav", "captions": [f"a {words}", f"the {words} loudly"],
                     "split": split, "group": f"g{i}", "esc50": ESC.get(words), "start_s": 0.0, "duration_s": None})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _config(corpus: Path, out: Path, **kw: object) -> TrainConfig:
    base = dict(data=[str(corpus)], model="tiny", loss="mltm", eps=0.1, batch_size=4, epochs=2, lr=3e-3,
                seed=7, device="cpu", out=str(out), features_cache=str(out.parent / "features"), progress=False)
    base.update(kw)
    return TrainConfig.from_dict(base)


def test_train_evaluate_load_cli(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = train(_config(corpus, tmp_path / "run", metric="mahalanobis", mixtures=4))
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    assert all(set(r) >= {"train_loss", "val", "lr", "seconds"} and r["val"]["t2a_R@1"] >= 0 for r in log)
    for folder in ("best", "last"):
        assert (out / folder / "model.safetensors").is_file() and (out / folder / "train_config.json").is_file()
    assert not list(out.glob(".*tmp*")) and not (out / "last.old").exists()

    model = load_model(str(out / "best"))
    assert model.config.metric == "mahalanobis" and model.config.loss == "mltm"
    m = model.metric.M.detach().double()
    assert torch.allclose(m, m.T, atol=1e-6) and float(torch.linalg.eigvalsh(m).min()) >= model.config.eig_floor - 1e-5
    assert not torch.equal(m, torch.eye(len(m), dtype=m.dtype))  # M was learned

    report = tmp_path / "eval.json"
    assert evaluate_mod.main(["--model", str(out / "best"), "--data", str(corpus), "--out", str(report), "--json"]) == 0
    result = json.loads(report.read_text())
    assert set(result["modes"]) == {"cosine", "metric", "transport"}
    cos = result["modes"]["cosine"]
    assert result["n_clips"] == 6 and result["n_captions"] == 12
    assert 0.0 <= cos["text_to_audio"]["R@1"] <= cos["text_to_audio"]["R@10"] == 1.0  # 6 clips: R@10 is 1
    assert cos["zeroshot"]["n"] == 2 and 0.0 <= cos["zeroshot"]["top1"] <= cos["zeroshot"]["top5"] <= 1.0
    assert result["modality_gap"] > 0
    capsys.readouterr()

    assert evaluate_mod.main(["--model", str(out / "best"), "--data", str(corpus), "--modes", "cosine"]) == 0
    assert "| cosine |" in capsys.readouterr().out

    code = cli.main(["search", "a dog barks", "--gallery", str(corpus / "audio"), "--model", str(out / "best"),
                     "--json", "--k", "3", "--cache-dir", str(tmp_path / "emb")])
    hits = json.loads(capsys.readouterr().out)
    assert code == 0 and hits[0]["query"] == "a dog barks" and len(hits[0]["results"]) == 3


def test_resume_is_bit_exact(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kw = dict(metric="mahalanobis", use_cached_features=False, batching="ids", schedule="cosine", warmup_steps=2)
    full = train(_config(corpus, tmp_path / "full", **kw))

    # interrupted run: epoch 2 is cut by a KeyboardInterrupt during its validation
    calls = {"n": 0}
    real_validate = train_mod.validate

    def flaky_validate(*args: object, **kwargs: object) -> dict[str, float]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(train_mod, "validate", flaky_validate)
    cut = _config(corpus, tmp_path / "cut", **kw)
    with pytest.raises(KeyboardInterrupt):
        train(cut)
    monkeypatch.setattr(train_mod, "validate", real_validate)
    state = json.loads((tmp_path / "cut" / "last" / "trainer_state.json").read_text())
    assert state["epoch"] == 1
    train(cut, resume=True)

    a = load_file(str(full / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "last" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    oa = load_file(str(full / "last" / "optimizer.safetensors"))
    ob = load_file(str(tmp_path / "cut" / "last" / "optimizer.safetensors"))
    assert all(torch.equal(oa[k], ob[k]) for k in oa)
    log = [json.loads(line)["epoch"] for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert log == [1, 2]


def test_resume_rejects_changed_config(corpus: Path, tmp_path: Path) -> None:
    train(_config(corpus, tmp_path / "r", epochs=1, loss="infonce"))
    with pytest.raises(ConfigError, match="lr"):
        train(_config(corpus, tmp_path / "r", epochs=2, loss="infonce", lr=1.0), resume=True)
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        train(_config(corpus, tmp_path / "none"), resume=True)


def test_optimizer_state_round_trip() -> None:
    p = torch.nn.Parameter(torch.randn(3, 2))
    opt = torch.optim.Adam([p], lr=0.1, betas=(0.8, 0.9))
    p.grad = torch.ones_like(p)
    opt.step()
    tensors: dict[str, torch.Tensor] = {}
    data = json.loads(json.dumps(flatten_state(opt.state_dict(), "optim", tensors)))
    restored = unflatten_state(data, tensors)
    fresh = torch.optim.Adam([torch.nn.Parameter(p.detach().clone())], lr=0.5)
    fresh.load_state_dict(restored)
    assert fresh.param_groups[0]["lr"] == 0.1 and tuple(fresh.param_groups[0]["betas"]) == (0.8, 0.9)
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: x\nmodel: tiny\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_train_config(bad)
    with pytest.raises(ConfigError, match="model.embed_dimension"):
        load_train_config(None, ["data=x", "model=tiny", "model.embed_dimension=8"])
    with pytest.raises(ConfigError, match="epochs"):
        load_train_config(None, ["data=x", "epochs=ten"])
    with pytest.raises(ConfigError, match="loss"):
        load_train_config(None, ["data=x", "loss=contrastive"])
    cfg = load_train_config(None, ["data=x", "model=tiny", "model.embed_dim=8", "model.audio.dim=12", "eps=0.03"])
    mc = cfg.run_model_config()
    assert (mc.embed_dim, mc.audio.dim, mc.eps, mc.audio.kind) == (8, 12, 0.03, "tiny_audio")
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"data": ["x"], "model": "tiny", "loss": "mltm_partial", "mass": 0.9}))
    assert load_train_config(good).run_model_config().mass == 0.9


def test_train_cli_bad_config_returns_1(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: x\nbogus: 1\n")
    assert train_mod.main(["--config", str(cfg)]) == 1


def test_evaluate_leakage_report_splits_seen_and_unseen(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = train(_config(corpus, tmp_path / "run", epochs=1))
    argv = ["--model", str(out / "best"), "--data", str(corpus), "--train-data", str(corpus), "--modes", "cosine"]
    assert evaluate_mod.main(argv + ["--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    leak = result["leakage"]
    # training captions name dog and rain; the labelled test clips are cow and siren (never named)
    assert {"dog", "rain"} <= set(leak["seen_classes"]) and not {"cow", "siren"} & set(leak["seen_classes"])
    z = leak["zeroshot"]["cosine"]
    assert z["unseen"]["n"] == 2 and z["seen"]["n"] == 0 and z["all"]["top5"] == z["unseen"]["top5"]
    probe = leak["probe"]
    assert probe["train_clips"] == 2 and probe["train_classes"] == 2
    assert probe["unseen"]["top1"] == 0.0  # a probe cannot name a class it has no training clip of
    assert evaluate_mod.main(argv) == 0
    assert "| linear probe (audio backbone) |" in capsys.readouterr().out
    assert evaluate_mod.main(argv + ["--train-split", "nonsense"]) == 1


@pytest.mark.parametrize(
    "path", sorted(Path(__file__).resolve().parent.parent.glob("configs/*.yaml")), ids=lambda p: p.name
)
def test_shipped_configs_are_valid(path: Path) -> None:
    """Every config in configs/ parses and validates (paths are not checked: they are machine-specific)."""
    config = load_train_config(path)
    assert config.run_model_config().embed_dim > 0 and config.data
