"""Hubness corrections (atr_demo.hubness) on tiny hand-built score matrices."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from atr_demo.errors import ConfigError
from atr_demo.hubness import (
    activation_set,
    centred,
    class_prior,
    csls,
    dynamic_inverted_softmax,
    inverted_softmax,
    k_occurrence,
    prior_corrected,
    skewness,
)

from tests.helpers import write_tone
from training import experiments as exp
from training.experiments import hubness as hub_exp
from training.experiments import runs as exp_runs


def _hub_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Gallery item 0 is a hub: every bank query scores it 0.8, its top-1; items 1-3 are each liked
    less by one bank query. Query 0 belongs with item 1 but scores the hub a little higher (0.80
    vs 0.75); query 1's top-1 is item 2, which no bank query has as its top-1."""
    bank = torch.tensor([[0.8, 0.6, 0.1, 0.1],
                         [0.8, 0.1, 0.6, 0.1],
                         [0.8, 0.1, 0.1, 0.6],
                         [0.8, 0.2, 0.1, 0.1]])
    scores = torch.tensor([[0.80, 0.75, 0.10, 0.10],
                           [0.10, 0.20, 0.95, 0.30]])
    return scores, bank


def test_inverted_softmax_demotes_a_hub_and_matches_the_paper_ratio() -> None:
    scores, bank = _hub_case()
    out = inverted_softmax(scores, bank, beta=20.0)
    assert out.shape == scores.shape
    assert scores[0].argmax() == 0 and out[0].argmax() == 1  # the hub lost query 0 to the right item
    ratio = torch.exp(20.0 * scores.double()) / torch.exp(20.0 * bank.double()).sum(0)
    assert torch.allclose(out.double(), torch.log(ratio), atol=1e-5)
    # an empty bank changes nothing
    assert torch.equal(inverted_softmax(scores, bank[:0]), scores)


def test_dynamic_inverted_softmax_normalises_only_rows_whose_top1_is_active() -> None:
    scores, bank = _hub_case()
    assert activation_set(bank).tolist() == [True, False, False, False]
    assert activation_set(bank, k=2).tolist() == [True, True, True, True]
    out = dynamic_inverted_softmax(scores, bank, beta=20.0)
    # query 0's top-1 (the hub) is active: its row is the inverted softmax, and the hub is demoted
    assert torch.allclose(out[0], inverted_softmax(scores[:1], bank, beta=20.0)[0])
    assert out[0].argmax() == 1
    # query 1's top-1 (item 2) is in no bank query's top-1: its row is kept as is
    assert torch.equal(out[1], scores[1])
    # with k = 2 every item is active, so every row is normalised
    assert torch.allclose(dynamic_inverted_softmax(scores, bank, beta=20.0, k=2), inverted_softmax(scores, bank))
    # no-ops: empty bank, empty queries
    assert torch.equal(dynamic_inverted_softmax(scores, bank[:0]), scores)
    assert dynamic_inverted_softmax(scores[:0], bank).shape == (0, 4)


def test_csls_matches_a_direct_computation() -> None:
    gen = torch.Generator().manual_seed(0)
    scores, bank = torch.rand(5, 7, generator=gen), torch.rand(9, 7, generator=gen)
    k = 3
    out = csls(scores, bank, k=k)
    expected = torch.empty(5, 7)
    for i in range(5):
        r_g = sorted(scores[i].tolist(), reverse=True)[:k]
        for j in range(7):
            r_b = sorted(bank[:, j].tolist(), reverse=True)[:k]
            expected[i, j] = 2 * scores[i, j] - sum(r_g) / k - sum(r_b) / k
    assert torch.allclose(out, expected, atol=1e-6)
    # k larger than the sizes uses everything; the hub of the hand-built case is demoted
    h_scores, h_bank = _hub_case()
    assert csls(h_scores, h_bank, k=2)[0].argmax() == 1
    assert torch.allclose(csls(h_scores, h_bank, k=50), 2 * h_scores - h_scores.mean(1, keepdim=True)
                          - h_bank.mean(0, keepdim=True), atol=1e-6)


def test_csls_with_a_flat_bank_keeps_the_ranking() -> None:
    gen = torch.Generator().manual_seed(1)
    scores = torch.rand(4, 6, generator=gen)
    flat_bank = torch.full((5, 6), 0.3)
    for out in (csls(scores, flat_bank, k=2), centred(scores, flat_bank), csls(scores, flat_bank[:0])):
        assert torch.equal(out.argsort(dim=1), scores.argsort(dim=1))


def test_class_prior_and_its_correction() -> None:
    temperature = 0.1
    # the bank clips all lean to label 0: it gets most of the prior
    bank = torch.tensor([[0.5, 0.3, 0.2], [0.6, 0.2, 0.3], [0.5, 0.45, 0.1]])
    prior = class_prior(bank, temperature)
    assert prior.shape == (3,) and float(prior.sum()) == pytest.approx(1.0)
    assert int(prior.argmax()) == 0
    expected = torch.softmax(bank.double() / temperature, dim=1).mean(0)
    assert torch.allclose(prior, expected)
    scores = torch.tensor([[0.50, 0.48, 0.0]])
    corrected = prior_corrected(scores, prior, temperature)
    assert int(scores.argmax()) == 0 and int(corrected.argmax()) == 1  # the favoured label is divided out
    probs = torch.softmax(corrected.double(), dim=1)
    direct = torch.softmax(scores.double() / temperature, dim=1) / prior
    assert torch.allclose(probs, direct / direct.sum(1, keepdim=True))
    # uniform prior (also an empty bank): no change in ranking
    uniform = class_prior(bank[:0], temperature)
    assert torch.allclose(uniform, torch.full((3,), 1 / 3, dtype=torch.float64))
    assert torch.equal(prior_corrected(scores, uniform, temperature).argsort(), scores.argsort())
    with pytest.raises(ConfigError, match="prior"):
        prior_corrected(scores, prior[:2], temperature)


def test_centred_subtracts_the_bank_mean() -> None:
    scores, bank = _hub_case()
    out = centred(scores, bank)
    assert torch.allclose(out, scores - bank.mean(0))
    assert out[0].argmax() == 1


def test_centring_equals_subtracting_the_mean_bank_query() -> None:
    gen = torch.Generator().manual_seed(3)
    unit = lambda n: torch.nn.functional.normalize(torch.randn(n, 6, generator=gen, dtype=torch.float64), dim=1)  # noqa: E731
    queries, gallery, bank = unit(4), unit(7), unit(30)
    out = centred(queries @ gallery.T, bank @ gallery.T)
    assert torch.allclose(out, (queries - bank.mean(0)) @ gallery.T)


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ConfigError, match="same gallery"):
        inverted_softmax(torch.zeros(2, 3), torch.zeros(4, 5))
    with pytest.raises(ConfigError, match="same gallery"):
        csls(torch.zeros(2, 3), torch.zeros(4))


def test_k_occurrence_and_skewness_measure_hubness() -> None:
    scores, _ = _hub_case()
    assert k_occurrence(scores, k=1).tolist() == [1, 0, 1, 0]
    assert k_occurrence(scores, k=10).tolist() == [2, 2, 2, 2]  # k clipped to the gallery
    hubby = torch.tensor([10, 0, 0, 0, 0, 0])
    assert skewness(hubby) > 1.5
    assert skewness(torch.tensor([1, 2, 3])) == pytest.approx(0.0)
    assert math.isnan(skewness(torch.tensor([4, 4, 4])))
    # a constructed hub: queries and bank share a common direction c, and gallery item 0 is c
    gen = torch.Generator().manual_seed(2)
    c = torch.nn.functional.normalize(torch.randn(8, generator=gen), dim=0)
    queries = torch.nn.functional.normalize(torch.randn(40, 8, generator=gen) + 2.0 * c, dim=1)
    bank = torch.nn.functional.normalize(torch.randn(60, 8, generator=gen) + 2.0 * c, dim=1)
    gallery = torch.nn.functional.normalize(torch.randn(20, 8, generator=gen), dim=1)
    gallery[0] = c
    raw = queries @ gallery.T
    bank_scores = bank @ gallery.T
    hub_raw = int(k_occurrence(raw, 1)[0])
    assert hub_raw >= 15  # of 40 queries; 2 expected without a hub
    for corrected in (inverted_softmax(raw, bank_scores), dynamic_inverted_softmax(raw, bank_scores),
                      csls(raw, bank_scores), centred(raw, bank_scores)):
        assert int(k_occurrence(corrected, 1)[0]) < hub_raw / 2
        assert skewness(k_occurrence(corrected, 1)) < skewness(k_occurrence(raw, 1))


# -- the hubness suite on the tiny model -----------------------------------------------------

WORDS = ["dog barks", "rain falls", "bell rings", "engine runs", "bird sings", "wind blows", "car horn",
         "clock ticks", "water drips", "fire crackles", "cow moos", "train passes"]
ESC = {"dog barks": "dog", "rain falls": "rain", "cow moos": "cow", "train passes": "train", "engine runs": "engine"}


@pytest.fixture(scope="module")
def hubness_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """The hubness suite on 3 tiny packages, pkgA and pkgB held out, seeds 0 and 1 (4 runs)."""
    root = tmp_path_factory.mktemp("hubness")
    rows = []
    for p, package in enumerate(("pkgA", "pkgB", "pkgC")):
        for i, words in enumerate(WORDS):
            n = p * len(WORDS) + i
            split = "train" if i < 8 else "validation" if i < 10 else "test"
            write_tone(root / "corpus" / "audio" / f"{n}.wav", freq=120 + 37 * n, seconds=0.3, noise=0.05, seed=n)
            rows.append({"clip_id": f"{package}-{i}", "audio": f"audio/{n}.wav", "package": package,
                         "captions": [f"a {words} in {package}", f"the {words}"], "split": split,
                         "group": f"{package}:g{i}", "esc50": ESC.get(words)})
    (root / "corpus" / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = dict(data=[str(root / "corpus")], model="tiny", loss="mltm", eps=0.1, batch_size=8, epochs=1, lr=3e-3,
                device="cpu", features_cache=str(root / "features"), mixtures=12, progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        payload = exp.run_suite("hubness", base, [0, 1], root / "results", root / "runs",
                                command="python -m training experiments --suite hubness", packages=["pkgA", "pkgB"])
    finally:
        torch.set_num_threads(threads)
    return payload, root


def test_hubness_suite_evaluates_every_variant_on_one_run_per_package_and_seed(
        hubness_run: tuple[dict[str, Any], Path]) -> None:
    payload, root = hubness_run
    assert len(payload["runs"]) == 4 and {r["group"] for r in payload["runs"]} == {"pkgA", "pkgB"}
    record = json.loads((root / "runs" / "hubness" / "pkgA-mltm-eps0.1-prompts" / "seed0" / "result.json").read_text())
    assert record["config"]["exclude_packages"] == ["pkgA"]
    variants = record["result"]["variants"]
    assert set(variants["retrieval"]) == set(hub_exp.RETRIEVAL_VARIANTS)
    assert set(variants["zeroshot"]) == set(hub_exp.PROMPT_SETS)
    assert all(set(v) == set(hub_exp.ZS_VARIANTS) for v in variants["zeroshot"].values())
    # banks: the training split of the two packages the run trained on, never the held-out one
    assert variants["bank"] == {"captions": 32, "clips": 16}
    assert variants["beta"]["t2a"] in hub_exp.BETA_GRID
    # the cosine and transport variants are the run's standard evaluation (same run, same scores)
    m = record["metrics"]
    for mode in ("cosine", "transport"):
        assert m[hub_exp.retrieval_key(mode, "t2a", "R@5")] == pytest.approx(m[f"{mode}/t2a.R@5"])
        assert m[hub_exp.retrieval_key(mode, "a2t", "mAP@10")] == pytest.approx(m[f"{mode}/a2t.mAP@10"])
        # the run's standard zero-shot uses the default descriptions: the sound descriptions
        for name in ("top1", "top5"):
            assert m[hub_exp.zeroshot_key("sound", mode, name)] == pytest.approx(m[f"{mode}/zs.{name}"])
    assert m[hub_exp.zeroshot_key("sound", "prior", "n")] == 5
    # the seen/unseen split of every variant, as the run's leakage report splits the standard scoring
    for mode in ("cosine", "transport"):
        for group in ("seen", "unseen"):
            assert m[hub_exp.zeroshot_key("sound", mode, group, "n")] == m[f"leak/{mode}/{group}.n"]
            assert m[hub_exp.zeroshot_key("sound", mode, group, "top1")] == pytest.approx(
                m[f"leak/{mode}/{group}.top1"], nan_ok=True)


def test_hubness_summary_deltas_and_tables(hubness_run: tuple[dict[str, Any], Path]) -> None:
    payload, root = hubness_run
    key = hub_exp.retrieval_key("csls", "t2a", "R@5")
    base = hub_exp.retrieval_key("cosine", "t2a", "R@5")
    per_seed = [sum(r["metrics"][key] - r["metrics"][base] for r in payload["runs"] if r["seed"] == s) / 2
                for s in (0, 1)]
    assert payload["deltas"][key] == pytest.approx([sum(per_seed) / 2, float(np.std(per_seed, ddof=1))])
    assert payload["deltas"][hub_exp.retrieval_key("cosine", "t2a", "R@5")] == [0.0, 0.0]
    md = (root / "results" / "hubness.md").read_text()
    assert "QB-Norm (dynamic inverted softmax, β=20)" in md and "templates + 3-5 sound descriptions" in md
    assert exp.render("hubness", json.loads((root / "results" / "hubness.json").read_text())) == md


def test_stale_variants_are_re_evaluated_from_the_best_checkpoint_without_training(
        hubness_run: tuple[dict[str, Any], Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    payload, root = hubness_run
    path = root / "runs" / "hubness" / "pkgB-mltm-eps0.1-prompts" / "seed1" / "result.json"
    stored = json.loads(path.read_text())
    stale = json.loads(path.read_text())
    stale["result"]["variants"]["version"] = "old"
    stale["result"]["variants"]["retrieval"]["csls"]["t2a"]["R@5"] = -1.0
    stale["metrics"] = exp.flatten_result(stale["result"])
    path.write_text(json.dumps(stale))

    def boom(*a: Any, **k: Any) -> None:
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(exp_runs, "train", boom)
    base = json.loads((root / "results" / "hubness.json").read_text())["base"]
    again = exp.run_suite("hubness", base, [0, 1], tmp_path, root / "runs", packages=["pkgA", "pkgB"])
    refreshed = json.loads(path.read_text())
    assert refreshed["result"]["variants"]["version"] == hub_exp.VERSION and "skipped" not in refreshed
    assert refreshed["metrics"] == pytest.approx(stored["metrics"])  # same checkpoint, same numbers
    for name, agg in again["aggregates"].items():
        before = payload["aggregates"][name]["metrics"]
        assert set(agg["metrics"]) == set(before)
        assert [agg["metrics"][k][0] for k in before] == pytest.approx([v[0] for v in before.values()], nan_ok=True)
