"""``python -m training experiments --suite NAME [...]``: the README tables.

Each suite is a list of *settings* (config overrides on top of ``--base``); every setting is
trained once per seed (``train`` → ``out/best`` chosen on validation) and evaluated on cached
frozen-backbone features, in one process. Results:

* ``<runs>/<suite>/<setting>/seed<k>/result.json`` — one run (config, validation score, every
  metric); a run whose result exists *with the same config* is skipped (resumable).
* ``<out>/<suite>.json`` — every run's flat metrics, the aggregates (mean ± sample std over
  seeds, ddof=1) and the command; ``<out>/<suite>.md`` — the Markdown table(s), also printed;
  ``--render`` rewrites it from the JSON.

Every run also records, besides retrieval and zero-shot: the structure report, the seen/unseen
zero-shot split with the classes found in its training captions, the linear-probe baseline on
its training split, and (with ``languages``) the per-language metrics.

Modules:

* :mod:`.suites` — one :class:`~.suites.Suite` declaration per suite in ``SUITES`` (its
  settings, evaluation note, summary and tables; ``--help`` lists them), and the driver
  (:func:`run_suite`, :func:`render`, :func:`main`);
* :mod:`.settings` — the rows of each suite (``suite_lopo`` / ``suite_levers`` take the held-out
  packages; the other suites have no package axis);
* :mod:`.runs` — train and evaluate one (setting, seed); :mod:`.metrics` — the flat metric keys;
* :mod:`.aggregate` — mean ± std over seeds, summaries, correlations; :mod:`.tables` — Markdown.
"""

from __future__ import annotations

from training.experiments.aggregate import aggregate, choose_on_validation, correlations, lopo_summary, mean_std
from training.experiments.metrics import flatten_result
from training.experiments.runs import (
    EVAL_MODES,
    STRUCTURE_KS,
    eval_clips,
    evaluate_cached,
    load_clips,
    run_config,
    run_one,
)
from training.experiments.settings import (
    EPS_VALUES,
    LOPO_PACKAGES,
    METHODS,
    ML_FOLDS,
    NOISE_LEVELS,
    PARTIAL_MASSES,
    Setting,
)
from training.experiments.suites import SUITES, Suite, get_suite, main, render, rerender, run_suite
from training.experiments.tables import COLUMNS, fmt

__all__ = [
    "COLUMNS", "EPS_VALUES", "EVAL_MODES", "LOPO_PACKAGES", "METHODS", "ML_FOLDS", "NOISE_LEVELS", "PARTIAL_MASSES",
    "STRUCTURE_KS", "SUITES", "Setting", "Suite", "aggregate", "choose_on_validation", "correlations", "eval_clips",
    "evaluate_cached", "flatten_result", "fmt", "get_suite", "load_clips", "lopo_summary", "main", "mean_std",
    "render", "rerender", "run_config", "run_one", "run_suite",
]
