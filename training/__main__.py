"""Command-line entry point of the training module: ``python -m training <command> [...]``.

Each command lives in its own module exposing ``main(argv: list[str] | None) -> int``; this
file only dispatches, so that ``python -m training --help`` stays fast.
"""

from __future__ import annotations

import importlib
import logging
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "convert-aisfx": ("training.convert_aisfx", "convert the aiSFX CNN weights from the aisfx wheel to safetensors"),
    "build-corpus": ("training.corpus.build", "download the Debian sound packages and build the corpus"),
    "audit-captions": (
        "training.corpus.audit", "flag corpus clips whose caption disagrees with their audio neighbours"
    ),
    "build-multilingual": (
        "training.multilingual", "write the multilingual split (Tux Paint descriptions + translations)"
    ),
    "bundle-model": (
        "training.bundle_model", "copy a trained checkpoint to bundled_model/, evaluate it, write its model card"
    ),
    "bundle-gallery": ("training.bundle_gallery", "every redistributable corpus clip into the app's gallery"),
    "features": ("training.features", "cache frozen-backbone features of a training config's data"),
    "train": ("training.train", "train a model: --config FILE [--set key=value ...] [--resume]"),
    "evaluate": ("training.evaluate", "retrieval, zero-shot and modality-gap metrics of a checkpoint"),
    "analyse": (
        "training.analyse",
        "k-NN graph similarity and linear CKA of a checkpoint's audio and text spaces (or two checkpoints)",
    ),
    "experiments": ("training.experiments", "run an experiment suite over seeds (its --help lists them), write tables"),
    "compare-suites": (
        "training.experiments.compare", "rows of several suite results side by side, with paired gains over the first"
    ),
    "push": ("training.push", "write the model card and upload a checkpoint folder to the Hugging Face Hub"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        lines = ["usage: python -m training <command> [options]", "", "commands:"]
        lines += [f"  {name:<16} {help_}" for name, (_, help_) in COMMANDS.items()]
        sys.stdout.write("\n".join(lines) + "\n")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        sys.stderr.write(f"unknown command {name!r}; run `python -m training --help`\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
