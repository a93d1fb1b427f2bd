"""The end-of-build summary: clips per package and split, hours, ESC-50 counts; and the list of
ESC-50 classes with fewer than 10 training clips in two manifests (``python -m training.corpus.summary``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from atr_demo.fileio import markdown_table

from training.corpus.clip import ESC50_CLASSES, SPLITS, ManifestRow


def format_summary(rows: list[ManifestRow]) -> str:
    """A Markdown summary of the manifest rows."""
    per_package: dict[str, Counter[str]] = defaultdict(Counter)
    seconds: Counter[str] = Counter()
    groups: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        per_package[row.package][row.split] += 1
        seconds[row.package] += row.duration_s
        groups[row.package].add(row.group)
    totals: Counter[str] = Counter()
    table = []
    for package in sorted(per_package):
        counts = per_package[package]
        totals.update(counts)
        table.append([package, *(str(counts[s]) for s in SPLITS), str(sum(counts.values())),
                      str(len(groups[package])), f"{seconds[package] / 60:.1f}"])
    all_groups = len({row.group for row in rows})
    total_s = sum(seconds.values())
    table.append(["**total**", *(str(totals[s]) for s in SPLITS), str(len(rows)), str(all_groups),
                  f"{total_s / 60:.1f}"])
    head = ["package", *SPLITS, "rows", "groups", "minutes"]
    lines = ["# Corpus summary", "", markdown_table(head, table, right=range(1, len(head)))]
    lines += ["", f"Audio: {total_s / 3600:.2f} hours in {len(rows)} rows.", ""]

    labelled = [row for row in rows if row.esc50]
    lines.append(f"ESC-50 labelled rows: {len(labelled)} ({len({r.esc50 for r in labelled})} classes)")
    per_class: dict[str, Counter[str]] = defaultdict(Counter)
    for row in labelled:
        per_class[str(row.esc50)][row.split] += 1
    table = [[name, *(str(per_class[name][s]) for s in SPLITS), str(sum(per_class[name].values()))]
             for name in sorted(per_class)]
    head = ["ESC-50 class", *SPLITS, "rows"]
    lines += ["", markdown_table(head, table, right=range(1, len(head))), ""]
    return "\n".join(lines)


FEW_CLIPS = 10
"""ESC-50 classes with fewer training rows than this are listed as under-covered."""


def class_counts(manifest: Path, split: str = "train") -> tuple[Counter[str], Counter[str], set[str]]:
    """Rows per ESC-50 class in ``split`` of a ``manifest.jsonl``: all of them, per package, packages.

    Returns ``(per_class, per_class_and_package, packages)``; the middle counter is keyed
    ``"<class>\\t<package>"``.
    """
    per_class: Counter[str] = Counter()
    per_package: Counter[str] = Counter()
    packages: set[str] = set()
    for line in manifest.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        packages.add(str(row["package"]))
        if row.get("split") == split and row.get("esc50"):
            per_class[str(row["esc50"])] += 1
            per_package[f"{row['esc50']}\t{row['package']}"] += 1
    return per_class, per_package, packages


def format_few_clips(before: Path, after: Path, split: str = "train", threshold: int = FEW_CLIPS) -> str:
    """Markdown: the ESC-50 classes with fewer than ``threshold`` ``split`` rows before and after.

    One table row per class under the threshold in ``before`` (or in ``after``): its count in
    each manifest and how many rows the packages that only ``after`` has contribute.
    """
    old, _, old_packages = class_counts(before, split)
    new, new_by_package, new_packages = class_counts(after, split)
    added_packages = sorted(new_packages - old_packages)
    table = []
    names = sorted((c for c in ESC50_CLASSES if old[c] < threshold or new[c] < threshold), key=lambda c: (old[c], c))
    for name in names:
        added = sum(new_by_package[f"{name}\t{p}"] for p in added_packages)
        table.append([name, str(old[name]), str(new[name]), str(added), "yes" if new[name] < threshold else ""])
    head = ["ESC-50 class", f"{split} before", f"{split} after", "from new packages", f"still < {threshold}"]
    before_list = [c for c in names if old[c] < threshold]
    after_list = [c for c in names if new[c] < threshold]
    lines = [
        f"Before ({before}): {len(before_list)} classes with fewer than {threshold} {split} clips: "
        + ", ".join(before_list) + ".",
        "",
        f"After ({after}; new packages: {', '.join(added_packages) or 'none'}): {len(after_list)} classes: "
        + ", ".join(after_list) + ".",
        "",
        markdown_table(head, table, right={1, 2, 3}),
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.corpus.summary --before OLD/manifest.jsonl --after NEW/manifest.jsonl``."""
    parser = argparse.ArgumentParser(
        prog="python -m training.corpus.summary",
        description="List the ESC-50 classes with fewer than N training clips in two corpus manifests.",
    )
    parser.add_argument("--before", type=Path, required=True, help="manifest.jsonl of the earlier corpus")
    parser.add_argument("--after", type=Path, required=True, help="manifest.jsonl of the new corpus")
    parser.add_argument("--split", default="train", help="split to count (default: train)")
    parser.add_argument("--threshold", type=int, default=FEW_CLIPS, help=f"fewer than this (default: {FEW_CLIPS})")
    args = parser.parse_args(argv)
    sys.stdout.write(format_few_clips(args.before, args.after, args.split, args.threshold))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
