"""The end-of-build summary: clips per package and split, hours, ESC-50 counts."""

from __future__ import annotations

from collections import Counter, defaultdict

from atr_demo.fileio import markdown_table

from training.corpus.clip import SPLITS, ManifestRow


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
