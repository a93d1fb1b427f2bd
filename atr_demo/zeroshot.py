"""Zero-shot audio classification: labels become text prompts, ranked like retrieval.

A label's embedding is the normalised mean of the embeddings of its prompts (prompt
ensembling): every template applied to the label's readable name, plus any natural-language
descriptions given for it (the built-in ESC-50 set has a few per class).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from atr_demo.errors import ConfigError
from atr_demo.model import ATRModel
from atr_demo.retrieval import score_matrix, scores_to_probabilities

#: The 50 ESC-50 classes in ``target`` order (0–49), spelt as in ``meta/esc50.csv``.
ESC50_CLASSES: tuple[str, ...] = (
    "dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow",
    "rain", "sea_waves", "crackling_fire", "crickets", "chirping_birds", "water_drops", "wind",
    "pouring_water", "toilet_flush", "thunderstorm", "crying_baby", "sneezing", "clapping",
    "breathing", "coughing", "footsteps", "laughing", "brushing_teeth", "snoring",
    "drinking_sipping", "door_wood_knock", "mouse_click", "keyboard_typing", "door_wood_creaks",
    "can_opening", "washing_machine", "vacuum_cleaner", "clock_alarm", "clock_tick",
    "glass_breaking", "helicopter", "chainsaw", "siren", "car_horn", "engine", "train",
    "church_bells", "airplane", "fireworks", "hand_saw",
)

#: A few plain sentences per ESC-50 class describing what is heard (used in the prompt ensemble).
ESC50_DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    "dog": ("a dog barks",), "rooster": ("a rooster crows",), "pig": ("a pig grunts and oinks",),
    "cow": ("a cow moos",), "frog": ("a frog croaks",), "cat": ("a cat meows",),
    "hen": ("a hen clucks",), "insects": ("insects buzz",), "sheep": ("a sheep bleats",),
    "crow": ("a crow caws",), "rain": ("rain falls",), "sea_waves": ("waves crash on the shore",),
    "crackling_fire": ("a fire crackles",), "crickets": ("crickets chirp at night",),
    "chirping_birds": ("birds chirp and sing",), "water_drops": ("water drips",),
    "wind": ("the wind blows",), "pouring_water": ("water is poured into a glass",),
    "toilet_flush": ("a toilet flushes",), "thunderstorm": ("thunder rumbles in a storm",),
    "crying_baby": ("a baby cries",), "sneezing": ("a person sneezes",),
    "clapping": ("people clap their hands",), "breathing": ("a person breathes heavily",),
    "coughing": ("a person coughs",), "footsteps": ("footsteps walk past",),
    "laughing": ("a person laughs",), "brushing_teeth": ("someone brushes their teeth",),
    "snoring": ("a person snores",), "drinking_sipping": ("someone sips a drink",),
    "door_wood_knock": ("someone knocks on a wooden door",), "mouse_click": ("a computer mouse clicks",),
    "keyboard_typing": ("someone types on a keyboard",), "door_wood_creaks": ("a wooden door creaks",),
    "can_opening": ("a can is opened",), "washing_machine": ("a washing machine runs",),
    "vacuum_cleaner": ("a vacuum cleaner hums",), "clock_alarm": ("an alarm clock rings",),
    "clock_tick": ("a clock ticks",), "glass_breaking": ("glass shatters",),
    "helicopter": ("a helicopter flies overhead",), "chainsaw": ("a chainsaw cuts wood",),
    "siren": ("a siren wails",), "car_horn": ("a car horn honks",), "engine": ("an engine runs",),
    "train": ("a train passes by",), "church_bells": ("church bells ring",),
    "airplane": ("an airplane flies overhead",), "fireworks": ("fireworks explode",),
    "hand_saw": ("someone saws wood by hand",),
}

DEFAULT_TEMPLATES: tuple[str, ...] = ("the sound of {}", "this is a sound of {}", "{}")


def readable(label: str) -> str:
    """``crackling_fire`` → ``crackling fire``."""
    return " ".join(label.replace("_", " ").split())


def load_labels(spec: str) -> list[str]:
    """``"esc50"`` → the ESC-50 classes; otherwise a text file with one label per line."""
    if spec == "esc50":
        return list(ESC50_CLASSES)
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"labels {spec!r} is neither 'esc50' nor a file with one label per line")
    return parse_labels(path.read_text(encoding="utf-8"))


def parse_labels(text: str) -> list[str]:
    """One label per non-empty line (duplicates dropped, order kept); raises on an empty list."""
    labels = list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))
    if not labels:
        raise ConfigError("the label list is empty: give at least one label, one per line")
    return labels


def prompts_for(label: str, templates: tuple[str, ...] | list[str], descriptions: bool = True) -> list[str]:
    """Every template filled with the readable label, plus the built-in descriptions if any."""
    for template in templates:
        if "{}" not in template:
            raise ConfigError(f"prompt template {template!r} has no '{{}}' placeholder for the label")
    prompts = [t.format(readable(label)) for t in templates]
    if descriptions:
        prompts += list(ESC50_DESCRIPTIONS.get(label, ()))
    return list(dict.fromkeys(prompts))


@dataclass
class LabelSet:
    """Labels and their ensembled prompt embeddings (L, d)."""

    labels: list[str]
    embeddings: torch.Tensor


def embed_labels(
    model: ATRModel,
    labels: list[str],
    templates: tuple[str, ...] | list[str] | None = None,
    descriptions: bool = True,
    embed: Callable[[list[str]], torch.Tensor] | None = None,
) -> LabelSet:
    """Prompt-ensemble embeddings of ``labels`` → :class:`LabelSet` with (L, d) unit rows.

    ``embed`` maps prompts to (N, d) joint-space embeddings; ``model.embed_texts`` by default
    (training passes one that reads cached text features).
    """
    if not labels:
        raise ConfigError("no labels to classify with")
    templates = tuple(templates or model.config.prompt_templates)
    per_label = [prompts_for(label, templates, descriptions) for label in labels]
    flat = [p for prompts in per_label for p in prompts]
    emb = (embed or model.embed_texts)(flat)
    out, start = [], 0
    for prompts in per_label:
        out.append(F.normalize(emb[start : start + len(prompts)].mean(dim=0), dim=-1))
        start += len(prompts)
    return LabelSet(labels=list(labels), embeddings=torch.stack(out))


def classify(
    model: ATRModel,
    audio: torch.Tensor,
    label_set: LabelSet,
    mode: str = "cosine",
    anchors: torch.Tensor | None = None,
) -> torch.Tensor:
    """(n, d) audio embeddings → (n, L) label probabilities (rows sum to 1).

    In ``transport`` mode the clips are solved jointly (plus ``anchors``, other clips, when n is
    small), so that each label receives an equal share of the mass — the class-balancing
    correction against hub labels.
    """
    scores = score_matrix(
        audio, label_set.embeddings, mode=mode, metric=model.metric, eps=model.config.eps,
        anchors=anchors, mass=model.config.mass,
    )
    return scores_to_probabilities(scores, mode, model.config.eps)
