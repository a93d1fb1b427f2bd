"""Attribution files: ``LICENSES.csv``, ``LICENSES.md`` and ``licenses/<package>.copyright``."""

from __future__ import annotations

import csv
import shutil
from collections import Counter, defaultdict
from pathlib import Path

from atr_demo.fileio import markdown_table

from training.corpus.clip import ManifestRow


def write_licences(
    rows: list[ManifestRow],
    copyrights: dict[str, Path | None],
    package_licences: dict[str, str],
    out: Path,
) -> None:
    """Write one attribution line per source file and copy each package's copyright file."""
    folder = out / "licenses"
    folder.mkdir(parents=True, exist_ok=True)
    copied: dict[str, str | None] = {}
    for package, path in sorted(copyrights.items()):
        if path is not None:
            target = folder / f"{package}.copyright"
            shutil.copyfile(path, target)
            copied[package] = f"licenses/{package}.copyright"
        else:
            copied[package] = None

    by_source: dict[tuple[str, str], list[ManifestRow]] = defaultdict(list)
    for row in rows:
        by_source[(row.package, row.original_name)].append(row)

    with (out / "LICENSES.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["clip_ids", "package", "original_name", "author", "licence", "package_copyright"])
        for (package, original), items in sorted(by_source.items()):
            first = items[0]
            writer.writerow(
                [
                    " ".join(sorted(r.clip_id for r in items)),
                    package,
                    original,
                    first.author or "",
                    first.licence,
                    copied.get(package) or "",
                ]
            )

    lines = [
        "# Licences of the sound-effects corpus",
        "",
        "Every clip comes from a Debian package, unmodified except for decoding, down-mixing to",
        "mono, cutting long recordings into segments and re-encoding as 16-bit FLAC. The",
        "per-clip attribution (package, original file, author where known, licence) is in",
        "`LICENSES.csv` and in `manifest.jsonl`; each package's Debian copyright file, which",
        "holds the full licence texts, is copied to `licenses/<package>.copyright`.",
        "",
    ]
    per_package: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        per_package[row.package][row.licence] += 1
    table = []
    for package in sorted(package_licences):
        counts = per_package.get(package, Counter())
        licences = ", ".join(f"{name} ({n})" for name, n in sorted(counts.items()))
        copyright_ref = copied.get(package) or "(not found)"
        table.append([package, package_licences[package], str(sum(counts.values())), licences, copyright_ref])
    head = ["package", "package licence", "clips", "licences of the clips", "copyright file"]
    lines += [markdown_table(head, table, right={2}), ""]
    (out / "LICENSES.md").write_text("\n".join(lines), encoding="utf-8")
