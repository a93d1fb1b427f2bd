"""The training log: ``out/log.jsonl`` (one JSON object a line) and, optionally, TensorBoard.

Records are epoch records (``{"epoch": …, "train_loss": …, "val": {…}, …}``) and, with
``log_every_steps``, step records (``{"kind": "step", "step": …, "loss": …, "lr": {…}, …}``).
Every record carries ``world_size`` and ``global_batch_size``. Only rank 0 writes (the others
hold a disabled :class:`RunLog`).

Log and checkpoint stay a consistent pair: each checkpoint folder holds a copy of the log up
to its own record (:func:`snapshot_into`), and a resumed run restores ``log.jsonl`` from the
checkpoint's copy (:func:`restore_from`) — whatever the kill left (a record appended after the
checkpoint it belongs to was swapped in, or one appended for a step the checkpoint never saw).
TensorBoard files go to ``out/tb/`` (event files are never pushed to the Hub).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

LOG_NAME = "log.jsonl"
TB_DIR = "tb"


def _scalars(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested record, keyed ``a/b/c``."""
    out: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_scalars(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out


class RunLog:
    """Appends records to ``out/log.jsonl`` (and TensorBoard) on the main process only."""

    def __init__(self, out: Path, enabled: bool, world_size: int, global_batch_size: int,
                 tensorboard: bool = False) -> None:
        self.path = out / LOG_NAME
        self.enabled = enabled
        self.extra = {"world_size": world_size, "global_batch_size": global_batch_size}
        self.writer: Any = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # tensorboard is an optional train dependency

            self.writer = SummaryWriter(log_dir=str(out / TB_DIR))

    def write(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append ``record`` (plus ``world_size`` / ``global_batch_size``); return what was written."""
        full = {**record, **self.extra}
        if not self.enabled:
            return full
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(full) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if self.writer is not None:
            kind = full.get("kind", "epoch")
            step = int(full.get("step", full.get("steps", 0)))
            skip = {"epoch", "step", "steps", "world_size", "global_batch_size"}
            for name, value in _scalars({k: v for k, v in full.items() if k not in skip}).items():
                self.writer.add_scalar(f"{kind}/{name}", value, step)
            self.writer.flush()
        return full

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def snapshot_into(out: Path, folder: Path) -> None:
    """Copy the current ``out/log.jsonl`` into a checkpoint folder being written."""
    source = out / LOG_NAME
    if source.is_file():
        shutil.copyfile(source, folder / LOG_NAME)
    else:
        (folder / LOG_NAME).write_text("", encoding="utf-8")


def restore_from(out: Path, checkpoint: Path) -> int:
    """Make ``out/log.jsonl`` the log of ``checkpoint`` (its copy); return the number of records.

    A checkpoint written before logs were snapshotted has no copy: the log is then kept.
    """
    copy = checkpoint / LOG_NAME
    if not copy.is_file():
        return -1
    text = copy.read_text(encoding="utf-8")
    tmp = out / f".{LOG_NAME}.tmp-{os.getpid()}"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out / LOG_NAME)
    return sum(1 for line in text.splitlines() if line.strip())


def clean_stale_temporaries(out: Path) -> list[str]:
    """Remove temporary folders and files an interrupted run left in ``out`` (``.last.tmp-*``,
    ``.best.tmp-*``, ``.log.jsonl.tmp-*``); return their names."""
    removed = []
    for path in sorted(out.glob(".*.tmp-*")):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path.name)
    if removed:
        logger.info("removed stale temporaries of an interrupted run: %s", ", ".join(removed))
    return removed
