"""Experiment suites on the tiny model: aggregation, resumability, the LOPO package filter, tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from atr_demo.errors import ConfigError
from training import experiments as exp
from training.analysis.structure import chance_knn_overlap
from training.config import TrainConfig
from training.datasets import filter_packages, load_dataset
from training.prepare import prepare_data

from tests.helpers import write_tone

PACKAGES = ("pkgA", "pkgB", "pkgC")
WORDS = ["dog barks", "rain falls", "bell rings", "engine runs", "bird sings", "wind blows", "car horn",
         "clock ticks", "water drips", "fire crackles", "cow moos", "train passes"]
ESC = {"dog barks": "dog", "rain falls": "rain", "cow moos": "cow", "train passes": "train", "engine runs": "engine"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """36 short clips in 3 packages (12 each: 8 train, 2 validation, 2 test), some ESC-50 labelled."""
    root = tmp_path_factory.mktemp("corpus")
    rows = []
    for p, package in enumerate(PACKAGES):
        for i, words in enumerate(WORDS):
            n = p * len(WORDS) + i
            split = "train" if i < 8 else "validation" if i < 10 else "test"
            write_tone(root / "audio" / f"{n}.wav", freq=120 + 37 * n, seconds=0.3 + 0.02 * i, noise=0.05, seed=n)
            rows.append({"clip_id": f"{package}-{i}", "audio": f"audio/{n}.wav", "package": package,
                         "captions": [f"a {words} in {package}", f"the {words}"], "split": split,
                         "group": f"{package}:g{i}", "esc50": ESC.get(words)})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _base(corpus: Path, tmp_path: Path, **kw: Any) -> dict[str, Any]:
    base = dict(data=[str(corpus)], model="tiny", loss="mltm", eps=0.1, batch_size=8, epochs=1, lr=3e-3,
                device="cpu", features_cache=str(tmp_path / "features"), mixtures=12, progress=False)
    base.update(kw)
    return base


def test_mean_std_and_aggregate() -> None:
    assert exp.mean_std([0.1, 0.2, 0.3]) == pytest.approx((0.2, 0.1))  # sample std, ddof=1
    assert exp.mean_std([0.5]) == (0.5, 0.0)
    records = [{"setting": "s", "label": "S", "group": "", "seed": k, "metrics": {"cosine/t2a.R@1": v, "gap": 1.0},
                "val_score": v / 2, "train_seconds": 1.0} for k, v in enumerate([0.2, 0.4, 0.9])]
    agg = exp.aggregate(records)["s"]
    assert agg["n_seeds"] == 3 and agg["seeds"] == [0, 1, 2]
    mean, std = agg["metrics"]["cosine/t2a.R@1"]
    assert mean == pytest.approx(0.5) and std == pytest.approx(0.3605551, rel=1e-5)
    assert agg["metrics"]["gap"] == [1.0, 0.0] and agg["val_score"][0] == pytest.approx(0.25)
    assert exp.fmt(agg["metrics"]["cosine/t2a.R@1"]) == "0.500 ± 0.361"


def test_choose_on_validation_picks_best_mass_per_group() -> None:
    agg = {
        "a": {"group": "20 %", "family": "partial", "val_score": [0.30, 0.0]},
        "b": {"group": "20 %", "family": "partial", "val_score": [0.35, 0.0]},
        "c": {"group": "40 %", "family": "partial", "val_score": [0.20, 0.0]},
        "d": {"group": "40 %", "family": "partial", "val_score": [0.10, 0.0]},
        "e": {"group": "40 %", "family": None, "val_score": [0.90, 0.0]},
    }
    assert exp.choose_on_validation(agg) == {"20 %|partial": "b", "40 %|partial": "c"}


def test_lopo_filter_keeps_held_out_package_out_of_training(corpus: Path, tmp_path: Path) -> None:
    clips = load_dataset(corpus)
    assert {c.package for c in clips} == set(PACKAGES)
    with pytest.raises(ConfigError, match="pkgZ"):
        filter_packages(clips, exclude=["pkgZ"])
    full = prepare_data(TrainConfig.from_dict(_base(corpus, tmp_path)))
    held = prepare_data(TrainConfig.from_dict(_base(corpus, tmp_path, exclude_packages=["pkgB"])))
    for part in (held.train, held.validation, held.test):
        assert part and all(c.package != "pkgB" for c in part)
    assert len(held.train) == 16 and len(full.train) == 24
    # the mixture pool is the full run's pool minus mixtures with a pkgB source (cached features stay valid)
    assert held.mixture_pool and len(held.mixture_pool) < len(full.mixture_pool)
    assert {c.clip_id for c in held.mixture_pool} < {c.clip_id for c in full.mixture_pool}
    assert all(s.package != "pkgB" for m in held.mixture_pool for s in m.mix_of)
    # another seed keeps the same pool (mixture_seed is separate)
    other = prepare_data(TrainConfig.from_dict(_base(corpus, tmp_path, seed=5)))
    assert [c.clip_id for c in other.mixture_pool] == [c.clip_id for c in full.mixture_pool]
    only = prepare_data(TrainConfig.from_dict(_base(corpus, tmp_path, only_packages=["pkgC"])))
    assert {c.package for c in only.train} == {"pkgC"}


def test_noise_counts_mixtures_as_training_pairs(corpus: Path, tmp_path: Path) -> None:
    data = prepare_data(TrainConfig.from_dict(_base(corpus, tmp_path, noise_fraction=0.25)))
    assert len(data.noisy) == round(0.25 * (len(data.train) + len(data.mixture_pool)))


def test_lopo_suite_runs_aggregates_resumes_and_renders(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, runs = tmp_path / "results", tmp_path / "runs"
    kwargs = dict(suite="lopo", base=_base(corpus, tmp_path), seeds=[0, 1], out_dir=out, runs_dir=runs,
                  command="python -m training experiments --suite lopo", only=["mltm-euclidean"], packages=["pkgA", "pkgB"])
    payload = exp.run_suite(**kwargs)
    assert len(payload["runs"]) == 4
    for name in ("pkgA-mltm-euclidean", "pkgB-mltm-euclidean"):
        record = json.loads((runs / "lopo" / name / "seed0" / "result.json").read_text())
        held = record["eval_packages"][0]
        assert record["config"]["exclude_packages"] == [held]
        assert record["result"]["n_clips"] == 12  # every clip of the held-out package, all splits
        assert record["result"]["modes"]["cosine"]["zeroshot"]["n"] == 5
        assert set(record["result"]["modes"]) == {"cosine", "transport"}
    agg = payload["aggregates"]["pkgA-mltm-euclidean"]
    vals = [r["metrics"]["cosine/t2a.R@5"] for r in payload["runs"] if r["setting"] == "pkgA-mltm-euclidean"]
    assert agg["metrics"]["cosine/t2a.R@5"] == pytest.approx(list(exp.mean_std(vals)))
    summary = payload["summary"]["m-LTM (Euclidean)"]["metrics"]["cosine/zs.top1"]
    per_seed = [sum(r["metrics"]["cosine/zs.top1"] for r in payload["runs"] if r["seed"] == k) / 2 for k in (0, 1)]
    assert summary == pytest.approx(list(exp.mean_std(per_seed)))
    md = (out / "lopo.md").read_text()
    assert "python -m training experiments --suite lopo" in md and "| pkgB | m-LTM (Euclidean) | 12 | 5 |" in md
    assert json.loads((out / "lopo.json").read_text())["suite"] == "lopo"
    assert not (runs / "lopo" / "pkgA-mltm-euclidean" / "seed0" / "train" / "last").exists()

    def boom(*a: Any, **k: Any) -> None:
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(exp, "train", boom)
    again = exp.run_suite(**kwargs)
    assert again["aggregates"] == payload["aggregates"] and again["missing"] == []
    # --collect trains nothing and lists the runs that are not finished
    partial = exp.run_suite(**{**kwargs, "packages": ["pkgA", "pkgB", "pkgC"], "collect": True})
    assert partial["missing"] == ["pkgC-mltm-euclidean/seed0", "pkgC-mltm-euclidean/seed1"]
    assert set(partial["aggregates"]) == {"pkgA-mltm-euclidean", "pkgB-mltm-euclidean"}
    assert "**Incomplete:** 2 run(s)" in (out / "lopo.md").read_text()
    # a changed config is not skipped
    with pytest.raises(AssertionError, match="trained again"):
        exp.run_suite(**{**kwargs, "base": _base(corpus, tmp_path, lr=1e-2)})


def test_main_suite_table_and_cli(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = tmp_path / "base.json"
    base.write_text(json.dumps(_base(corpus, tmp_path)))
    argv = ["--suite", "main", "--base", str(base), "--seeds", "0", "--out", str(tmp_path / "res"),
            "--runs", str(tmp_path / "runs"), "--only", "infonce", "triplet", "--set", "epochs=1"]
    assert exp.main(argv) == 0
    printed = capsys.readouterr().out
    md = (tmp_path / "res" / "main.md").read_text()
    assert printed == md
    assert "| InfoNCE | cosine |" in md and "| triplet (VSE++) | transport |" in md and "m-LTM" not in md
    assert "--set epochs=1" in md
    payload = json.loads((tmp_path / "res" / "main.json").read_text())
    assert {r["setting"] for r in payload["runs"]} == {"infonce", "triplet"}
    assert all(0.0 <= r["metrics"]["cosine/t2a.R@1"] <= 1.0 for r in payload["runs"])
    assert exp.main(["--suite", "main", "--base", str(base), "--only", "nothing", "--out", str(tmp_path / "x")]) == 1


def test_noise_table_shows_the_mass_chosen_on_validation() -> None:
    def agg(label: str, group: str, val: float, family: str | None = None, seeds: list[int] | None = None) -> dict[str, Any]:
        seeds = seeds or [0, 1]
        return {"label": label, "group": group, "family": family, "n_seeds": len(seeds), "seeds": seeds,
                "metrics": {"cosine/t2a.R@1": [0.1, 0.01]}, "val_score": [val, 0.0], "train_seconds": [1.0, 0.0]}

    aggregates = {"m": agg("m-LTM", "20 %", 0.2), "p9": agg("m-LTM partial (s=0.9)", "20 %", 0.25, "partial"),
                  "p6": agg("m-LTM partial (s=0.6)", "20 %", 0.30, "partial", seeds=[0])}
    payload = {"command": "cmd", "seeds": [0, 1], "eval_note": "", "aggregates": aggregates,
               "chosen": exp.choose_on_validation(aggregates)}
    md = exp.render("noise", payload)
    main_rows = md.split("Partial-OT")[0]
    assert "m-LTM partial (s=0.6) — chosen on val (seeds [0])" in main_rows and "s=0.9" not in main_rows
    assert "| 20 % | m-LTM partial (s=0.9) | 0.250 ± 0.000 | [0, 1] |  |" in md


def test_exclude_classes_drops_every_clip_that_names_them(corpus: Path, tmp_path: Path) -> None:
    from training.analysis.leakage import classes_in_captions
    from training.datasets import drop_classes

    clips = load_dataset(corpus)
    kept = drop_classes(clips, ["dog", "engine"])
    assert kept and all("dog" not in " ".join(c.captions) and "engine" not in " ".join(c.captions) for c in kept)
    assert all(c.esc50 not in ("dog", "engine") for c in kept)
    assert len(kept) == len(clips) - 6  # "dog barks" and "engine runs" in each of 3 packages
    data = prepare_data(TrainConfig.from_dict(_base(corpus, tmp_path, exclude_classes=["dog", "engine"])))
    captions = [t for c in data.train + data.mixture_pool + data.validation for t in c.captions]
    assert data.mixture_pool and not {"dog", "engine"} & set(classes_in_captions(captions))
    # the test split is untouched, even a clip of a held-out class
    held = prepare_data(TrainConfig.from_dict(_base(corpus, tmp_path, exclude_classes=["cow"])))
    assert len(held.test) == 6 and sum(c.esc50 == "cow" for c in held.test) == 3
    with pytest.raises(ConfigError, match="not ESC-50 classes: unicorn"):
        TrainConfig.from_dict(_base(corpus, tmp_path, exclude_classes=["unicorn"]))


def test_analysis_suite_reports_structure_leakage_and_probe(corpus: Path, tmp_path: Path) -> None:
    payload = exp.run_suite("analysis", _base(corpus, tmp_path), [0, 1], tmp_path / "res", tmp_path / "runs",
                            command="python -m training experiments --suite analysis",
                            only=["softlabel0.1", "mltm-euclidean"])
    names = {r["setting"] for r in payload["runs"]}
    assert names == {"softlabel0.1", "mltm-euclidean", "mltm-euclidean-holdA", "mltm-euclidean-holdB"}
    by = {(r["setting"], r["seed"]): r["metrics"] for r in payload["runs"]}
    m = by[("softlabel0.1", 0)]
    assert 0.0 <= m["structure/knn.cosine.5"] <= 1.0 and 0.0 <= m["structure/cka"] <= 1.0
    assert m["structure/chance.5"] == pytest.approx(chance_knn_overlap(6, 5))
    # test split: cow and train clips; neither is named in the training captions (cow moos / train
    # passes are test-only words here); dog and rain are seen
    assert m["leak/cosine/unseen.n"] == 6 and m["leak/cosine/seen.n"] == 0
    assert m["probe/train_clips"] > 0 and 0.0 <= m["probe/all.top1"] <= 1.0
    record = json.loads((tmp_path / "runs" / "analysis" / "mltm-euclidean-holdA" / "seed0" / "result.json").read_text())
    assert "dog" in record["result"]["seen_classes"] or record["config"]["exclude_classes"]
    assert "dog" not in record["result"]["seen_classes"] and "engine" not in record["result"]["seen_classes"]
    plain = json.loads((tmp_path / "runs" / "analysis" / "mltm-euclidean" / "seed0" / "result.json").read_text())
    assert {"dog", "rain", "engine"} <= set(plain["result"]["seen_classes"])
    assert [c["y"] for c in payload["correlations"]][:4] == ["T→A mAP@10", "A→T mAP@10", "ZS top-1", "ZS top-5"]
    assert all(c["n"] == 4 for c in payload["correlations"])  # hold-out runs are left out
    assert all(c["n"] == 4 for c in payload["correlations_without_triplet"])  # no triplet run in this test
    assert "ρ without triplet" in (tmp_path / "res" / "analysis.md").read_text()
    md = (tmp_path / "res" / "analysis.md").read_text()
    for part in ("### Structure of the joint space", "Spearman ρ", "### Zero-shot leakage", "linear probe",
                 "| soft-label contrastive (τ_q=0.1) | cosine |", "m-LTM (Euclidean), ESC-50 half A held out"):
        assert part in md
