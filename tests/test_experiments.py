"""Experiment suites on the tiny model: aggregation, resumability, the LOPO package filter, tables.

The suites are trained once per module (fixtures ``lopo``, ``analysis``, ``main_cli``) and several
tests read the same runs; every fixture shares one feature cache. The tensors are tiny, so the
module runs torch on one CPU thread (on a busy machine, thread hand-offs cost more than the maths).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from atr_demo.errors import ConfigError

from tests.helpers import write_tone
from training import experiments as exp
from training.analysis.structure import chance_knn_overlap
from training.config import TrainConfig
from training.datasets import filter_packages, load_dataset
from training.experiments import metrics as mk
from training.experiments import runs as exp_runs
from training.prepare import prepare_data

PACKAGES = ("pkgA", "pkgB", "pkgC")
WORDS = ["dog barks", "rain falls", "bell rings", "engine runs", "bird sings", "wind blows", "car horn",
         "clock ticks", "water drips", "fire crackles", "cow moos", "train passes"]
ESC = {"dog barks": "dog", "rain falls": "rain", "cow moos": "cow", "train passes": "train", "engine runs": "engine"}
RESULTS = Path(__file__).resolve().parents[1] / "results"


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One feature cache for every run of the module (content-addressed, so sharing is safe)."""
    return tmp_path_factory.mktemp("features")


def _base(corpus: Path, features: Path, **kw: Any) -> dict[str, Any]:
    base = dict(data=[str(corpus)], model="tiny", loss="mltm", eps=0.1, batch_size=8, epochs=1, lr=3e-3,
                device="cpu", features_cache=str(features), mixtures=12, progress=False)
    base.update(kw)
    return base


@dataclass
class SuiteRun:
    """A suite trained once for the module: its ``run_suite`` arguments and payload."""

    kwargs: dict[str, Any]
    payload: dict[str, Any]
    out: Path
    runs: Path


@pytest.fixture(scope="module")
def lopo(corpus: Path, features: Path, tmp_path_factory: pytest.TempPathFactory) -> SuiteRun:
    """lopo, m-LTM Euclidean, packages pkgA and pkgB held out, seeds 0 and 1 (4 runs)."""
    root = tmp_path_factory.mktemp("lopo")
    kwargs = dict(suite="lopo", base=_base(corpus, features), seeds=[0, 1], out_dir=root / "results",
                  runs_dir=root / "runs", command="python -m training experiments --suite lopo",
                  only=["mltm-euclidean"], packages=["pkgA", "pkgB"])
    return SuiteRun(kwargs, exp.run_suite(**kwargs), root / "results", root / "runs")


@pytest.fixture(scope="module")
def analysis(corpus: Path, features: Path, tmp_path_factory: pytest.TempPathFactory) -> SuiteRun:
    """analysis, soft-label (τ_q=0.1) and m-LTM Euclidean with its two class hold-outs, seeds 0 and 1 (8 runs)."""
    root = tmp_path_factory.mktemp("analysis")
    kwargs = dict(suite="analysis", base=_base(corpus, features), seeds=[0, 1], out_dir=root / "res",
                  runs_dir=root / "runs", command="python -m training experiments --suite analysis",
                  only=["softlabel0.1", "mltm-euclidean"])
    return SuiteRun(kwargs, exp.run_suite(**kwargs), root / "res", root / "runs")


@pytest.fixture(scope="module")
def main_cli(corpus: Path, features: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path, str]:
    """The main suite through the CLI (InfoNCE and triplet, seed 0): (argv, base file, printed output)."""
    root = tmp_path_factory.mktemp("main")
    base = root / "base.json"
    base.write_text(json.dumps(_base(corpus, features)))
    argv = ["--suite", "main", "--base", str(base), "--seeds", "0", "--out", str(root / "res"),
            "--runs", str(root / "runs"), "--only", "infonce", "triplet", "--set", "epochs=1"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert exp.main(argv) == 0
    return argv, base, printed.getvalue()


# -- aggregation and tables (no training) ----------------------------------------------------

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


def test_noise_table_shows_the_mass_chosen_on_validation() -> None:
    def agg(label: str, group: str, val: float, family: str | None = None,
            seeds: list[int] | None = None) -> dict[str, Any]:
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


def test_flatten_result_writes_the_metric_keys_the_tables_read() -> None:
    result = {
        "modality_gap": 0.5, "n_clips": 6,
        "modes": {"cosine": {"text_to_audio": {"R@1": 0.25, "per_query": [1, 2]}, "zeroshot": {"top1": 0.5, "n": 4}}},
        "structure": {"n": 6, "cka": 0.3, "chance": {"5": 0.4}, "knn": {"cosine": {"10": 0.6}}},
        "leakage": {"cosine": {"seen": {"top1": 0.7, "n": 2}}},
        "probe": {"unseen": {"top5": 0.8}, "train_clips": 12},
        "multilingual": {"cosine": {"languages": {"fr": {"text_to_audio": {"mAP@10": 0.1}}},
                                    "mean": {"audio_to_text": {"R@1": 0.2}}, "mrv": {"text_to_audio": 3.0}}},
    }
    flat = exp.flatten_result(result)
    # the stored format (results/*.json): these literal keys must not change
    assert flat == {"gap": 0.5, "n_clips": 6.0, "cosine/t2a.R@1": 0.25, "cosine/zs.top1": 0.5, "cosine/zs.n": 4.0,
                    "structure/cka": 0.3, "structure/chance.5": 0.4, "structure/knn.cosine.10": 0.6,
                    "leak/cosine/seen.top1": 0.7, "leak/cosine/seen.n": 2.0, "probe/unseen.top5": 0.8,
                    "probe/train_clips": 12.0, "ml/cosine/fr/t2a.mAP@10": 0.1, "ml/cosine/mean/a2t.R@1": 0.2,
                    "ml/cosine/mrv.t2a": 3.0}
    # ... and the key functions the tables use name the same entries
    assert {mk.scored("cosine", mk.metric(mk.T2A, mk.R1)), mk.scored("cosine", mk.metric(mk.ZS, mk.TOP1)), mk.GAP,
            mk.CKA, mk.chance(5), mk.knn("cosine", 10), mk.leak("cosine", mk.SEEN, mk.TOP1),
            mk.probe(mk.metric(mk.UNSEEN, mk.TOP5)), mk.ml("cosine", "fr", mk.metric(mk.T2A, mk.MAP10)),
            mk.ml("cosine", mk.ML_MEAN, mk.metric(mk.A2T, mk.R1)), mk.mrv("cosine", mk.T2A)} <= set(flat)


@pytest.mark.parametrize("suite", sorted(exp.SUITES))
def test_stored_results_render_to_their_markdown(suite: str) -> None:
    """Every suite's table renders byte-identically from its stored JSON (results/<suite>.json)."""
    payload = json.loads((RESULTS / f"{suite}.json").read_text(encoding="utf-8"))
    assert payload["suite"] == suite and payload["eval_note"] == exp.get_suite(suite).eval_note
    assert exp.render(suite, payload) == (RESULTS / f"{suite}.md").read_text(encoding="utf-8")


def test_render_option_rewrites_the_markdown_from_the_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(RESULTS / "eps.json", tmp_path / "eps.json")
    assert exp.main(["--suite", "eps", "--render", "--out", str(tmp_path)]) == 0
    stored = (RESULTS / "eps.md").read_text(encoding="utf-8")
    assert (tmp_path / "eps.md").read_text(encoding="utf-8") == stored and capsys.readouterr().out == stored
    assert exp.main(["--suite", "tune", "--render", "--out", str(tmp_path)]) == 1  # no tune.json there


def test_only_held_out_suites_take_packages() -> None:
    for name, suite in exp.SUITES.items():
        if name in ("lopo", "levers", "hubness", "finetune", "finetune2"):
            assert {s.group for s in suite.rows(["pkgA", "pkgB"])} == {"pkgA", "pkgB"}
            assert {s.group for s in suite.rows()} == set(exp.LOPO_PACKAGES)
            assert all(s.eval_packages == [s.group] and s.overrides["exclude_packages"] == [s.group]
                       for s in suite.rows(["pkgA"]))
        else:
            assert suite.rows()
            with pytest.raises(ConfigError, match=f"suite {name} has no package axis"):
                suite.rows(["pkgA"])
    with pytest.raises(ConfigError, match="unknown suite 'nope'"):
        exp.render("nope", {})


def test_packages_with_a_suite_without_package_axis_is_a_cli_error(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"data": [str(tmp_path)], "model": "tiny"}))
    assert exp.main(["--suite", "main", "--base", str(base), "--packages", "pkgA", "--out", str(tmp_path / "x")]) == 1
    assert "no package axis; --packages applies to finetune, finetune2, hubness, levers, lopo only" in caplog.text
    assert not (tmp_path / "x").exists()


# -- data preparation for the suites ---------------------------------------------------------

def test_lopo_filter_keeps_held_out_package_out_of_training(corpus: Path, features: Path) -> None:
    clips = load_dataset(corpus)
    assert {c.package for c in clips} == set(PACKAGES)
    with pytest.raises(ConfigError, match="pkgZ"):
        filter_packages(clips, exclude=["pkgZ"])
    full = prepare_data(TrainConfig.from_dict(_base(corpus, features)))
    held = prepare_data(TrainConfig.from_dict(_base(corpus, features, exclude_packages=["pkgB"])))
    for part in (held.train, held.validation, held.test):
        assert part and all(c.package != "pkgB" for c in part)
    assert len(held.train) == 16 and len(full.train) == 24
    # the mixture pool is the full run's pool minus mixtures with a pkgB source (cached features stay valid)
    assert held.mixture_pool and len(held.mixture_pool) < len(full.mixture_pool)
    assert {c.clip_id for c in held.mixture_pool} < {c.clip_id for c in full.mixture_pool}
    assert all(s.package != "pkgB" for m in held.mixture_pool for s in m.mix_of)
    # another seed keeps the same pool (mixture_seed is separate)
    other = prepare_data(TrainConfig.from_dict(_base(corpus, features, seed=5)))
    assert [c.clip_id for c in other.mixture_pool] == [c.clip_id for c in full.mixture_pool]
    only = prepare_data(TrainConfig.from_dict(_base(corpus, features, only_packages=["pkgC"])))
    assert {c.package for c in only.train} == {"pkgC"}


def test_noise_counts_mixtures_as_training_pairs(corpus: Path, features: Path) -> None:
    data = prepare_data(TrainConfig.from_dict(_base(corpus, features, noise_fraction=0.25)))
    assert len(data.noisy) == round(0.25 * (len(data.train) + len(data.mixture_pool)))


def test_exclude_classes_drops_every_clip_that_names_them(corpus: Path, features: Path) -> None:
    from training.analysis.leakage import classes_in_captions
    from training.datasets import drop_classes

    clips = load_dataset(corpus)
    kept = drop_classes(clips, ["dog", "engine"])
    assert kept and all("dog" not in " ".join(c.captions) and "engine" not in " ".join(c.captions) for c in kept)
    assert all(c.esc50 not in ("dog", "engine") for c in kept)
    assert len(kept) == len(clips) - 6  # "dog barks" and "engine runs" in each of 3 packages
    data = prepare_data(TrainConfig.from_dict(_base(corpus, features, exclude_classes=["dog", "engine"])))
    captions = [t for c in data.train + data.mixture_pool + data.validation for t in c.captions]
    assert data.mixture_pool and not {"dog", "engine"} & set(classes_in_captions(captions))
    # the test split is untouched, even a clip of a held-out class
    held = prepare_data(TrainConfig.from_dict(_base(corpus, features, exclude_classes=["cow"])))
    assert len(held.test) == 6 and sum(c.esc50 == "cow" for c in held.test) == 3
    with pytest.raises(ConfigError, match="not ESC-50 classes: unicorn"):
        TrainConfig.from_dict(_base(corpus, features, exclude_classes=["unicorn"]))


# -- lopo (shared runs) ----------------------------------------------------------------------

def test_lopo_runs_train_without_and_evaluate_on_all_of_the_held_out_package(lopo: SuiteRun) -> None:
    assert len(lopo.payload["runs"]) == 4
    for name in ("pkgA-mltm-euclidean", "pkgB-mltm-euclidean"):
        record = json.loads((lopo.runs / "lopo" / name / "seed0" / "result.json").read_text())
        held = record["eval_packages"][0]
        assert record["config"]["exclude_packages"] == [held]
        assert record["result"]["n_clips"] == 12  # every clip of the held-out package, all splits
        assert record["result"]["modes"]["cosine"]["zeroshot"]["n"] == 5
        assert set(record["result"]["modes"]) == {"cosine", "transport"}
        assert record["metrics"] == exp.flatten_result(record["result"])
    assert not (lopo.runs / "lopo" / "pkgA-mltm-euclidean" / "seed0" / "train" / "last").exists()


def test_lopo_aggregates_over_seeds_and_summarises_over_packages(lopo: SuiteRun) -> None:
    runs = lopo.payload["runs"]
    agg = lopo.payload["aggregates"]["pkgA-mltm-euclidean"]
    vals = [r["metrics"]["cosine/t2a.R@5"] for r in runs if r["setting"] == "pkgA-mltm-euclidean"]
    assert agg["metrics"]["cosine/t2a.R@5"] == pytest.approx(list(exp.mean_std(vals)))
    summary = lopo.payload["summary"]["m-LTM (Euclidean)"]
    per_seed = [sum(r["metrics"]["cosine/zs.top1"] for r in runs if r["seed"] == k) / 2 for k in (0, 1)]
    assert summary["metrics"]["cosine/zs.top1"] == pytest.approx(list(exp.mean_std(per_seed)))
    assert summary["packages"] == ["pkgA", "pkgB"] and summary["n_seeds"] == 2


def test_lopo_writes_its_json_and_tables(lopo: SuiteRun) -> None:
    md = (lopo.out / "lopo.md").read_text()
    assert "python -m training experiments --suite lopo" in md and "| pkgB | m-LTM (Euclidean) | 12 | 5 |" in md
    assert "Mean over held-out packages (transport scoring):" in md
    stored = json.loads((lopo.out / "lopo.json").read_text())
    assert stored["suite"] == "lopo" and stored["eval_note"] == exp.get_suite("lopo").eval_note
    assert exp.render("lopo", stored) == md


def test_finished_runs_are_reused_and_collect_lists_the_missing(lopo: SuiteRun, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: Any, **k: Any) -> None:
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(exp_runs, "train", boom)
    again = exp.run_suite(**{**lopo.kwargs, "out_dir": tmp_path / "again"})
    assert again["aggregates"] == lopo.payload["aggregates"] and again["missing"] == []
    # --collect trains nothing and lists the runs that are not finished
    partial = exp.run_suite(**{**lopo.kwargs, "out_dir": tmp_path / "partial", "packages": ["pkgA", "pkgB", "pkgC"],
                               "collect": True})
    assert partial["missing"] == ["pkgC-mltm-euclidean/seed0", "pkgC-mltm-euclidean/seed1"]
    assert set(partial["aggregates"]) == {"pkgA-mltm-euclidean", "pkgB-mltm-euclidean"}
    assert "**Incomplete:** 2 run(s)" in (tmp_path / "partial" / "lopo.md").read_text()
    # a changed config is not skipped
    with pytest.raises(AssertionError, match="trained again"):
        exp.run_suite(**{**lopo.kwargs, "out_dir": tmp_path / "changed", "base": {**lopo.kwargs["base"], "lr": 1e-2}})


# -- main through the CLI (shared runs) ------------------------------------------------------

def test_main_suite_cli_prints_and_writes_the_table(main_cli: tuple[list[str], Path, str]) -> None:
    argv, _, printed = main_cli
    out = Path(argv[argv.index("--out") + 1])
    md = (out / "main.md").read_text()
    assert printed == md
    assert "| InfoNCE | cosine |" in md and "| triplet (VSE++) | transport |" in md and "m-LTM" not in md
    assert "--set epochs=1" in md
    payload = json.loads((out / "main.json").read_text())
    assert {r["setting"] for r in payload["runs"]} == {"infonce", "triplet"}
    assert all(0.0 <= r["metrics"]["cosine/t2a.R@1"] <= 1.0 for r in payload["runs"])


def test_main_suite_cli_reports_an_only_that_matches_nothing(main_cli: tuple[list[str], Path, str],
                                                              tmp_path: Path) -> None:
    _, base, _ = main_cli
    assert exp.main(["--suite", "main", "--base", str(base), "--only", "nothing", "--out", str(tmp_path / "x")]) == 1


# -- analysis (shared runs) ------------------------------------------------------------------

def test_analysis_runs_report_structure_leakage_and_probe(analysis: SuiteRun) -> None:
    names = {r["setting"] for r in analysis.payload["runs"]}
    assert names == {"softlabel0.1", "mltm-euclidean", "mltm-euclidean-holdA", "mltm-euclidean-holdB"}
    by = {(r["setting"], r["seed"]): r["metrics"] for r in analysis.payload["runs"]}
    m = by[("softlabel0.1", 0)]
    assert 0.0 <= m["structure/knn.cosine.5"] <= 1.0 and 0.0 <= m["structure/cka"] <= 1.0
    assert m["structure/chance.5"] == pytest.approx(chance_knn_overlap(6, 5))
    # test split: cow and train clips; neither is named in the training captions (cow moos / train
    # passes are test-only words here); dog and rain are seen
    assert m["leak/cosine/unseen.n"] == 6 and m["leak/cosine/seen.n"] == 0
    assert m["probe/train_clips"] > 0 and 0.0 <= m["probe/all.top1"] <= 1.0


def test_analysis_hold_outs_remove_their_classes_from_the_training_captions(analysis: SuiteRun) -> None:
    def result(setting: str) -> dict[str, Any]:
        return json.loads((analysis.runs / "analysis" / setting / "seed0" / "result.json").read_text())

    held = result("mltm-euclidean-holdA")
    assert "dog" in held["config"]["exclude_classes"] and "engine" in held["config"]["exclude_classes"]
    assert "dog" not in held["result"]["seen_classes"] and "engine" not in held["result"]["seen_classes"]
    assert {"dog", "rain", "engine"} <= set(result("mltm-euclidean")["result"]["seen_classes"])
    assert analysis.payload["seen_classes"] == result("mltm-euclidean")["result"]["seen_classes"]


def test_analysis_correlations_leave_the_hold_outs_out(analysis: SuiteRun) -> None:
    correlations = analysis.payload["correlations"]
    assert [c["y"] for c in correlations][:4] == ["T→A mAP@10", "A→T mAP@10", "ZS top-1", "ZS top-5"]
    assert {c["x"] for c in correlations} == {"linear CKA"}  # 6 test clips: no k=10 neighbour sets
    assert all(c["n"] == 4 for c in correlations)  # hold-out runs are left out
    assert all(c["n"] == 4 for c in analysis.payload["correlations_without_triplet"])  # no triplet run here


def test_analysis_tables(analysis: SuiteRun) -> None:
    md = (analysis.out / "analysis.md").read_text()
    for part in ("### Structure of the joint space", "Spearman ρ", "ρ without triplet", "### Zero-shot leakage",
                 "linear probe", "| soft-label contrastive (τ_q=0.1) | cosine |",
                 "m-LTM (Euclidean), ESC-50 half A held out"):
        assert part in md
