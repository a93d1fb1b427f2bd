"""``python -m training compare-suites``: rows of several suite results side by side, with paired gains.

Each argument names a suite JSON written by ``python -m training experiments`` and, after ``::``,
the label of the setting family to take from it (``"path/hubness.json::m-LTM, ε=0.1 + prompt
ensemble"``; without ``::`` the file must hold one label), and optionally ``=ROW NAME``. For every
row the runs' flat metrics are averaged over held-out packages per seed, then mean ± sample std
over seeds (as the suites do); the first row is the baseline, and each later row also gets its
paired difference, per seed (mean over the packages both rows evaluated of row − baseline), then
mean ± std over seeds. A row is compared only on the seeds and packages it shares with the baseline.

Typical use: the same protocol (leave-one-package-out, the same seeds) run with one change per suite
run (``--set`` a text tower, a pooling, ``label_captions``), compared here in one table.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atr_demo.errors import ConfigError

from training.experiments import metrics as mk
from training.experiments.aggregate import mean_std
from training.experiments.aggregate import seed_means as per_seed_means
from training.experiments.tables import markdown_table

logger = logging.getLogger(__name__)

#: (column title, flat metric key) of the comparison table.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("T→A R@5 cosine", mk.scored("cosine", mk.metric(mk.T2A, mk.R5))),
    ("T→A R@5 transport", mk.scored("transport", mk.metric(mk.T2A, mk.R5))),
    ("T→A mAP@10 cosine", mk.scored("cosine", mk.metric(mk.T2A, mk.MAP10))),
    ("A→T R@5 cosine", mk.scored("cosine", mk.metric(mk.A2T, mk.R5))),
    ("ZS top-1", mk.scored("cosine", mk.metric(mk.ZS, mk.TOP1))),
    ("ZS top-5", mk.scored("cosine", mk.metric(mk.ZS, mk.TOP5))),
    ("linear probe top-1", mk.probe(mk.metric(mk.ALL, mk.TOP1))),
)

#: The columns whose paired difference to the baseline is shown.
DELTA_COLUMNS: tuple[tuple[str, str], ...] = (
    ("Δ T→A R@5 transport", mk.scored("transport", mk.metric(mk.T2A, mk.R5))),
    ("Δ ZS top-1", mk.scored("cosine", mk.metric(mk.ZS, mk.TOP1))),
    ("Δ ZS top-5", mk.scored("cosine", mk.metric(mk.ZS, mk.TOP5))),
)


@dataclass(frozen=True)
class Row:
    """One compared row: the runs (suite records) of one setting family of one suite file."""

    name: str
    source: str
    runs: list[dict[str, Any]]


def by_seed(row: Row) -> dict[int, dict[str, dict[str, float]]]:
    """``{seed: {held-out package: flat metrics}}`` of a row's runs."""
    out: dict[int, dict[str, dict[str, float]]] = defaultdict(dict)
    for r in row.runs:
        out[int(r["seed"])][str(r.get("group") or r["setting"])] = r["metrics"]
    return dict(out)


def parse_spec(spec: str) -> tuple[Path, str | None, str | None]:
    """``PATH[::LABEL][=NAME]`` → (path, label or None, row name or None)."""
    name = None
    if "=" in spec.rsplit("::", 1)[-1]:
        spec, name = spec.rsplit("=", 1)
    path, _, label = spec.partition("::")
    return Path(path), (label or None), (name or None)


def load_row(spec: str) -> Row:
    """The runs of one ``PATH[::LABEL][=NAME]`` spec, grouped by seed and held-out package."""
    path, label, name = parse_spec(spec)
    if not path.is_file():
        raise ConfigError(f"{path}: no such suite result; write one with "
                          "`python -m training experiments --suite NAME --out DIR` first")
    try:
        payload = json.loads(path.read_text())
        runs: list[dict[str, Any]] = payload["runs"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a suite result written by `python -m training experiments` ({exc})") from exc
    labels = sorted({r["label"] for r in runs})
    if label is None:
        if len(labels) != 1:
            raise ConfigError(f"{path} holds {len(labels)} setting families; name one after '::': {labels}")
        label = labels[0]
    chosen = [r for r in runs if r["label"] == label]
    if not chosen:
        raise ConfigError(f"{path}: no runs labelled {label!r}; its labels: {labels}")
    return Row(name or label, f"{path}::{label}", chosen)


def seed_means(row: Row, key: str) -> list[float]:
    """Per seed, the mean of ``key`` over the row's held-out packages
    (:func:`training.experiments.aggregate.seed_means`)."""
    return per_seed_means(row.runs, key)


def paired_delta(row: Row, base: Row, key: str) -> list[float]:
    """Per shared seed, the mean over shared packages of (row − baseline) for ``key``."""
    mine, theirs = by_seed(row), by_seed(base)
    out = []
    for seed in sorted(set(mine) & set(theirs)):
        a, b = mine[seed], theirs[seed]
        diffs = [a[p][key] - b[p][key] for p in sorted(set(a) & set(b))
                 if a[p].get(key) is not None and b[p].get(key) is not None]
        if diffs:
            out.append(sum(diffs) / len(diffs))
    return out


def _cell(values: Sequence[float], sign: bool = False) -> str:
    if not values:
        return "–"
    mean, std = mean_std(values)
    return f"{mean:+.3f} ± {std:.3f}" if sign else f"{mean:.3f} ± {std:.3f}"


def compare(rows: Sequence[Row]) -> list[str]:
    """Markdown lines: one table of the rows' metrics and paired differences to the first row."""
    if len(rows) < 2:
        raise ConfigError("compare-suites needs at least two rows (a baseline and one change)")
    base = rows[0]
    head = ["row"] + [t for t, _ in COLUMNS] + [t for t, _ in DELTA_COLUMNS] + ["seeds × packages"]
    body = []
    for row in rows:
        cells = [row.name] + [_cell(seed_means(row, key)) for _, key in COLUMNS]
        cells += ["–" if row is base else _cell(paired_delta(row, base, key), sign=True) for _, key in DELTA_COLUMNS]
        seeds = by_seed(row)
        cells.append(f"{len(seeds)} × {max(len(v) for v in seeds.values())}")
        body.append(cells)
    sources = [f"* {r.name}: `{r.source}`" for r in rows]
    return ([markdown_table(head, body), "",
             "Mean over held-out packages per seed, then mean ± sample std over seeds; Δ: paired with the "
             "first row (per seed, mean over the packages both evaluated of row − first row), mean ± std over "
             "seeds. ZS: 50-way ESC-50 zero-shot with the default prompts; linear probe: a supervised "
             "reference, not zero-shot (logistic regression on the run's audio-backbone features, fine-tuned "
             "where the row fine-tunes, fitted on the training packages' labelled clips). Rows:", ""] + sources)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training compare-suites", description=__doc__.split("\n")[0])
    parser.add_argument("rows", nargs="+", help="PATH[::LABEL][=ROW NAME]; the first is the baseline")
    parser.add_argument("--out", help="also write the table to this Markdown file")
    parser.add_argument("--title", default="", help="a heading line written above the table")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        lines = compare([load_row(spec) for spec in args.rows])
    except ConfigError as exc:
        parser.exit(2, f"error: {exc}\n")
    command = f"Command: `python -m training compare-suites {shlex.join(argv)}`"
    text = "\n".join(([f"## {args.title}", ""] if args.title else []) + [command, ""] + lines) + "\n"
    sys.stdout.write(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        logger.info("wrote %s", args.out)
    return 0
