"""The end-of-build summary: clips per package and split, hours, ESC-50 counts."""

from __future__ import annotations

from collections import Counter, defaultdict

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
    lines = [
        "# Corpus summary",
        "",
        "| package | train | validation | test | rows | groups | minutes |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    totals: Counter[str] = Counter()
    for package in sorted(per_package):
        counts = per_package[package]
        totals.update(counts)
        cells = " | ".join(str(counts[s]) for s in SPLITS)
        lines.append(
            f"| {package} | {cells} | {sum(counts.values())} | {len(groups[package])} | {seconds[package] / 60:.1f} |"
        )
    all_groups = len({row.group for row in rows})
    total_cells = " | ".join(str(totals[s]) for s in SPLITS)
    total_s = sum(seconds.values())
    lines.append(f"| **total** | {total_cells} | {len(rows)} | {all_groups} | {total_s / 60:.1f} |")
    lines += ["", f"Audio: {total_s / 3600:.2f} hours in {len(rows)} rows.", ""]

    labelled = [row for row in rows if row.esc50]
    lines.append(f"ESC-50 labelled rows: {len(labelled)} ({len({r.esc50 for r in labelled})} classes)")
    lines += ["", "| ESC-50 class | train | validation | test | rows |", "|---|---:|---:|---:|---:|"]
    per_class: dict[str, Counter[str]] = defaultdict(Counter)
    for row in labelled:
        per_class[str(row.esc50)][row.split] += 1
    for name in sorted(per_class):
        counts = per_class[name]
        cells = " | ".join(str(counts[s]) for s in SPLITS)
        lines.append(f"| {name} | {cells} | {sum(counts.values())} |")
    lines.append("")
    return "\n".join(lines)
