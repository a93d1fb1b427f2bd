"""The settings (rows) of each experiment suite: config overrides on top of the base config.

A ``suite_*`` function without arguments has no package axis; ``suite_lopo`` and
``suite_levers`` take the held-out packages (one group of rows per package).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from atr_demo.zeroshot import ESC50_CLASSES

LOPO_PACKAGES = ("0ad-data", "megaglest-data", "minetest-data", "wesnoth-1.16-data", "widelands-data",
                 "tuxpaint-stamps-default")
EPS_VALUES = (0.01, 0.03, 0.05, 0.1, 0.5)
NOISE_LEVELS = (0.0, 0.2, 0.4, 0.6)
PARTIAL_MASSES = (0.9, 0.8, 0.6)
ENSEMBLE_TEMPLATES = ["the sound of {}", "this is a sound of {}", "{}", "a recording of {}",
                      "a sound effect of {}", "{} can be heard"]
ML_FOLDS = 5

Methods = dict[str, tuple[str, dict[str, Any]]]

#: Methods compared in main / lopo: name → (row label, overrides).
METHODS: Methods = {
    "mltm-euclidean": ("m-LTM (Euclidean)", {"loss": "mltm", "metric": "euclidean"}),
    "mltm-mahalanobis": ("m-LTM (Mahalanobis)", {"loss": "mltm", "metric": "mahalanobis"}),
    "infonce": ("InfoNCE", {"loss": "infonce", "metric": "euclidean"}),
    "triplet": ("triplet (VSE++)", {"loss": "triplet", "metric": "euclidean"}),
}

#: The analysis suite: the main methods and the soft-label contrastive loss.
ANALYSIS_METHODS: Methods = {
    **METHODS,
    "softlabel0.05": ("soft-label contrastive (τ_q=0.05)", {"loss": "softlabel", "metric": "euclidean",
                                                            "target_temperature": 0.05}),
    "softlabel0.1": ("soft-label contrastive (τ_q=0.1)", {"loss": "softlabel", "metric": "euclidean",
                                                          "target_temperature": 0.1}),
}

#: The multilingual suite's methods (``languages`` comes from the base config,
#: ``configs/multilingual_base.yaml``).
ML_METHODS: Methods = {
    "en-mltm": ("m-LTM, English captions only", {"loss": "mltm"}),
    "en-infonce": ("InfoNCE, English captions only", {"loss": "infonce"}),
    "kcl": ("KCL (InfoNCE terms)", {"loss": "kcl"}),
    "kcl-ot": ("KCL-OT (m-LTM terms)", {"loss": "kcl_mltm"}),
    "cacl": ("CACL (InfoNCE terms)", {"loss": "cacl"}),
    "cacl-ot": ("CACL-OT (m-LTM terms)", {"loss": "cacl_mltm"}),
}

#: Two complementary halves of ESC-50 for the class-disjoint zero-shot control.
HOLDOUT_HALVES: dict[str, list[str]] = {"A": list(ESC50_CLASSES[0::2]), "B": list(ESC50_CLASSES[1::2])}

_MLTM = {"loss": "mltm", "metric": "euclidean"}

#: The levers suite's m-LTM variants (and InfoNCE with the prompt ensemble).
LEVERS: Methods = {
    "mltm-nomix": ("m-LTM, no mixtures", {**_MLTM, "mixtures": 0}),
    "mltm-mlp": ("m-LTM, MLP heads", {**_MLTM, "model.head": "mlp", "model.head_dropout": 0.1}),
    "mltm-eps0.1": ("m-LTM, ε=0.1", {**_MLTM, "eps": 0.1}),
    "mltm-prompts": ("m-LTM, prompt ensemble", {**_MLTM, "model.prompt_templates": ENSEMBLE_TEMPLATES}),
    "mltm-eps0.1-prompts": ("m-LTM, ε=0.1 + prompt ensemble", {**_MLTM, "eps": 0.1,
                                                               "model.prompt_templates": ENSEMBLE_TEMPLATES}),
    "infonce-prompts": ("InfoNCE, prompt ensemble", {"loss": "infonce", "metric": "euclidean",
                                                     "model.prompt_templates": ENSEMBLE_TEMPLATES}),
}

#: The tune suite's base-config variants: name → overrides.
TUNE_VARIANTS: dict[str, dict[str, Any]] = {
    "base": {}, "lr3e-3": {"lr": 3e-3}, "lr3e-4": {"lr": 3e-4}, "epochs40": {"epochs": 40},
    "epochs10": {"epochs": 10}, "mlp": {"model.head": "mlp", "model.head_dropout": 0.1},
    "bs64": {"batch_size": 64}, "bs256": {"batch_size": 256}, "wd0.01": {"optimizer": "adamw", "weight_decay": 0.01,
               # as when results/tune.* were made: weight decay on every parameter, biases too
               "decay_bias_and_norm": True},
}


@dataclass
class Setting:
    """One row of a suite: config overrides and what to evaluate on.

    Attributes:
        name: unique id within the suite (folder name of its runs).
        label: row label in the tables.
        overrides: training-config values on top of the base config.
        group: row group (noise level, held-out package); ``""`` when none.
        eval_split: ``test`` | ``validation`` | ``all``.
        eval_packages: keep only these packages for evaluation (LOPO: the held-out one).
        family: settings of one family at one group are candidates of a validation choice
            (``mltm_partial`` masses); ``None`` for ordinary rows.
        variants: also evaluate the scoring-time variants of the trained run (hubness
            corrections, prompt sets: :func:`training.experiments.hubness.evaluate_variants`).
        init_from: name of a setting of the same suite, listed before this one, whose run of the
            same seed starts this run (its ``train/best``: ``init_from`` in the training config).
    """

    name: str
    label: str
    overrides: dict[str, Any]
    group: str = ""
    eval_split: str = "test"
    eval_packages: list[str] = field(default_factory=list)
    family: str | None = None
    variants: bool = False
    init_from: str | None = None


def suite_main() -> list[Setting]:
    return [Setting(name, label, dict(ov)) for name, (label, ov) in METHODS.items()]


def suite_eps() -> list[Setting]:
    return [Setting(f"eps{eps:g}", f"m-LTM ε={eps:g}", {**_MLTM, "eps": eps}) for eps in EPS_VALUES]


def suite_noise() -> list[Setting]:
    out = []
    for f in NOISE_LEVELS:
        group = f"{round(f * 100)} %"
        base = {"noise_fraction": f, "metric": "euclidean"}
        out.append(Setting(f"noise{f:g}-mltm", "m-LTM", {**base, "loss": "mltm"}, group))
        for s in PARTIAL_MASSES:
            out.append(Setting(f"noise{f:g}-partial{s:g}", f"m-LTM partial (s={s:g})",
                               {**base, "loss": "mltm_partial", "mass": s}, group, family="m-LTM partial"))
        out.append(Setting(f"noise{f:g}-infonce", "InfoNCE", {**base, "loss": "infonce"}, group))
    return out


def held_out(methods: Methods, packages: Sequence[str]) -> list[Setting]:
    """Per package, per method: train without the package, evaluate on all of its clips."""
    return [Setting(f"{pkg}-{name}", label, {**ov, "exclude_packages": [pkg]}, pkg, "all", [pkg])
            for pkg in packages for name, (label, ov) in methods.items()]


def suite_lopo(packages: Sequence[str]) -> list[Setting]:
    return held_out({k: METHODS[k] for k in ("mltm-euclidean", "mltm-mahalanobis", "infonce")}, packages)


def suite_levers(packages: Sequence[str]) -> list[Setting]:
    return held_out(LEVERS, packages)


def suite_hubness(packages: Sequence[str]) -> list[Setting]:
    """The levers' m-LTM ε=0.1 + prompt ensemble, held out per package, with its scoring-time variants."""
    rows = held_out({k: LEVERS[k] for k in ("mltm-eps0.1-prompts",)}, packages)
    return [dataclasses.replace(s, variants=True) for s in rows]


#: The finetune suite's second phase (:mod:`training.block_cache`): the top aiSFX conv block and the heads, warm-
#: started from the frozen-feature run, 3 epochs at lr 1e-4, one random 100-frame block per clip and step, one time
#: and one mel mask of up to 2 positions of the 12 × 12 maps; on the real clips only (no mixture pool: its block
#: maps cost 2000 more clips of cache and 2.5× the CPU time per epoch).
FINETUNE_TOP1: dict[str, Any] = {"finetune_blocks": 1, "epochs": 3, "lr": 1e-4, "block_crop": 1, "block_masks": 1,
                                 "block_mask_width": 2, "mixtures": 0}


#: The control of the second phase: the same continuation (epochs, rate, no mixture pool) with the backbone frozen.
FINETUNE_CONTROL: dict[str, Any] = {"epochs": 3, "lr": 1e-4, "mixtures": 0}


def suite_finetune(packages: Sequence[str], blocks: int = 1) -> list[Setting]:
    """Per held-out package: the levers' m-LTM ε=0.1 + prompt ensemble on frozen features; the same run
    continued with the top ``blocks`` aiSFX conv blocks fine-tuned on cached block activations (linear
    probe, then fine-tune); and, as a control, continued as long with the heads alone (what the extra
    epochs do)."""
    name = "mltm-eps0.1-prompts"
    label, ov = LEVERS[name]
    what, tag = ("top conv block", "topblock") if blocks == 1 else (f"top {blocks} conv blocks", f"top{blocks}blocks")
    rows = []
    for pkg in packages:
        frozen = Setting(f"{pkg}-{name}", label, {**ov, "exclude_packages": [pkg]}, pkg, "all", [pkg])
        tuned = Setting(f"{pkg}-{tag}-ft", f"{label}, {what} fine-tuned",
                        {**ov, **FINETUNE_TOP1, "finetune_blocks": blocks, "exclude_packages": [pkg]}, pkg, "all",
                        [pkg], init_from=frozen.name)
        control = Setting(f"{pkg}-heads-continued", f"{label}, heads continued (control)",
                          {**ov, **FINETUNE_CONTROL, "exclude_packages": [pkg]}, pkg, "all", [pkg],
                          init_from=frozen.name)
        rows += [frozen, tuned, control]
    return rows


def suite_analysis() -> list[Setting]:
    out = [Setting(name, label, dict(ov)) for name, (label, ov) in ANALYSIS_METHODS.items()]
    for name in ("mltm-euclidean", "infonce"):
        label, ov = METHODS[name]
        out += [Setting(f"{name}-hold{half}", f"{label}, ESC-50 half {half} held out",
                        {**ov, "exclude_classes": classes})
                for half, classes in HOLDOUT_HALVES.items()]
    return out


def suite_multilingual() -> list[Setting]:
    return [Setting(f"fold{f}-{name}", label, {**ov, "cv_folds": ML_FOLDS, "cv_fold": f}, f"fold {f}")
            for f in range(ML_FOLDS) for name, (label, ov) in ML_METHODS.items()]


def suite_tune() -> list[Setting]:
    return [Setting(f"tune-{k}", f"m-LTM {k}", {**_MLTM, **v}, eval_split="validation")
            for k, v in TUNE_VARIANTS.items()]
