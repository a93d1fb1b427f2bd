"""Fetching Debian packages (``apt-get download``) and extracting only their sounds.

Packages are never installed: the ``.deb`` is downloaded into ``<cache>/debs`` and the
wanted members are unpacked with ``dpkg-deb --fsys-tarfile | tar -x --wildcards`` into
``<cache>/extracted/<package>``. A ``.done`` marker file makes both steps resumable.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

DONE_MARKER = ".done"


class PackageError(RuntimeError):
    """Downloading or unpacking a package failed."""


def find_deb(debs_dir: Path, package: str) -> Path | None:
    """The cached ``<package>_<version>_<arch>.deb`` (newest name if several), or None."""
    candidates = sorted(debs_dir.glob(f"{package}_*.deb"))
    return candidates[-1] if candidates else None


def download(package: str, debs_dir: Path) -> Path:
    """``apt-get download`` the package into ``debs_dir`` unless it is already there."""
    debs_dir.mkdir(parents=True, exist_ok=True)
    existing = find_deb(debs_dir, package)
    if existing is not None:
        log.info("%s: using cached %s", package, existing.name)
        return existing
    if shutil.which("apt-get") is None:
        raise PackageError(f"{package}: apt-get not found and no cached .deb in {debs_dir}")
    log.info("%s: apt-get download", package)
    result = subprocess.run(["apt-get", "download", package], cwd=debs_dir, capture_output=True, text=True)
    deb = find_deb(debs_dir, package)
    if result.returncode != 0 or deb is None:
        raise PackageError(f"{package}: apt-get download failed: {result.stderr.strip()[-500:]}")
    return deb


def extract(deb: Path, target: Path, patterns: list[str]) -> None:
    """Unpack the members of ``deb`` matching the shell ``patterns`` into ``target``.

    Also unpacks ``usr/share/doc/*/copyright`` (needed for the licence files). Writes the
    done marker last, so an interrupted extraction is redone on the next run.
    """
    if is_done(target):
        return
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    wildcards = [*patterns, "./usr/share/doc/*/copyright"]
    log.info("extracting %s (%s)", deb.name, ", ".join(patterns))
    dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    tar = subprocess.run(
        ["tar", "-x", "-C", str(target), "--wildcards", "--no-same-owner", *wildcards],
        stdin=dpkg.stdout,
        capture_output=True,
        text=True,
    )
    assert dpkg.stdout is not None
    dpkg.stdout.close()
    dpkg_rc = dpkg.wait()
    # tar exits 2 when a wildcard matched nothing (e.g. an optional pattern); judge by content.
    if dpkg_rc != 0 or not any(p.is_file() for p in target.rglob("*")):
        raise PackageError(
            f"extracting {deb.name} failed (dpkg-deb {dpkg_rc}, tar {tar.returncode}: {tar.stderr[-500:]})"
        )
    mark_done(target)


def is_done(directory: Path) -> bool:
    return (directory / DONE_MARKER).is_file()


def mark_done(directory: Path) -> None:
    (directory / DONE_MARKER).write_text("ok\n", encoding="utf-8")


def copyright_file(extracted: Path, package: str) -> Path | None:
    """``usr/share/doc/<package>/copyright`` inside an extracted tree, if present."""
    path = extracted / "usr" / "share" / "doc" / package / "copyright"
    return path if path.is_file() else None
