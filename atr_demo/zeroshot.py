"""Zero-shot audio classification: labels become text prompts, ranked like retrieval.

A label's embedding is the normalised mean of the embeddings of its prompts (prompt
ensembling): every template applied to the label's readable name, plus any natural-language
descriptions given for it (the built-in ESC-50 set has 3-5 per class, written from how it sounds).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence
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

#: 3-5 sentences per ESC-50 class, written from how the class sounds (its acoustic events: barks,
#: growls and yaps, not a picture of a dog); the first is the plain one of :data:`ESC50_DESCRIPTIONS`.
#: The zero-shot default (:func:`description_table`); compared in ``results/hubness.md``.
ESC50_SOUND_DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    "dog": ("a dog barks", "a dog growls and yelps", "a small dog yaps", "a big dog barks loudly again and again",
            "a dog whines and howls"),
    "rooster": ("a rooster crows", "a loud cock-a-doodle-doo", "a rooster's call rises and falls",
                "a rooster crows at dawn on a farm"),
    "pig": ("a pig grunts and oinks", "a pig squeals", "pigs snort and grunt while they eat",
            "low snorting grunts of a pig"),
    "cow": ("a cow moos", "a long low moo", "cattle low in a field", "a cow bellows"),
    "frog": ("a frog croaks", "frogs croak in a pond at night", "a repeated ribbit", "a chorus of croaking frogs"),
    "cat": ("a cat meows", "a cat purrs", "a cat hisses and yowls", "a kitten mews"),
    "hen": ("a hen clucks", "chickens cluck and cackle", "a hen cackles loudly", "clucking in a farmyard"),
    "insects": ("insects buzz", "a fly buzzes around", "a bee hums", "a mosquito whines", "a swarm of insects drones"),
    "sheep": ("a sheep bleats", "a lamb baas", "sheep bleat in a field", "a shaky baa"),
    "crow": ("a crow caws", "crows caw loudly", "harsh cawing of a crow", "a raven croaks"),
    "rain": ("rain falls", "rain patters on a roof", "heavy rain pours down", "raindrops hit a window",
             "the steady hiss of rain"),
    "sea_waves": ("waves crash on the shore", "the surf roars and washes over a beach", "ocean waves break and recede",
                  "water surges and splashes on rocks"),
    "crackling_fire": ("a fire crackles", "wood pops and crackles in a fireplace", "a campfire burns and hisses",
                       "flames roar and crackle"),
    "crickets": ("crickets chirp at night", "a cricket chirps steadily", "the high trilling of crickets",
                 "insects chirp in the grass at night"),
    "chirping_birds": ("birds chirp and sing", "birdsong in the morning", "small birds tweet",
                       "a chorus of songbirds"),
    "water_drops": ("water drips", "drops of water fall into a puddle", "a tap drips slowly", "water droplets plink"),
    "wind": ("the wind blows", "a strong wind howls", "gusts of wind rush past", "wind whistles through trees"),
    "pouring_water": ("water is poured into a glass", "liquid pours and gurgles",
                      "water splashes from a jug into a container", "a glass fills with water"),
    "toilet_flush": ("a toilet flushes", "water rushes down a toilet and the tank refills",
                     "water swirls and drains in a toilet bowl", "a flush, then gurgling"),
    "thunderstorm": ("thunder rumbles in a storm", "a loud crack of thunder", "thunder booms over heavy rain",
                     "distant thunder rolls"),
    "crying_baby": ("a baby cries", "an infant wails", "a baby sobs and screams", "a newborn cries loudly"),
    "sneezing": ("a person sneezes", "someone sneezes loudly", "achoo", "a sudden sneeze and a sniff"),
    "clapping": ("people clap their hands", "applause", "a person claps", "an audience applauds"),
    "breathing": ("a person breathes heavily", "slow deep breaths in and out", "someone pants out of breath",
                  "heavy breathing"),
    "coughing": ("a person coughs", "someone coughs again and again", "a dry hacking cough",
                 "a man clears his throat and coughs"),
    "footsteps": ("footsteps walk past", "shoes step on a hard floor", "someone walks on gravel",
                  "footsteps on wooden stairs"),
    "laughing": ("a person laughs", "people laugh out loud", "a giggle", "someone chuckles"),
    "brushing_teeth": ("someone brushes their teeth", "a toothbrush scrubs back and forth",
                       "brushing teeth and rinsing the mouth", "the scratchy scrubbing of a toothbrush"),
    "snoring": ("a person snores", "someone snores loudly in their sleep", "rhythmic snoring",
                "a sleeping man snorts and snores"),
    "drinking_sipping": ("someone sips a drink", "a person gulps water", "slurping a drink",
                         "swallowing sounds while drinking"),
    "door_wood_knock": ("someone knocks on a wooden door", "three knocks on a door", "knuckles rap on wood",
                        "loud knocking at the door"),
    "mouse_click": ("a computer mouse clicks", "quick clicks of a mouse button", "a mouse double-clicks",
                    "soft plastic clicking"),
    "keyboard_typing": ("someone types on a keyboard", "the fast clatter of keyboard keys",
                        "typing on a computer keyboard", "keys clack as someone types"),
    "door_wood_creaks": ("a wooden door creaks", "a door creaks open slowly", "squeaky hinges of an old door",
                         "a creaking door"),
    "can_opening": ("a can is opened", "a soda can pops and fizzes", "the hiss of a can being opened",
                    "a pull tab cracks open a can"),
    "washing_machine": ("a washing machine runs", "a washing machine spins and rumbles",
                        "water sloshes in a washing machine", "the hum of a laundry machine"),
    "vacuum_cleaner": ("a vacuum cleaner hums", "a vacuum cleaner roars", "the whine of a vacuum cleaner sucking",
                       "someone vacuums the floor"),
    "clock_alarm": ("an alarm clock rings", "an alarm beeps again and again", "the loud bell of an alarm clock",
                    "an electronic alarm beeping"),
    "clock_tick": ("a clock ticks", "a steady tick tock", "the ticking of a clock", "a watch ticks"),
    "glass_breaking": ("glass shatters", "a window breaks", "a glass smashes on the floor",
                       "shards of glass tinkle and crash"),
    "helicopter": ("a helicopter flies overhead", "the thump of helicopter rotor blades", "a helicopter hovers",
                   "chopper blades whir"),
    "chainsaw": ("a chainsaw cuts wood", "a chainsaw revs and buzzes", "a loud chainsaw engine",
                 "a chainsaw whines through a log"),
    "siren": ("a siren wails", "an ambulance siren", "a police siren rises and falls", "a fire engine siren passes"),
    "car_horn": ("a car horn honks", "a car beeps its horn", "a long blast of a car horn", "horns honk in traffic"),
    "engine": ("an engine runs", "an engine idles", "an engine revs", "a motor rumbles", "a car engine starts"),
    "train": ("a train passes by", "a train rumbles on the tracks", "train wheels clatter on the rails",
              "a train horn blows as a train passes"),
    "church_bells": ("church bells ring", "a church bell tolls", "bells chime from a tower", "a peal of church bells"),
    "airplane": ("an airplane flies overhead", "the roar of a jet plane", "a plane passes overhead",
                 "a propeller plane drones"),
    "fireworks": ("fireworks explode", "fireworks crackle and bang", "loud bangs and pops of fireworks",
                  "a rocket whistles and bursts"),
    "hand_saw": ("someone saws wood by hand", "a hand saw cuts back and forth", "the rasp of a saw through wood",
                 "rhythmic sawing"),
}

#: One plain sentence per ESC-50 class describing what is heard: the first of each class's
#: :data:`ESC50_SOUND_DESCRIPTIONS` (the zero-shot default before them; still the generic
#: everyday-sound anchors of search and indexes).
ESC50_DESCRIPTIONS: dict[str, tuple[str, ...]] = {label: sentences[:1] for label, sentences in
                                                   ESC50_SOUND_DESCRIPTIONS.items()}

#: A table of descriptions: label → sentences.
Descriptions = Mapping[str, Sequence[str]]



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


def description_table(descriptions: bool | Descriptions) -> Descriptions:
    """``True`` → the built-in :data:`ESC50_SOUND_DESCRIPTIONS`, ``False`` → none, a table → itself.

    The 3-5 sound descriptions per class are the default since they won over the single
    :data:`ESC50_DESCRIPTIONS` under leave-one-package-out (``results/hubness.md``: 50-way top-5
    0.745 vs 0.704, paired gain +0.041 ± 0.014 over 3 seeds; top-1 0.504 vs 0.491, +0.012 ± 0.007).
    """
    if isinstance(descriptions, bool):
        return ESC50_SOUND_DESCRIPTIONS if descriptions else {}
    return descriptions


def prompts_for(
    label: str, templates: tuple[str, ...] | list[str], descriptions: bool | Descriptions = True
) -> list[str]:
    """Every template filled with the readable label, plus the label's descriptions if any
    (``descriptions``: ``True`` the built-in ones, ``False`` none, or a label → sentences table:
    :func:`description_table`)."""
    for template in templates:
        check_template(template)
    prompts = [t.format(readable(label)) for t in templates]
    prompts += list(description_table(descriptions).get(label, ()))
    return list(dict.fromkeys(prompts))


def check_prompt_budget(
    labels: Sequence[str], templates: Sequence[str], max_prompts: int, descriptions: bool | Descriptions = True
) -> int:
    """Number of prompts ``labels`` × ``templates`` (+ built-in descriptions) make; :class:`LimitError`
    stating the bound when it is over ``max_prompts`` (checked before anything is embedded)."""
    n = len(labels) * len(templates)
    table = description_table(descriptions)
    n += sum(len(table.get(label, ())) for label in labels)
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
    descriptions: bool | Descriptions = True,
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
