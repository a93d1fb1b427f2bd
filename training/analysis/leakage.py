"""Zero-shot leakage report: which ESC-50 classes the training captions already name.

Zero-shot accuracy is only evidence of generalisation for classes the model never saw named. A
class whose name (or a synonym) occurs in the training captions was, in effect, trained on; its
accuracy may also be inherited from the audio backbone rather than learnt by the joint space. This
module provides the three pieces of the report:

* :func:`classes_in_captions` / :func:`seen_classes`: which classes the captions name, and through
  which terms (so that a reader can audit every decision);
* :func:`split_accuracy`: zero-shot top-k accuracy separately for "seen" and "unseen" classes;
* :func:`fit_linear_probe`: a backbone-only baseline, multinomial logistic regression on frozen
  audio-backbone features trained on the labelled training clips.

Matching (see :func:`term_pattern`) is plain regular expressions over lower-cased text: no
tokeniser, no lemmatiser, no network.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from atr_demo.errors import ConfigError
from atr_demo.evaluation import topk_accuracy
from atr_demo.zeroshot import ESC50_CLASSES, readable

logger = logging.getLogger(__name__)

#: Per ESC-50 class, the words and phrases that name its sound source or its sound event.
#:
#: Policy: a term is listed if a captioner would write it for a clip of that class *and* a caption
#: containing it almost always describes a sound of that class (as ESC-50 defines the class). A
#: single word that also names other sources or events is therefore replaced by multi-word phrases:
#: "horn" (ships, trains) → "car horn", "horn honk"; "bell" (ships, doorbells, level crossings) →
#: "church bell", "bell toll"; "bird" (owls, hawks, gulls) and "chirp" (crickets) → "birds sing",
#: "bird chirp", "songbird"; "knock" (stones, hammers, shields) → "door knock", "knock on the door";
#: "creak" (ships, trees, wheels) → "door creak", "creaking hinge"; "saw" (circular saws, past tense
#: of "see") → "hand saw", "someone saws"; "pour" (rain, waterfalls) → "pour water", "poured
#: into"; "smash" → "glass smash"; "fly" (also a verb: arrows fly) → "housefly", "flies buzz";
#: "croak" (herons, ravens), "bleat" (goats, deer), "bark" (foxes, trees) are left out altogether.
#: Terms are written in lower case and in base form (singular nouns, bare verbs); the inflections
#: that :func:`term_pattern` adds cover plurals and verb forms, so "dog" also finds "dogs" and
#: "door creak" finds "doors creaking". Irregular forms ("oxen", "calves", "broken glass") are
#: listed explicitly. Every class also lists its readable name (``readable(label)``). Senses of a
#: term that name something else ("big cat", "fire engine", "winds down") are removed by
#: :data:`ESC50_EXCLUSIONS` before matching.
ESC50_SYNONYMS: dict[str, tuple[str, ...]] = {
    "dog": ("dog", "puppy", "hound", "canine"),
    "rooster": ("rooster", "cockerel", "cock", "cock-a-doodle-doo"),
    "pig": ("pig", "piglet", "hog", "boar", "swine", "oink"),
    "cow": ("cow", "cattle", "bull", "ox", "oxen", "calf", "calves", "heifer", "moo"),
    "frog": ("frog", "toad", "bullfrog", "ribbit"),
    "cat": ("cat", "kitten", "kitty", "meow", "miaow"),
    "hen": ("hen", "chicken", "cluck"),
    "insects": (
        "insects", "insect", "bee", "bumblebee", "honeybee", "wasp", "hornet", "mosquito", "gnat",
        "housefly", "horsefly", "blowfly", "bluebottle", "fly buzz", "flies buzz", "buzzing fly",
        "buzzing flies", "buzzing insect",
    ),
    "sheep": ("sheep", "lamb", "ewe", "baa"),
    "crow": ("crow", "raven", "jackdaw", "caw"),
    "rain": ("rain", "rainfall", "raindrop", "rainstorm", "downpour", "drizzle"),
    "sea_waves": ("sea waves", "sea wave", "wave", "surf", "sea", "ocean", "seashore", "breaking wave"),
    "crackling_fire": ("crackling fire", "fire", "campfire", "bonfire", "fireplace", "flame", "blaze"),
    "crickets": ("crickets", "cricket", "cicada", "grasshopper", "katydid"),
    "chirping_birds": (
        "chirping birds", "chirping bird", "songbird", "birdsong", "bird song", "bird sing", "birds sing",
        "singing bird", "bird chirp", "birds chirp", "bird tweet", "birds tweet", "bird twitter",
        "birds twitter", "bird trill", "dawn chorus", "tweet", "twitter", "warble", "sparrow", "finch",
        "robin", "blackbird", "lark", "skylark", "canary", "nightingale", "thrush", "wren", "starling",
    ),
    "water_drops": ("water drops", "water drop", "drop of water", "droplet", "drip"),
    "wind": ("wind", "gust", "breeze", "gale", "windstorm", "snowstorm", "blizzard"),
    "pouring_water": (
        "pouring water", "pour water", "pours water", "water is poured", "water being poured",
        "poured into", "pours into", "pouring into", "from a tap", "running tap", "faucet",
    ),
    "toilet_flush": ("toilet flush", "toilet", "lavatory", "flush"),
    "thunderstorm": ("thunderstorm", "thunder", "thunderclap", "thunderbolt", "lightning", "storm"),
    "crying_baby": ("crying baby", "baby", "infant", "newborn", "baby cry"),
    "sneezing": ("sneezing", "sneeze", "achoo", "atishoo"),
    "clapping": ("clapping", "clap", "applause", "applaud", "handclap"),
    "breathing": ("breathing", "breathe", "breath", "inhale", "exhale"),
    "coughing": ("coughing", "cough"),
    "footsteps": (
        "footsteps", "footstep", "footfall", "step", "walking", "someone walk", "person walk",
        "people walk", "man walk", "woman walk", "someone run", "stomp", "tiptoe",
    ),
    "laughing": ("laughing", "laugh", "laughter", "giggle", "chuckle"),
    "brushing_teeth": (
        "brushing teeth", "brush teeth", "brush the teeth", "brush their teeth", "brush his teeth",
        "brush her teeth", "brush my teeth", "brush your teeth", "teeth brushing", "tooth brushing",
        "toothbrush",
    ),
    "snoring": ("snoring", "snore"),
    "drinking_sipping": ("drinking sipping", "drink", "sip", "slurp", "gulp"),
    "door_wood_knock": (
        "door wood knock", "door knock", "knock on a door", "knock on the door", "knock at the door",
        "knock at a door", "knock on a wooden door", "knock on the wooden door", "knock knock",
        "someone knock",
    ),
    "mouse_click": ("mouse click", "computer mouse", "mouse button", "click a mouse", "click the mouse"),
    "keyboard_typing": ("keyboard typing", "keyboard", "typing", "typewriter", "keystroke", "typist"),
    "door_wood_creaks": (
        "door wood creaks", "door creak", "creaking door", "creaky door", "squeaky door", "door squeak",
        "creak of a door", "creak of the door", "hinge creak", "creaking hinge", "creaky hinge",
    ),
    "can_opening": (
        "can opening", "can is open", "can being opened", "open a can", "open the can", "can opener",
        "soda can", "beer can", "drink can", "tin can", "can of soda", "can of beer", "ring pull", "pull tab",
    ),
    "washing_machine": ("washing machine", "laundry machine", "clothes washer", "spin cycle"),
    "vacuum_cleaner": ("vacuum cleaner", "vacuum", "hoover"),
    "clock_alarm": ("clock alarm", "alarm clock", "wake up alarm", "wakeup alarm"),
    "clock_tick": ("clock tick", "ticking clock", "tick", "tick tock", "ticktock"),
    "glass_breaking": (
        "glass breaking", "glass break", "breaking glass", "broken glass", "glass broke", "glass shatter",
        "shatter", "glass smash", "smashing glass", "window break", "window smash", "bottle break",
        "bottle smash",
    ),
    "helicopter": ("helicopter", "chopper", "rotor"),
    "chainsaw": ("chainsaw", "chain saw"),
    "siren": ("siren", "ambulance"),
    "car_horn": (
        "car horn", "vehicle horn", "truck horn", "horn honk", "horn beep", "honk its horn",
        "honk the horn", "beep its horn", "beep the horn",
    ),
    "engine": ("engine", "motor", "motorcycle", "motorbike"),
    "train": ("train", "locomotive", "railcar"),
    "church_bells": (
        "church bells", "church bell", "chapel bell", "cathedral bell", "bell tower", "belfry", "carillon",
        "bell toll", "tolling bell", "peal of bells", "bells peal",
    ),
    "airplane": (
        "airplane", "aeroplane", "plane", "aircraft", "jet", "airliner", "seaplane", "biplane",
        "propeller plane",
    ),
    "fireworks": ("fireworks", "firework", "firecracker"),
    "hand_saw": (
        "hand saw", "handsaw", "hacksaw", "bow saw", "crosscut saw", "someone saw", "saw wood",
        "saw a log", "saw a plank", "saw a board", "saw through",
    ),
}

#: Per class, phrases that contain one of its terms in another sense. Occurrences are blanked out of
#: a caption before that class's terms are searched, so "a big cat growls" does not name ``cat`` but
#: "a big cat and a cat" still does. Inflected like terms (see :func:`term_pattern`).
ESC50_EXCLUSIONS: dict[str, tuple[str, ...]] = {
    "cat": ("big cat",),
    "cow": ("pit bull",),
    "sea_waves": ("sea lion", "shock wave", "radio wave", "sound wave", "heat wave", "wave goodbye"),
    "crackling_fire": (
        "fire engine", "fire truck", "fire alarm", "fire station", "fire brigade", "fire extinguisher",
        "open fire", "cease fire", "rapid fire", "under fire", "cannon fire", "rifle fire",
    ),
    "crickets": ("cricket bat", "cricket ball", "cricket match"),
    "wind": ("wind down", "wind up", "wind instrument"),
    "clapping": ("clap of thunder", "thunder clap"),
    "coughing": ("engine cough", "cough into life", "cough and sputter"),
    "clock_tick": ("tick over",),
    "engine": ("fire engine", "siege engine", "search engine", "game engine", "electric motor"),
    "airplane": ("jet of", "water jet", "steam jet", "jet ski"),
    "insects": ("spelling bee",),
}

#: Words that inflect as verbs (-s/-es, -ing, -ed, -er/-ers, with e-dropping and consonant doubling).
VERB_WORDS: frozenset[str] = frozenset({
    "applaud", "baa", "beep", "break", "breathe", "brush", "buzz", "caw", "chirp", "chuckle", "clap",
    "click", "cluck", "cough", "creak", "cry", "drink", "drip", "flush", "giggle", "gulp", "honk",
    "hoover", "knock", "laugh", "meow", "miaow", "moo", "oink", "open", "pour", "rain", "run", "saw",
    "shatter", "sing", "sip", "slurp", "smash", "sneeze", "snore", "squeak", "stomp", "tick", "tiptoe",
    "toll", "trill", "tweet", "twitter", "vacuum", "walk", "warble",
})

#: Words matched only as written, because their inflections mean something else: "a cannon fires",
#: "a rooster crows", "someone cocks a pistol".
EXACT_WORDS: frozenset[str] = frozenset({"fire", "crow", "cock"})

#: Function words inside phrases are never inflected.
_FUNCTION_WORDS = frozenset({
    "a", "an", "and", "as", "at", "being", "by", "from", "her", "his", "into", "is", "it", "its", "my",
    "of", "on", "the", "their", "to", "with", "your",
})
_VOWELS = frozenset("aeiou")
_MASK = "\x00"


def word_forms(word: str, verbs: Collection[str] = VERB_WORDS, exact: Collection[str] = EXACT_WORDS) -> list[str]:
    """The spellings of one (lower-case) ``word`` that :func:`term_pattern` accepts, base form first.

    * exact words and function words: only ``word``;
    * every other word (plural / third person): ``word`` + "s"; + "es" after s, x, z, ch, sh, o
      (``mosquitoes``, ``buzzes``); consonant + "y" → "ies" (``puppies``);
    * verbs additionally: + "ing", "ed", "er", "ers", dropping a final "e" (``sneezing``, ``sneezed``)
      and also doubling a final consonant after a single vowel (``dripping``, ``clapped``); consonant
      + "y" → "ying", "ied" (``crying``, ``cried``).

    Irregular forms ("oxen", "sang") are not generated: list them as terms of their own.
    """
    if word in exact or word in _FUNCTION_WORDS or not word[-1:].isalpha():
        return [word]
    consonant_y = len(word) > 1 and word.endswith("y") and word[-2] not in _VOWELS
    forms = [word, word + "s"]
    if word.endswith(("s", "x", "z", "ch", "sh", "o")):
        forms.append(word + "es")
    if consonant_y:
        forms.append(word[:-1] + "ies")
    if word in verbs:
        if consonant_y:
            forms += [word + "ing", word[:-1] + "ied", word[:-1] + "ier", word[:-1] + "iers"]
        elif word.endswith("e"):
            forms += [word[:-1] + "ing", word + "d", word + "r", word + "rs"]
        else:
            stems = [word]
            cvc = (
                len(word) >= 3 and word[-1] not in _VOWELS and word[-1] not in "wxy"
                and word[-2] in _VOWELS and word[-3] not in _VOWELS
            )
            if cvc:
                stems.append(word + word[-1])
            forms += [stem + ending for stem in stems for ending in ("ing", "ed", "er", "ers")]
    return list(dict.fromkeys(forms))


def term_pattern(
    term: str, verbs: Collection[str] = VERB_WORDS, exact: Collection[str] = EXACT_WORDS,
) -> re.Pattern[str]:
    """Case-insensitive whole-word pattern for ``term``, accepting simple English inflections.

    The term is split into words; consecutive words match across any run of whitespace and hyphens
    ("car horn" finds "car-horn"), and the whole match must start and end at a word boundary, so
    "cow" does not match "cowboy", "cat" not "catalog" nor "scattered", "fire" not "firework". Each
    word may take the endings of :func:`word_forms`: plurals for every word ("dogs", "hens",
    "chickens", "puppies"), verb endings for :data:`VERB_WORDS` ("door creak" → "doors creaking"),
    none for :data:`EXACT_WORDS` and function words. Inflecting every word of a phrase, not just
    the last, over-generates a little ("hands saw") but lets "bird sing" find "birds singing".
    """
    words = term.lower().replace("-", " ").split()
    if not words:
        raise ConfigError(f"synonym term {term!r} is empty: give at least one word")
    return _compile(tuple(words), frozenset(verbs), frozenset(exact))


@functools.lru_cache(maxsize=4096)
def _compile(words: tuple[str, ...], verbs: frozenset[str], exact: frozenset[str]) -> re.Pattern[str]:
    parts = []
    for word in words:
        forms = sorted(word_forms(word, verbs, exact), key=len, reverse=True)
        parts.append("(?:" + "|".join(re.escape(f) for f in forms) + ")")
    return re.compile(r"(?<!\w)" + r"[\s\-]+".join(parts) + r"(?!\w)", re.IGNORECASE)


def classes_in_captions(
    captions: Iterable[str],
    classes: Sequence[str] = ESC50_CLASSES,
    synonyms: Mapping[str, Sequence[str]] = ESC50_SYNONYMS,
    *,
    exclusions: Mapping[str, Sequence[str]] = ESC50_EXCLUSIONS,
) -> dict[str, list[str]]:
    """Classes named by at least one caption → the sorted list of their terms that matched.

    A class's terms are ``synonyms[label]`` plus its readable name (only the readable name for a
    label missing from ``synonyms``). Before a class is searched, each caption has the class's
    ``exclusions`` blanked out. Keys follow the order of ``classes``; classes that no caption names
    are absent.
    """
    if isinstance(captions, str):
        raise ConfigError("captions must be an iterable of caption strings, not a single string")
    unique = list(dict.fromkeys(" ".join(str(c).lower().split()) for c in captions))
    # Captions are joined by a separator that no pattern can match across.
    corpus = _MASK.join(unique)
    found: dict[str, list[str]] = {}
    for label in classes:
        terms = list(dict.fromkeys([*synonyms.get(label, ()), readable(label)]))
        text = corpus
        for phrase in exclusions.get(label, ()):
            text = term_pattern(phrase).sub(lambda m: _MASK * len(m.group()), text)
        hits = sorted(t for t in terms if term_pattern(t).search(text))
        if hits:
            found[label] = hits
    logger.debug("%d of %d classes named in %d distinct captions", len(found), len(classes), len(unique))
    return found


def seen_classes(
    captions: Iterable[str],
    classes: Sequence[str] = ESC50_CLASSES,
    synonyms: Mapping[str, Sequence[str]] = ESC50_SYNONYMS,
    *,
    exclusions: Mapping[str, Sequence[str]] = ESC50_EXCLUSIONS,
) -> set[str]:
    """The classes that at least one caption names (the keys of :func:`classes_in_captions`)."""
    return set(classes_in_captions(captions, classes, synonyms, exclusions=exclusions))


def split_accuracy(
    scores: torch.Tensor,
    labels: torch.Tensor,
    classes: Sequence[str],
    seen: Collection[str],
    ks: tuple[int, ...] = (1, 5),
) -> dict[str, dict[str, float | int]]:
    """Zero-shot top-k accuracy for clips of seen classes, of unseen classes, and of all clips.

    ``scores`` (n, L) ranks the L labels ``classes`` for each clip (larger is better); ``labels`` (n,)
    are the true class indices. A clip belongs to "seen" if ``classes[label]`` is in ``seen``, else
    to "unseen". Ranking is always over all L labels (the label set is not restricted to the group),
    so the groups' accuracies are directly comparable with "all": top-k = mean over the group's
    clips of [rank of the true label ≤ k], ties pessimistic (:func:`topk_accuracy`).

    Returns ``{"seen": g, "unseen": g, "all": g}`` with g = ``{"top1": …, "top5": …, "n": clips,
    "n_classes": labels of ``classes`` in the group}``. A group without clips has n = 0 and NaN
    accuracies (no clips, no estimate), not 0.
    """
    if scores.dim() != 2 or labels.dim() != 1 or scores.shape[0] != labels.shape[0]:
        raise ConfigError(
            f"scores must be (n, L) and labels (n,); got scores {tuple(scores.shape)}, labels {tuple(labels.shape)}"
        )
    if scores.shape[1] != len(classes):
        raise ConfigError(f"scores have {scores.shape[1]} columns but {len(classes)} classes were given")
    if labels.is_floating_point() or (labels.numel() and (labels.min() < 0 or labels.max() >= len(classes))):
        raise ConfigError(f"labels must be integer class indices in [0, {len(classes)})")
    if not ks or any(k < 1 for k in ks):
        raise ConfigError(f"ks must be positive integers, got {ks}")
    unknown = sorted(set(seen) - set(classes))
    if unknown:
        raise ConfigError(f"seen classes {unknown} are not among the {len(classes)} classes scored")
    is_seen_class = torch.tensor([c in seen for c in classes], dtype=torch.bool)
    clip_seen = is_seen_class[labels.long().cpu()]
    groups = {
        "seen": (clip_seen, int(is_seen_class.sum())),
        "unseen": (~clip_seen, int((~is_seen_class).sum())),
        "all": (torch.ones_like(clip_seen), len(classes)),
    }
    out: dict[str, dict[str, float | int]] = {}
    for name, (mask, n_classes) in groups.items():
        n = int(mask.sum())
        if n:
            mask = mask.to(scores.device)
            acc: dict[str, float | int] = dict(topk_accuracy(scores[mask], labels.to(scores.device)[mask], ks))
        else:
            acc = {f"top{k}": math.nan for k in ks}
        out[name] = {**acc, "n": n, "n_classes": n_classes}
    return out


@dataclass
class LinearProbe:
    """Multinomial logistic regression on standardised features (all tensors float64, on the CPU).

    log p(c | x) = log_softmax(((x − mean) / std) W + b)_c with ``mean``, ``std`` (D,) from the
    training features, ``weight`` (D, C) and ``bias`` (C,).
    """

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    @property
    def n_classes(self) -> int:
        return int(self.bias.shape[0])

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """(m, D) features → (m, C) log-probabilities (float64, CPU)."""
        if features.dim() != 2 or features.shape[1] != self.mean.shape[0]:
            raise ConfigError(f"features must be (m, {self.mean.shape[0]}), got {tuple(features.shape)}")
        x = (features.detach().to("cpu", torch.float64) - self.mean) / self.std
        return torch.log_softmax(x @ self.weight + self.bias, dim=1)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """(m, D) features → (m,) most probable class indices."""
        return self.scores(features).argmax(dim=1)


def fit_linear_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int,
    *,
    weight_decay: float = 1e-3,
    max_iter: int = 200,
    seed: int = 0,
) -> LinearProbe:
    """Backbone-only baseline: logistic regression on frozen (n, D) features with (n,) class indices.

    Features are standardised with the training mean and (population) std; constant features get
    std 1. The probe minimises, in float64, full batch,

        (1/n) Σ_i −log softmax(z_i W + b)_{y_i} + (weight_decay / 2) ‖W‖²

    with L-BFGS (strong-Wolfe line search, at most ``max_iter`` iterations). The bias is not
    regularised. The objective is convex (strictly, in W, for weight_decay > 0), so the optimum
    does not depend on the start; ``seed`` fixes the small random starting weights (with a local
    generator: the global RNG is untouched), making the fit bit-for-bit reproducible.

    A class with no training example only ever has its bias pushed down: such a class is in
    practice never predicted, so its test clips count as errors (that is the point of a
    backbone-only baseline trained on the labelled training clips, not a flaw to fix).
    """
    if features.dim() != 2 or labels.dim() != 1 or features.shape[0] != labels.shape[0]:
        raise ConfigError(
            f"features must be (n, D) and labels (n,); "
            f"got features {tuple(features.shape)}, labels {tuple(labels.shape)}"
        )
    if labels.is_floating_point():
        raise ConfigError("labels must be integer class indices, not floats")
    if n_classes < 2:
        raise ConfigError(f"a linear probe needs n_classes ≥ 2, got {n_classes}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= n_classes):
        raise ConfigError(f"labels must lie in [0, {n_classes}), got [{int(labels.min())}, {int(labels.max())}]")
    distinct = int(labels.unique().numel())
    if distinct < 2:
        raise ConfigError(f"a linear probe needs training clips of at least 2 distinct classes, got {distinct}")
    if weight_decay < 0 or max_iter < 1:
        raise ConfigError(f"weight_decay must be ≥ 0 and max_iter ≥ 1, got {weight_decay} and {max_iter}")
    x = features.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        raise ConfigError("features contain NaN or inf values")
    y = labels.detach().to("cpu", torch.long)
    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    z = (x - mean) / std

    generator = torch.Generator().manual_seed(seed)
    weight = (1e-3 * torch.randn(z.shape[1], n_classes, generator=generator, dtype=torch.float64)).requires_grad_()
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
        tolerance_grad=1e-10, tolerance_change=1e-14,
    )

    def objective() -> torch.Tensor:
        return F.cross_entropy(z @ weight + bias, y) + 0.5 * weight_decay * weight.pow(2).sum()

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(closure)
    with torch.no_grad():
        final = float(objective())
    n_iter = optimiser.state[weight].get("n_iter", 0)
    logger.info("linear probe: %d clips, %d features, %d classes, loss %.4g after %d L-BFGS iterations",
                z.shape[0], z.shape[1], n_classes, final, n_iter)
    return LinearProbe(mean=mean, std=std, weight=weight.detach(), bias=bias.detach())
