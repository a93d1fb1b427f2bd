"""``python -m training bundle-model``: turn a trained checkpoint into the bundled model.

Copies ``config.json``, ``model.safetensors``, ``train_config.json`` and the trained towers'
sub-folders (``audio_backbone/``, ``text_backbone/``) of a checkpoint folder into ``--out``
(default ``bundled_model/``), checks that the copy loads strictly, evaluates it on the held-out
split (``eval.json``), copies an optional notes file (generalisation tables, limitations) as
``NOTES.md``, and writes the model card ``README.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

from atr_demo.config import ModelConfig
from atr_demo.model import CONFIG_NAME, TOWER_DIRS, WEIGHTS_NAME, load_model

from training.model_card import NOTES_NAME, write_model_card

logger = logging.getLogger(__name__)

COPIED = (CONFIG_NAME, WEIGHTS_NAME, "train_config.json")


def bundle(
    run: Path, out: Path, data: list[str], split: str = "test", notes: Path | None = None, name: str | None = None
) -> Path:
    """Copy checkpoint ``run`` to ``out`` (renamed ``name``), evaluate it on ``data``/``split``, write its card."""
    from training import evaluate

    out.mkdir(parents=True, exist_ok=True)
    for file_name in COPIED:
        if (run / file_name).is_file():
            shutil.copyfile(run / file_name, out / file_name)
    for folder in TOWER_DIRS.values():  # a trained hf tower's config and tokenizer / feature extractor
        if (run / folder).is_dir():
            shutil.copytree(run / folder, out / folder, dirs_exist_ok=True)
    if name:
        config = ModelConfig.load(out / CONFIG_NAME)
        config.name = name
        config.save(out / CONFIG_NAME)
    load_model(str(out))  # strict: fails here, not in the app, if the copy is incomplete
    args = ["--model", str(out), "--split", split, "--out", str(out / "eval.json")]
    for d in data:
        args += ["--data", d]
    if evaluate.main(args) != 0:
        raise SystemExit("evaluation of the bundled model failed")
    if notes is not None:
        shutil.copyfile(notes, out / NOTES_NAME)
    evaluation = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    return write_model_card(out, evaluation)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training bundle-model", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="checkpoint folder to bundle (e.g. runs/x/best)")
    parser.add_argument("--data", required=True, action="append", help="evaluation dataset (repeatable)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--notes", default=None, help="Markdown to include in the model card")
    parser.add_argument("--name", default="atr-demo-mltm", help="model name written into config.json")
    parser.add_argument("--out", default="bundled_model")
    args = parser.parse_args(argv)
    notes = Path(args.notes) if args.notes else None
    card = bundle(Path(args.run), Path(args.out), args.data, args.split, notes, args.name)
    logger.info("bundled model written to %s (card %s)", args.out, card)
    return 0
