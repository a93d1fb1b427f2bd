"""Zero-shot audio classification: labels become text prompts, ranked like retrieval.

A label's embedding is the normalised mean of the embeddings of its prompts (prompt
ensembling): every template applied to the label's readable name, plus any natural-language
descriptions given for it (the built-in ESC-50 set has a few per class).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from atr_demo.errors import ConfigError, InputFileError, LimitError
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
    if path.is_dir():
        raise InputFileError(f"labels {spec!r} is a folder; give 'esc50' or a text file with one label per line")
    if not path.is_file():
        raise InputFileError(f"labels {spec!r} is neither 'esc50' nor a file with one label per line")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputFileError(
            f"labels file {spec!r} cannot be read ({exc.strerror or exc}); make it readable (`chmod a+r FILE`)"
        ) from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputFileError(
            f"labels file {spec!r} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 FILE > labels.txt`"
        ) from exc
    try:
        return parse_labels(text)
    except ConfigError as exc:
        raise InputFileError(f"labels file {spec!r}: {exc}") from exc


def parse_labels(text: str) -> list[str]:
    """One label per non-empty line (duplicates dropped, order kept); raises on an empty list."""
    labels = list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))
    if not labels:
        raise ConfigError("the label list is empty: give at least one label, one per line")
    return labels


def check_template(template: str) -> str:
    """``template`` if it holds exactly one ``{}`` (the label) and no other ``{...}`` field.

    Literal braces are written ``{{`` and ``}}``, as in :meth:`str.format`. Raises
    :class:`ConfigError` naming the template and the fix otherwise.
    """
    example = "e.g. 'the sound of {}'"
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ConfigError(
            f"prompt template {template!r} has an unmatched brace ({exc}); write '{{{{' or '}}}}' for a literal "
            f"brace and '{{}}' once where the label goes, {example}"
        ) from exc
    stray = [f"{{{name}{'!' + conv if conv else ''}{':' + spec if spec else ''}}}" for name, spec, conv in fields
             if name or spec or conv]
    if stray:
        raise ConfigError(
            f"prompt template {template!r} has {', '.join(repr(s) for s in stray)}; use '{{}}' (empty braces) "
            f"once where the label goes, {example}"
        )
    if len(fields) != 1:
        what = "no '{}' placeholder" if not fields else f"{len(fields)} '{{}}' placeholders"
        raise ConfigError(f"prompt template {template!r} has {what} for the label; put '{{}}' exactly once, {example}")
    return template


def prompts_for(label: str, templates: tuple[str, ...] | list[str], descriptions: bool = True) -> list[str]:
    """Every template filled with the readable label, plus the built-in descriptions if any."""
    for template in templates:
        check_template(template)
    prompts = [t.format(readable(label)) for t in templates]
    if descriptions:
        prompts += list(ESC50_DESCRIPTIONS.get(label, ()))
    return list(dict.fromkeys(prompts))


def check_prompt_budget(
    labels: Sequence[str], templates: Sequence[str], max_prompts: int, descriptions: bool = True
) -> int:
    """Number of prompts ``labels`` × ``templates`` (+ built-in descriptions) make; :class:`LimitError`
    stating the bound when it is over ``max_prompts`` (checked before anything is embedded)."""
    n = len(labels) * len(templates)
    if descriptions:
        n += sum(len(ESC50_DESCRIPTIONS.get(label, ())) for label in labels)
    if n > max_prompts:
        raise LimitError(
            f"{len(labels)} labels × {len(templates)} template(s) make {n} prompts, more than the limit of "
            f"{max_prompts} prompts per request; use fewer labels or templates"
        )
    return n


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
    max_prompts: int | None = None,
) -> LabelSet:
    """Prompt-ensemble embeddings of ``labels`` → :class:`LabelSet` with (L, d) unit rows.

    ``embed`` maps prompts to (N, d) joint-space embeddings; ``model.embed_texts`` by default
    (training passes one that reads cached text features). With ``max_prompts``, more prompts
    than that raise :class:`LimitError` before anything is embedded.
    """
    if not labels:
        raise ConfigError("no labels to classify with")
    templates = tuple(templates or model.config.prompt_templates)
    if max_prompts is not None:
        check_prompt_budget(labels, templates, max_prompts, descriptions)
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
