"""The experiment suites, one declaration each (:class:`Suite` in :data:`SUITES`), and the driver
that runs one: :func:`run_suite`, :func:`render`, :func:`main`."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from atr_demo.errors import ATRError, ConfigError

from training.config import read_config_file
from training.experiments import hubness, tables
from training.experiments import metrics as mk
from training.experiments import settings as st
from training.experiments.aggregate import aggregate, choose_on_validation, correlations, lopo_summary
from training.experiments.runs import run_one
from training.experiments.settings import Setting

logger = logging.getLogger(__name__)

Records = Sequence[dict[str, Any]]
Aggregates = dict[str, dict[str, Any]]


def no_summary(records: Records, agg: Aggregates) -> dict[str, Any]:
    """Suites whose tables need only the per-setting aggregates."""
    return {}


def validation_choice(records: Records, agg: Aggregates) -> dict[str, Any]:
    """``chosen``: the candidate of each (group, family) with the best validation score."""
    return {"chosen": choose_on_validation(agg)}


def per_method_summary(records: Records, agg: Aggregates) -> dict[str, Any]:
    """``summary``: per method, the mean over its groups (packages, folds) per seed, then over seeds."""
    return {"summary": lopo_summary(records, sorted({k for r in records for k in r["metrics"]}))}


def analysis_summary(records: Records, agg: Aggregates) -> dict[str, Any]:
    """Structure-vs-outcome correlations (with and without triplet) and the classes the training captions name."""
    return {"correlations": correlations(records),
            "correlations_without_triplet": correlations(records, leave_out=("triplet",)),
            "seen_classes": next((r["result"].get("seen_classes", {}) for r in records if "result" in r), {})}


@dataclass(frozen=True)
class Suite:
    """Everything that makes one experiment suite what it is.

    Attributes:
        name: ``--suite`` value; file stem of ``<out>/<name>.json`` and ``.md``.
        about: one line for ``--help``.
        eval_note: what the runs are evaluated on (stored in the payload, printed under the title).
        render: payload → the Markdown lines below the common header (:func:`tables.render_header`).
        summarise: (runs, aggregates) → extra payload entries the tables read.
        settings: the rows of a suite without a package axis.
        package_settings: the rows of a suite with one (held-out packages → rows); exactly one
            of ``settings`` and ``package_settings`` is given.
    """

    name: str
    about: str
    eval_note: str
    render: Callable[[dict[str, Any]], list[str]]
    summarise: Callable[[Records, Aggregates], dict[str, Any]] = no_summary
    settings: Callable[[], list[Setting]] | None = None
    package_settings: Callable[[Sequence[str]], list[Setting]] | None = None

    def __post_init__(self) -> None:
        if (self.settings is None) == (self.package_settings is None):
            raise TypeError(f"suite {self.name}: give exactly one of settings and package_settings")

    def rows(self, packages: Sequence[str] | None = None) -> list[Setting]:
        """The suite's settings; ``packages`` are the held-out packages of a suite with a package
        axis (default :data:`settings.LOPO_PACKAGES`) and must be ``None`` for the others."""
        if self.package_settings is not None:
            return self.package_settings(st.LOPO_PACKAGES if packages is None else packages)
        if packages is not None:
            axis = ", ".join(sorted(n for n, s in SUITES.items() if s.package_settings is not None))
            raise ConfigError(f"suite {self.name} has no package axis; --packages applies to {axis} only: "
                              "drop --packages")
        assert self.settings is not None
        return self.settings()

    def markdown(self, payload: dict[str, Any]) -> str:
        """The Markdown of the suite's results: header, then the suite's tables."""
        return "\n".join(tables.render_header(self.name, payload) + self.render(payload)) + "\n"


CORPUS_TEST_NOTE = "corpus test split; zero-shot 50-way ESC-50 on its ESC-50-labelled clips."
HELD_OUT_NOTE = ("train/select on the other packages' train/validation splits; evaluate on ALL clips of the held-out "
                 "package; zero-shot 50-way ESC-50 on its ESC-50-labelled clips; mixtures only of two kept sources.")

def finetune_suite(name: str, blocks: int, about: str) -> Suite:
    """A suite of :func:`training.experiments.settings.suite_finetune` with the top ``blocks`` conv blocks
    fine-tuned."""
    return Suite(name=name, about=about,
                 eval_note=HELD_OUT_NOTE + " The fine-tuned row starts from the frozen row's best checkpoint of the "
                           "same package and seed (training/block_cache.py; block cache: python -m training features "
                           f"--config BASE --set finetune_blocks={blocks}).",
                 render=tables.render_held_out, summarise=per_method_summary,
                 package_settings=functools.partial(st.suite_finetune, blocks=blocks))


SUITES: dict[str, Suite] = {s.name: s for s in (
    Suite(name="main",
          about="m-LTM (Euclidean, Mahalanobis), InfoNCE, triplet on the test split; cosine and transport scoring",
          eval_note=CORPUS_TEST_NOTE, render=tables.render_settings, settings=st.suite_main),
    Suite(name="noise",
          about="0/20/40/60 % shuffled training captions: m-LTM, m-LTM partial (mass chosen per noise level on "
                "validation mAP@10), InfoNCE",
          eval_note="corpus test split (clean captions); noise shuffles captions of training pairs (clips + "
                    "mixtures).",
          render=tables.render_noise, summarise=validation_choice, settings=st.suite_noise),
    Suite(name="eps", about=f"m-LTM with ε ∈ {{{', '.join(f'{e:g}' for e in st.EPS_VALUES)}}} on the test split",
          eval_note=CORPUS_TEST_NOTE, render=tables.render_settings, settings=st.suite_eps),
    Suite(name="lopo",
          about="leave one package out: m-LTM Euclidean / Mahalanobis and InfoNCE, evaluated on every clip of the "
                "held-out package",
          eval_note=HELD_OUT_NOTE, render=tables.render_held_out, summarise=per_method_summary,
          package_settings=st.suite_lopo),
    Suite(name="levers",
          about="the leave-one-package-out protocol for m-LTM variants (no mixtures, MLP heads, ε, prompt ensemble)",
          eval_note=HELD_OUT_NOTE, render=tables.render_held_out, summarise=per_method_summary,
          package_settings=st.suite_levers),
    Suite(name="hubness",
          about="scoring-time variants of the levers' m-LTM ε=0.1 + prompt ensemble under leave-one-package-out: "
                "QB-Norm, CSLS, zero-shot class-prior calibration, richer zero-shot prompts",
          eval_note=HELD_OUT_NOTE + " One training run per package and seed; every scoring variant is evaluated "
                    "on that run. Banks come only from the packages the run trained on.",
          render=hubness.render_hubness, summarise=hubness.hubness_summary, package_settings=st.suite_hubness),
    finetune_suite("finetune", 1, "leave-one-package-out: m-LTM ε=0.1 + prompt ensemble on frozen features vs the "
                   "same run continued with the top aiSFX conv block fine-tuned on cached block activations"),
    finetune_suite("finetune2", 2, "the finetune suite with the top two aiSFX conv blocks fine-tuned (blocks 3 and 4)"),
    Suite(name="tune", about="base-config variants (lr, epochs, head, batch size) scored on the validation split",
          eval_note="VALIDATION split (used to choose the base config; never the test split).",
          render=tables.render_settings, settings=st.suite_tune),
    Suite(name="analysis",
          about="the main methods and the soft-label contrastive loss: retrieval, structure of the joint space and "
                "its correlation with retrieval, zero-shot leakage beside a linear probe",
          eval_note=CORPUS_TEST_NOTE, render=tables.render_analysis, summarise=analysis_summary,
          settings=st.suite_analysis),
    Suite(name="multilingual",
          about=f"the multilingual split in {st.ML_FOLDS}-fold cross-validation: English-only m-LTM / InfoNCE vs "
                "KCL, CACL and their m-LTM variants; per-language retrieval and mean rank variance",
          eval_note=f"multilingual split (Tux Paint descriptions and their translations), {st.ML_FOLDS}-fold "
                    "cross-validation by recording group: each fold tests its clips once, the next fold selects the "
                    "epoch; per seed the metrics are averaged over folds. Every caption in a language is a query "
                    "against the fold's test clips.",
          render=tables.render_multilingual, summarise=per_method_summary, settings=st.suite_multilingual),
)}


def get_suite(name: str) -> Suite:
    """The declaration of suite ``name``."""
    if name not in SUITES:
        raise ConfigError(f"unknown suite {name!r}; choose from {sorted(SUITES)}")
    return SUITES[name]


def render(suite: str, payload: dict[str, Any]) -> str:
    """The Markdown of a suite's results (tables + the command that produced them)."""
    return get_suite(suite).markdown(payload)


def run_suite(
    suite: str,
    base: dict[str, Any],
    seeds: Sequence[int],
    out_dir: Path,
    runs_dir: Path,
    overrides: Sequence[str] = (),
    command: str = "",
    only: Sequence[str] = (),
    keep_checkpoints: bool = False,
    packages: Sequence[str] | None = None,
    collect: bool = False,
) -> dict[str, Any]:
    """Run every (setting, seed) of ``suite`` (skipping finished ones), aggregate, write the
    JSON and Markdown into ``out_dir``; return the JSON payload. With ``collect``, only
    aggregate the runs already finished (the missing ones are listed in the payload).
    ``packages``: the held-out packages of a suite with a package axis (``None``: its default)."""
    spec = get_suite(suite)
    settings = spec.rows(packages)
    if only:
        settings = [s for s in settings if any(o in s.name for o in only)]
        if not settings:
            raise ConfigError(f"--only {list(only)} matches no setting of suite {suite}")
    total = len(settings) * len(seeds)
    records: list[dict[str, Any]] = []
    missing: list[str] = []
    began = time.time()
    t2a_r5, a2t_r5 = (mk.scored("cosine", mk.metric(part, mk.R5)) for part in (mk.T2A, mk.A2T))
    zs_top1 = mk.scored("cosine", mk.metric(mk.ZS, mk.TOP1))
    for n, (setting, seed) in enumerate(((s, k) for s in settings for k in seeds), 1):
        run_dir = runs_dir / suite / setting.name / f"seed{seed}"
        t0 = time.time()
        record = run_one(base, setting, seed, run_dir, overrides, keep_checkpoints, collect)
        if record is None:
            missing.append(f"{setting.name}/seed{seed}")
            continue
        m = record["metrics"]
        logger.info("[%d/%d] %s %s seed %d: %s t2a R@5 %.3f, a2t R@5 %.3f, ZS top-1 %s (train %.1fs, %.1fs in all)",
                    n, total, suite, setting.name, seed, "skipped (done)," if record.get("skipped") else "",
                    m.get(t2a_r5, float("nan")), m.get(a2t_r5, float("nan")),
                    f"{m[zs_top1]:.3f}" if zs_top1 in m else "–", record.get("train_seconds", 0.0), time.time() - t0)
        records.append(record)
    if not records:
        raise ConfigError(f"suite {suite}: no finished run to aggregate")
    agg = aggregate(records)
    payload: dict[str, Any] = {
        "suite": suite, "command": command, "seeds": list(seeds), "overrides": list(overrides), "missing": missing,
        "eval_note": spec.eval_note, "base": base, "wall_seconds": round(time.time() - began, 1),
        "runs": [{k: v for k, v in r.items() if k not in ("result", "config", "skipped")} for r in records],
        "aggregates": agg,
    }
    payload.update(spec.summarise(records, agg))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{suite}.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    (out_dir / f"{suite}.md").write_text(spec.markdown(payload), encoding="utf-8")
    return payload


def rerender(suite: str, out_dir: Path) -> str:
    """Rewrite ``<out_dir>/<suite>.md`` from ``<out_dir>/<suite>.json``; return the Markdown."""
    spec = get_suite(suite)
    path = out_dir / f"{suite}.json"
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: run the suite first (without --render)")
    markdown = spec.markdown(json.loads(path.read_text(encoding="utf-8")))
    (out_dir / f"{suite}.md").write_text(markdown, encoding="utf-8")
    return markdown


def main(argv: list[str] | None = None) -> int:
    """``experiments --suite S [--base FILE] [--seeds …] [--out DIR] [--runs DIR] [--set k=v …]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m training experiments", description="run an experiment suite",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="suites:\n" + "\n".join(f"  {s.name:<13} {s.about}" for s in SUITES.values()))
    parser.add_argument("--suite", required=True, choices=sorted(SUITES))
    parser.add_argument("--base", default="configs/corpus_base.yaml", help="base training config (YAML/JSON)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="results", help="folder of <suite>.json and <suite>.md")
    parser.add_argument("--runs", default="artifacts/experiments",
                        help="folder of the runs (checkpoints, per-run JSON)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a base-config key for every run; repeatable")
    parser.add_argument("--only", nargs="*", default=[], help="run only settings whose name contains one of these")
    axis = "/".join(n for n, s in SUITES.items() if s.package_settings is not None)
    parser.add_argument("--packages", nargs="+", default=None,
                        help=f"held-out packages of {axis} (default: {' '.join(st.LOPO_PACKAGES)})")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--collect", action="store_true", help="train nothing: aggregate the runs already finished")
    parser.add_argument("--render", action="store_true",
                        help="train and aggregate nothing: rewrite <out>/<suite>.md from <out>/<suite>.json")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep each run's last/ checkpoint")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    # --collect only re-aggregates finished runs: the command that produces them is the one without it
    command = "python -m training experiments " + " ".join(shlex.quote(a) for a in argv if a != "--collect")
    try:
        if args.render:
            sys.stdout.write(rerender(args.suite, Path(args.out)))
            return 0
        base = read_config_file(args.base)
        payload = run_suite(args.suite, base, args.seeds, Path(args.out), Path(args.runs), args.overrides,
                            command, args.only, args.keep_checkpoints, args.packages, args.collect)
    except ATRError as exc:
        logger.error("%s", exc)
        return 1
    sys.stdout.write(render(args.suite, payload))
    return 0
