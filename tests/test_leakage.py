"""Zero-shot leakage report: synonym table, caption matching, seen/unseen accuracy, linear probe."""

from __future__ import annotations

import math

import pytest
import torch

from atr_demo.errors import ConfigError
from atr_demo.zeroshot import ESC50_CLASSES, readable

from training.analysis.leakage import (
    ESC50_EXCLUSIONS,
    ESC50_SYNONYMS,
    VERB_WORDS,
    classes_in_captions,
    fit_linear_probe,
    seen_classes,
    split_accuracy,
    term_pattern,
    word_forms,
)


def _classes(caption: str) -> set[str]:
    return set(classes_in_captions([caption]))


def test_synonym_table_covers_every_class_with_its_readable_name() -> None:
    assert set(ESC50_SYNONYMS) == set(ESC50_CLASSES) and len(ESC50_SYNONYMS) == 50
    for label, terms in ESC50_SYNONYMS.items():
        assert readable(label) in terms, label
        assert all(t == t.lower().strip() and t for t in terms), label
        assert len(set(terms)) == len(terms), label
    assert set(ESC50_EXCLUSIONS) <= set(ESC50_CLASSES)


def test_word_forms_and_term_pattern_inflections() -> None:
    assert word_forms("dog") == ["dog", "dogs"]
    assert "puppies" in word_forms("puppy") and "mosquitoes" in word_forms("mosquito")
    assert {"dripping", "dripped", "drips"} <= set(word_forms("drip"))
    assert {"sneezing", "sneezed", "sneezes"} <= set(word_forms("sneeze"))
    assert {"cries", "crying", "cried"} <= set(word_forms("cry"))
    assert word_forms("fire") == ["fire"] and word_forms("the") == ["the"]
    assert "drip" in VERB_WORDS and "dog" not in VERB_WORDS
    dog = term_pattern("dog")
    assert dog.search("Two DOGS bark") and dog.search("a dog's bark")
    assert not dog.search("a hotdog stand") and not dog.search("dogged")
    assert term_pattern("hen").search("hens cluck") and term_pattern("chicken").search("chickens")
    assert not term_pattern("cow").search("a cowboy rides")
    cat = term_pattern("cat")
    assert not cat.search("the catalog") and not cat.search("scattered leaves") and not cat.search("caters")
    assert term_pattern("car horn").search("a car-horn beeps")
    assert term_pattern("door creak").search("old doors creaking")
    with pytest.raises(ConfigError, match="empty"):
        term_pattern("  ")


@pytest.mark.parametrize(
    ("caption", "present", "absent"),
    [
        ("two dogs bark", {"dog"}, set()),
        ("a cowboy rides", set(), {"cow"}),
        ("the catalog is scattered on the floor", set(), {"cat"}),
        ("hens cluck", {"hen"}, set()),
        ("a chicken clucks", {"hen"}, set()),
        ("footsteps on gravel", {"footsteps"}, set()),
        ("a steam train leaves the station", {"train"}, set()),
        ("a car horn honks", {"car_horn"}, set()),
        ("a ship's horn blows", set(), {"car_horn"}),
        ("a goose honks", set(), {"car_horn"}),
        ("church bells ring", {"church_bells"}, set()),
        ("a ship's bell rings", set(), {"church_bells"}),
        ("a rooster crows", {"rooster"}, {"crow"}),
        ("a crow caws", {"crow"}, set()),
        ("a cannon fires", set(), {"crackling_fire"}),
        ("a fire engine passes", set(), {"crackling_fire", "engine"}),
        ("a big cat growls", set(), {"cat"}),
        ("a jet turbine winds down", {"airplane"}, {"wind"}),
        ("a stone knocks on wood", set(), {"door_wood_knock"}),
        ("someone knocks on the door", {"door_wood_knock"}, set()),
        ("crickets chirp at night", {"crickets"}, {"chirping_birds"}),
        ("birds singing at dawn", {"chirping_birds"}, set()),
        ("an owl hoots", set(), {"chirping_birds"}),
        ("a circular saw whines", set(), {"hand_saw"}),
        ("someone saws a plank", {"hand_saw"}, set()),
        ("an arrow flies by", set(), {"insects"}),
        ("a thunder clap", {"thunderstorm"}, {"clapping"}),
    ],
)
def test_caption_matching_policy(caption: str, present: set[str], absent: set[str]) -> None:
    found = _classes(caption)
    assert present <= found, (caption, found)
    assert not absent & found, (caption, found)


def test_classes_in_captions_reports_matched_terms() -> None:
    captions = ["A cow moos", "cattle low", "a cockerel crows in the morning", "a big cat and a cat", "wind blows"]
    found = classes_in_captions(captions)
    assert found == {
        "rooster": ["cockerel"],
        "cow": ["cattle", "cow", "moo"],
        "cat": ["cat"],
        "wind": ["wind"],
    }
    assert list(found) == ["rooster", "cow", "cat", "wind"]  # order of ESC50_CLASSES
    # a class missing from the synonym table is matched by its readable name
    custom = classes_in_captions(["a door slams shut"], classes=["door_slam", "dog"], synonyms={"dog": ("dog",)})
    assert custom == {"door_slam": ["door slam"]}
    assert classes_in_captions([]) == {}
    with pytest.raises(ConfigError, match="single string"):
        classes_in_captions("a dog barks")


def test_seen_classes_over_a_small_corpus() -> None:
    captions = [
        "a dog barks", "a steam locomotive chugs", "rain patters on a windshield", "a fox barks",
        "an iron gate creaks open", "glass bottles knock together", "a pig oinks",
    ]
    assert seen_classes(captions) == {"dog", "train", "rain", "pig"}
    assert seen_classes(captions, classes=["dog", "cat"]) == {"dog"}


def test_split_accuracy_by_hand() -> None:
    classes = ["a", "b", "c", "d"]
    scores = torch.tensor([
        [0.9, 0.1, 0.0, 0.0],  # true a: rank 1
        [0.9, 0.5, 0.1, 0.0],  # true b: rank 2
        [0.1, 0.2, 0.3, 0.4],  # true c: rank 2
        [0.4, 0.3, 0.2, 0.1],  # true d: rank 4
        [0.0, 0.0, 1.0, 0.5],  # true c: rank 1
    ])
    labels = torch.tensor([0, 1, 2, 3, 2])
    out = split_accuracy(scores, labels, classes, seen={"a", "b"}, ks=(1, 2))
    assert out["seen"] == {"top1": pytest.approx(0.5), "top2": pytest.approx(1.0), "n": 2, "n_classes": 2}
    assert out["unseen"] == {"top1": pytest.approx(1 / 3), "top2": pytest.approx(2 / 3), "n": 3, "n_classes": 2}
    assert out["all"] == {"top1": pytest.approx(2 / 5), "top2": pytest.approx(4 / 5), "n": 5, "n_classes": 4}
    # ranking is over all labels, not only the group's: clip 2 is still ranked 2nd, behind "d"
    only_c = split_accuracy(scores[2:3], labels[2:3], classes, seen=set(), ks=(1,))
    assert only_c["unseen"]["top1"] == 0.0
    # empty group → NaN accuracies and n = 0
    empty = split_accuracy(scores, labels, classes, seen=set())
    assert empty["seen"]["n"] == 0 and empty["seen"]["n_classes"] == 0
    assert math.isnan(empty["seen"]["top1"]) and math.isnan(empty["seen"]["top5"])
    assert empty["unseen"]["top1"] == empty["all"]["top1"] == pytest.approx(2 / 5)
    assert empty["all"]["top5"] == 1.0


def test_split_accuracy_rejects_bad_inputs() -> None:
    scores, labels = torch.zeros(3, 4), torch.tensor([0, 1, 2])
    with pytest.raises(ConfigError, match="columns"):
        split_accuracy(scores, labels, ["a", "b", "c"], seen=set())
    with pytest.raises(ConfigError, match=r"\(n, L\)"):
        split_accuracy(scores, labels[:2], ["a", "b", "c", "d"], seen=set())
    with pytest.raises(ConfigError, match="not among"):
        split_accuracy(scores, labels, ["a", "b", "c", "d"], seen={"z"})
    with pytest.raises(ConfigError, match="integer class indices"):
        split_accuracy(scores, torch.tensor([0, 1, 4]), ["a", "b", "c", "d"], seen=set())


def _blobs(n_per_class: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    centres = 4.0 * torch.eye(3, 8)
    x = torch.cat([centres[c] + torch.randn(n_per_class, 8, generator=generator) for c in range(3)])
    y = torch.arange(3).repeat_interleave(n_per_class)
    return 5.0 * x + 10.0, y  # shifted and scaled: the probe must standardise


def test_linear_probe_fits_separable_blobs_reproducibly() -> None:
    g = torch.Generator().manual_seed(0)
    x_train, y_train = _blobs(30, g)
    x_test, y_test = _blobs(100, g)
    probe = fit_linear_probe(x_train, y_train, n_classes=3, seed=1)
    assert probe.n_classes == 3
    assert (probe.predict(x_train) == y_train).float().mean() == 1.0
    assert (probe.predict(x_test) == y_test).float().mean() >= 0.9
    scores = probe.scores(x_test.float())
    assert scores.shape == (300, 3) and scores.dtype == torch.float64
    assert torch.allclose(scores.exp().sum(dim=1), torch.ones(300, dtype=torch.float64))
    again = fit_linear_probe(x_train, y_train, n_classes=3, seed=1)
    assert torch.equal(again.scores(x_test), scores)
    # the scores plug into split_accuracy like zero-shot scores do
    split = split_accuracy(scores, y_test, ["x", "y", "z"], seen={"x"})
    assert split["all"]["top1"] >= 0.9 and split["seen"]["n"] == 100


def test_linear_probe_class_without_examples_is_never_predicted() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = _blobs(20, g)
    probe = fit_linear_probe(x, y, n_classes=4)
    assert probe.scores(x).shape == (60, 4)
    assert not (probe.predict(x) == 3).any()


def test_linear_probe_rejects_bad_inputs() -> None:
    x = torch.randn(6, 4)
    with pytest.raises(ConfigError, match="2 distinct classes"):
        fit_linear_probe(x, torch.zeros(6, dtype=torch.long), n_classes=3)
    with pytest.raises(ConfigError, match=r"\(n, D\)"):
        fit_linear_probe(x, torch.tensor([0, 1, 0, 1, 0]), n_classes=2)
    with pytest.raises(ConfigError, match=r"\(n, D\)"):
        fit_linear_probe(x[0], torch.tensor([0, 1, 0, 1]), n_classes=2)
    with pytest.raises(ConfigError, match=r"\[0, 2\)"):
        fit_linear_probe(x, torch.tensor([0, 1, 2, 1, 0, 1]), n_classes=2)
    probe = fit_linear_probe(x, torch.tensor([0, 1, 0, 1, 0, 1]), n_classes=2)
    with pytest.raises(ConfigError, match=r"\(m, 4\)"):
        probe.scores(torch.randn(3, 5))
