"""The flat metric keys of one experiment run (``record["metrics"]``), defined once.

:func:`flatten_result` writes them; the tables, the summaries, the correlations and the progress
log read them through the same names. A key is ``<prefix><part>.<name>``:

* ``cosine/t2a.R@1`` — :func:`scored` (scoring mode, :func:`metric` of a part and a name);
  parts ``t2a`` (text→audio), ``a2t`` (audio→text), ``zs`` (zero-shot);
* ``gap``, ``n_clips`` — :data:`GAP`, :data:`N_CLIPS`;
* ``structure/knn.cosine.10``, ``structure/cka``, ``structure/chance.10`` — :func:`knn`,
  :data:`CKA`, :func:`chance`;
* ``leak/cosine/seen.top1`` — :func:`leak`; ``probe/unseen.top5``, ``probe/train_clips`` — :func:`probe`;
* ``ml/cosine/fr/t2a.mAP@10``, ``ml/cosine/mean/t2a.R@1`` — :func:`ml`; ``ml/cosine/mrv.t2a`` — :func:`mrv`;
* ``var/retrieval.csls.t2a.R@5``, ``var/zeroshot.sound.prior.top1`` — :func:`variant` (scoring-time variants).
"""

from __future__ import annotations

from typing import Any

#: Short names of the parts of an evaluation result.
T2A, A2T, ZS = "t2a", "a2t", "zs"
PARTS = {"text_to_audio": T2A, "audio_to_text": A2T, "zeroshot": ZS}

#: Metric names within a part (as :mod:`atr_demo.evaluation` and the zero-shot report name them).
R1, R5, R10, MAP10 = "R@1", "R@5", "R@10", "mAP@10"
TOP1, TOP5, N = "top1", "top5", "n"
N_CLASSES = "n_classes"

#: Class groups of the zero-shot leakage split and of the linear probe.
SEEN, UNSEEN, ALL = "seen", "unseen", "all"

GAP = "gap"
N_CLIPS = "n_clips"

STRUCTURE = "structure/"
PROBE = "probe/"
#: The language entry of the multilingual metrics that holds the mean over languages.
ML_MEAN = "mean"


def metric(part: str, name: str) -> str:
    """``t2a.R@1``: the metric ``name`` of a part (:data:`T2A`, :data:`A2T`, :data:`ZS`, a class group)."""
    return f"{part}.{name}"


def scored(mode: str, name: str) -> str:
    """``cosine/t2a.R@1``: metric ``name`` (:func:`metric`) under scoring ``mode``."""
    return f"{mode}/{name}"


def structure(name: str) -> str:
    """``structure/cka``: an entry of the structure report."""
    return STRUCTURE + name


def knn(distance: str, k: int | str) -> str:
    """``structure/knn.cosine.10``: k-NN graph overlap of the audio and caption spaces."""
    return structure(f"knn.{distance}.{k}")


def chance(k: int | str) -> str:
    """``structure/chance.10``: expected k-NN overlap of random neighbour sets."""
    return structure(f"chance.{k}")


CKA = structure("cka")


def leak_prefix(mode: str) -> str:
    """``leak/cosine/``: the zero-shot leakage split under scoring ``mode``."""
    return f"leak/{mode}/"


def leak(mode: str, group: str, name: str) -> str:
    """``leak/cosine/seen.top1``: zero-shot ``name`` of a class group (:data:`SEEN`, :data:`UNSEEN`, :data:`ALL`)."""
    return leak_prefix(mode) + metric(group, name)


def probe(name: str) -> str:
    """``probe/seen.top1`` (``name`` = :func:`metric` of a class group) or ``probe/train_clips``."""
    return PROBE + name


def ml_prefix(mode: str) -> str:
    """``ml/cosine/``: the multilingual metrics under scoring ``mode``."""
    return f"ml/{mode}/"


def ml(mode: str, language: str, name: str) -> str:
    """``ml/cosine/fr/t2a.mAP@10``: metric ``name`` of one language (or :data:`ML_MEAN`)."""
    return f"{ml_prefix(mode)}{language}/{name}"


def mrv(mode: str, part: str) -> str:
    """``ml/cosine/mrv.t2a``: mean rank variance of the correct item across languages."""
    return ml_prefix(mode) + metric("mrv", part)


VARIANTS = "var/"


def variant(*parts: str) -> str:
    """``var/retrieval.qbnorm.t2a.R@5``: a scoring-time variant's metric (:mod:`training.experiments.hubness`)."""
    return VARIANTS + ".".join(parts)


def _flatten(prefix: str, value: Any, flat: dict[str, float]) -> None:
    """Numbers of a nested dict into ``flat`` under dotted keys after ``prefix`` (a prefix that
    ends in ``/`` is followed directly by the first key: ``structure/knn.cosine.10``)."""
    if isinstance(value, dict):
        for key, sub in value.items():
            _flatten(f"{prefix}{key}" if not prefix or prefix.endswith("/") else metric(prefix, key), sub, flat)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        flat[prefix] = float(value)


def flatten_result(result: dict[str, Any]) -> dict[str, float]:
    """Nested evaluation result → ``{"cosine/t2a.R@1": …, "cosine/zs.top1": …, "gap": …}``, plus
    the structure, leakage, probe and multilingual keys (module docstring) when present."""
    flat: dict[str, float] = {GAP: float(result["modality_gap"]), N_CLIPS: float(result["n_clips"])}
    for mode, entry in result["modes"].items():
        for part, values in entry.items():
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    flat[scored(mode, metric(PARTS[part], key))] = float(value)
    if "structure" in result:
        _flatten(STRUCTURE, {k: v for k, v in result["structure"].items() if k != N}, flat)
    for mode, split in result.get("leakage", {}).items():
        _flatten(leak_prefix(mode), split, flat)
    if result.get("probe"):
        _flatten(PROBE, result["probe"], flat)
    if result.get("variants"):
        _flatten(VARIANTS, result["variants"], flat)
    for mode, entry in result.get("multilingual", {}).items():
        for lang, values in entry["languages"].items():
            for part, metrics in values.items():
                _flatten(ml(mode, lang, PARTS[part]), metrics, flat)
        for part, metrics in entry["mean"].items():
            _flatten(ml(mode, ML_MEAN, PARTS[part]), metrics, flat)
        for part, value in entry.get("mrv", {}).items():
            flat[mrv(mode, PARTS[part])] = float(value)
    return flat
