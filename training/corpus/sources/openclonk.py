"""``openclonk-data``: ~290 non-voice sounds packed in ``Sound.ocg`` (a c4group archive).

``prepare`` unpacks the archive in place with ``c4group Sound.ocg -x`` (the tool comes
from the small ``openclonk`` package, extracted next to this one, never installed); the
nested ``*.ocg`` groups become folders. Names are captioned by their path with the
``.ocg`` suffixes removed (``animals/bat/flutter1.wav``). The character voices of
``Clonk/Skin`` and the interface sounds of ``UI`` are dropped by the table.

``Sound.ocg/authors.txt`` credits most files: CC-BY-3.0 unless stated otherwise, a second
list is CC0. Its free-form text was reviewed by hand into ``CREDITS`` below (author,
licence and the original recording, which becomes the group of all cuts made from it).
Files it does not name carry CC-BY-3.0 by "OpenClonk contributors".
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from training.corpus.captions import load_rules
from training.corpus.clip import Dropped, SourceClip
from training.corpus.sources import Source
from training.corpus.sources.common import clip_from_rules, sound_files

log = logging.getLogger(__name__)

PACKAGE = "openclonk-data"
HELPER_PACKAGE = "openclonk"
DATA_DIR = "usr/share/games/openclonk"
ARCHIVE = "Sound.ocg"
LICENCE = "CC-BY-3.0"
DEFAULT_AUTHOR = "OpenClonk contributors"


@dataclass(frozen=True)
class Credit:
    """One hand-reviewed entry of ``authors.txt``."""

    pattern: str  # searched in the lower-cased name without ".ocg" (e.g. "environment/birdsloop")
    author: str
    licence: str
    original: str  # the original recording (freesound id); cuts of it share a group


CC_BY = "CC-BY-3.0"
CC0 = "CC0-1.0"

# First match wins. Only sounds the caption table keeps need an entry; the rest fall back
# to the package licence.
CREDITS: tuple[Credit, ...] = (
    Credit(r"^fire/spark", "ala", CC_BY, "ala-spark"),
    Credit(r"^clonk/action/munch2", "ala", CC_BY, "ala-munch2"),
    Credit(r"^structures/door(open|close)", "ala", CC_BY, "ala-door"),
    Credit(r"^hits/buckethit", "ala", CC_BY, "ala-buckethit"),
    Credit(r"^objects/lorry/dump", "ala", CC_BY, "ala-dump"),
    Credit(r"^structures/repair", "ala (from JoelAudio, cmusounddesign)", CC_BY, "ala-repair"),
    Credit(r"^animals/bat/flutter", "ala", CC_BY, "ala-bat-flutter"),
    Credit(r"^objects/pickaxe/clanghard", "K-Pone", CC_BY, "k-pone-clanghard"),
    Credit(r"^fire/blast3alt", "K-Pone", CC_BY, "k-pone-blast3alt"),
    Credit(r"^structures/chest/", "Ringwaul", CC_BY, "ringwaul-chest"),
    Credit(r"^objects/windbag/gust", "Ringwaul", CC_BY, "ringwaul-gust"),
    Credit(r"^objects/pickaxe/clang\d", "Ringwaul", CC_BY, "ringwaul-clang"),
    Credit(r"^objects/arrow/hitground", "Checkmaty", CC_BY, "checkmaty-arrow-hitground"),
    Credit(r"^objects/(arrow|weapons/bow)/shoot", "Checkmaty", CC_BY, "checkmaty-bow-shoot"),
    Credit(r"^objects/weapons/bow/", "Checkmaty", CC_BY, "checkmaty-bow"),
    Credit(r"^objects/weapons/javelin/", "Checkmaty", CC_BY, "checkmaty-javelin"),
    Credit(r"^objects/weapons/weaponhit", "Checkmaty", CC_BY, "checkmaty-weaponhit"),
    Credit(r"^objects/weapons/weaponswing", "Checkmaty", CC_BY, "checkmaty-weaponswing"),
    Credit(r"^objects/weapons/shield/", "Checkmaty", CC_BY, "checkmaty-shield"),
    Credit(r"^objects/weapons/blunderbuss/(gunshoot|bulletshot)", "Checkmaty", CC_BY, "checkmaty-gunshot"),
    Credit(r"^objects/weapons/blunderbuss/bullethitground", "Checkmaty", CC_BY, "checkmaty-bullethit"),
    Credit(r"^objects/weapons/blunderbuss/click", "ala", CC_BY, "ala-musket-click"),
    Credit(r"^environment/birdsloop", "dobroide", CC_BY, "freesound-54746"),
    Credit(r"^fire/blastmetal", "Benboncan, Stickinthemud, jenc", CC_BY, "blastmetal"),
    Credit(r"^fire/blast\d", "Benboncan", CC_BY, "freesound-73005"),
    Credit(r"^environment/windloop", "ERH", CC_BY, "freesound-34338"),
    Credit(r"^liquids/(splash|swim)", "CGEffex", CC_BY, "freesound-98335"),
    Credit(r"^clonk/action/munch1", "fresco", CC_BY, "freesound-48933"),
    Credit(r"^structures/fanloop", "cambra", CC_BY, "freesound-102710"),
    Credit(r"^objects/electrical", "Halleck", CC_BY, "freesound-19483"),
    Credit(r"^hits/materials/wood/woodhit", "HerbertBoland", CC_BY, "freesound-33206"),
    Credit(r"^clonk/movement/step(soft|hard)", "HerbertBoland", CC_BY, "freesound-31962"),
    Credit(r"^hits/materials/metal/lightmetalhit1", "Erdie", CC_BY, "freesound-27826"),
    Credit(r"^hits/materials/wood/dullwoodhit1", "Anton", CC_BY, "freesound-1257"),
    Credit(r"^fire/inflame", "CGEffex", CC_BY, "freesound-94102"),
    Credit(r"^fire/fire\.", "dobroide", CC_BY, "freesound-4211"),
    Credit(r"^structures/hingecreak", "cmusounddesign", CC_BY, "freesound-126302"),
    Credit(r"^structures/wheelsturn", "earthsounds", CC_BY, "freesound-101486"),
    Credit(r"^liquids/sizzle", "qubodup", CC_BY, "freesound-194635"),
    Credit(r"^liquids/smokesizzle", "luffy", CC_BY, "freesound-17299"),
    Credit(r"^objects/plane/propellerloop", "Pullover", CC_BY, "pullover-propeller"),
    Credit(r"^structures/stonegate/chain", "daveincamas", CC_BY, "freesound-44076"),
    Credit(r"^structures/elevator/(start|moving|stop)", "pempi", CC_BY, "freesound-33873"),
    Credit(r"^structures/elevator/drilling", "jenc", CC_BY, "freesound-519"),
    Credit(r"^clonk/movement/(roll|rustle)", "Pat (pwausc1)", CC_BY, "freesound-118259"),
    Credit(r"^clonk/action/dig/", "Stephen Hall", CC_BY, "freesound-72199"),
    Credit(r"^fire/blastfirework", "sarge4267", CC_BY, "freesound-110391"),
    Credit(r"^structures/stonegate/gate(hit|move)", "Sergenious (adapted by Sven2)", CC_BY, "freesound-55820"),
    Credit(r"^environment/waterfall", "volivieri", CC_BY, "freesound-38390"),
    Credit(r"^fire/fireball", "Julien Matthey", CC_BY, "freesound-105016"),
    Credit(r"^hits/materials/glass/glassshatter", "Connum", CC_BY, "freesound-66520"),
    Credit(r"^environment/tree/chop", "Christian James Muise", CC_BY, "freesound-23700"),
    Credit(r"^objects/boompack/fly", "primeval_polypod", CC_BY, "freesound-158894"),
    Credit(r"^hits/icehit", "Sven2 (adapted from GlassHit)", CC_BY, "sven2-icehit"),
    Credit(r"^objects/linesnap", "CosmicEmbers (edited by Sven2)", CC_BY, "freesound-161650"),
    Credit(r"^clonk/action/breathing", "Zapper", CC_BY, "zapper-breathing"),
    Credit(r"^animals/chippie/eggcrack", "zimbot (modified)", CC_BY, "freesound-244480"),
    Credit(r"^environment/lightning/thunder1", "xerana (adapted by Maikel)", CC_BY, "freesound-199638"),
    Credit(r"^environment/lightning/thunder2", "infopablo (adapted by Maikel)", CC_BY, "freesound-21887"),
    Credit(r"^environment/lightning/thunder3", "nicStage (adapted by Maikel)", CC_BY, "freesound-64460"),
    Credit(r"^environment/lightning/thunder4", "jrosin (adapted by Maikel)", CC_BY, "freesound-329978"),
    Credit(r"^environment/lightning/thunder5", "shaka9 (adapted by Maikel)", CC_BY, "freesound-160514"),
    # The CC0 list of authors.txt.
    Credit(r"^objects/balloon/inflate", "gelo_papas", CC_BY, "freesound-52070"),
    Credit(r"^objects/balloon/pop", "mrmayo", CC0, "freesound-77039"),
    Credit(r"^hits/softhit2", "adcbicycle", CC0, "freesound-13866"),
    Credit(r"^hits/softhit1", "juskiddink", CC_BY, "freesound-108617"),
    Credit(r"^hits/generalhit1", "adcbicycle", CC0, "freesound-13860"),
    Credit(r"^hits/generalhit2", "adcbicycle", CC0, "freesound-13899"),
    Credit(r"^hits/materials/metal/dullmetalhit1", "adcbicycle", CC0, "freesound-13854"),
    Credit(r"^hits/materials/metal/dullmetalhit2", "adcbicycle", CC0, "freesound-13876"),
    Credit(r"^hits/materials/metal/dullmetalhit3", "adcbicycle", CC0, "freesound-13831"),
    Credit(r"^hits/materials/wood/dullwoodhit2", "adcbicycle", CC0, "freesound-13958"),
    Credit(r"^hits/materials/glass/glasshit1", "adcbicycle", CC0, "freesound-13936"),
    Credit(r"^hits/materials/glass/glasshit2", "adcbicycle", CC0, "freesound-13931"),
    Credit(r"^objects/catapult_launch", "110110010, schluppipuppie", CC0, "freesound-66396"),
    Credit(r"^hits/materials/rock/rockhit", "mbezzola", CC0, "freesound-105282"),
    Credit(r"^fire/fuse", "RytmenPinnen", CC0, "freesound-102264"),
    Credit(r"^hits/materials/metal/lightmetalhit2", "kibibu", CC0, "freesound-22435"),
    Credit(r"^environment/disasters/earthquake", "prozaciswack", CC0, "freesound-82722"),
    Credit(r"^hits/materials/wood/woodcreak", "alienistcog", CC0, "freesound-123712"),
    Credit(r"^liquids/boiling", "fryzu82", CC0, "freesound-142333"),
    Credit(r"^structures/steamengine", "BenNevis", CC0, "freesound-203175"),
    Credit(r"^structures/pumpjack", "felix.blume", CC0, "freesound-203990"),
    Credit(r"^animals/mosquitobuzz", "Zywx", CC0, "freesound-188708"),
    Credit(r"^structures/furnace/", "tc630", CC0, "freesound-47835"),
    Credit(r"^structures/sawmillripcut", "kolczok", CC0, "freesound-198988"),
)


def rule_name(relative: str) -> str:
    """``Animals.ocg/Bat.ocg/Flutter1.wav`` → ``animals/bat/flutter1.wav`` (what the tables see)."""
    return re.sub(r"\.ocg(?=/)", "", relative).lower()


def credit_for(name: str) -> Credit | None:
    """The reviewed credit of a sound (``name`` as given by :func:`rule_name`), if any."""
    return next((credit for credit in CREDITS if re.search(credit.pattern, name)), None)


def find_c4group(root: Path) -> Path:
    """``c4group`` from the helper package extracted next to ``root``, else from ``PATH``."""
    helper = root.parent / HELPER_PACKAGE / "usr" / "bin" / "c4group"
    if helper.is_file():
        return helper
    found = shutil.which("c4group")
    if found is None:
        raise FileNotFoundError(f"c4group not found (looked in {helper} and PATH)")
    return Path(found)


def unpack_sounds(root: Path) -> None:
    """Explode ``Sound.ocg`` in place: the packed file becomes a folder of nested folders."""
    archive = root / DATA_DIR / ARCHIVE
    if archive.is_dir():
        return
    tool = find_c4group(root)
    log.info("%s: %s %s -x", PACKAGE, tool, archive)
    result = subprocess.run([str(tool), ARCHIVE, "-x"], cwd=archive.parent, capture_output=True, text=True)
    if result.returncode != 0 or not archive.is_dir():
        raise RuntimeError(
            f"c4group failed on {archive} (rc {result.returncode}): {result.stdout[-300:]}{result.stderr[-300:]}"
        )


def parse(root: Path) -> Iterator[SourceClip | Dropped]:
    rules = load_rules(PACKAGE)
    base = root / DATA_DIR / ARCHIVE
    for path in sound_files(base):
        relative = path.relative_to(base).as_posix()
        name = rule_name(relative)
        credit = credit_for(name)
        licence, author = (credit.licence, credit.author) if credit else (LICENCE, DEFAULT_AUTHOR)
        group = f"orig/{credit.original}" if credit else None
        yield clip_from_rules(
            PACKAGE,
            name,
            rules,
            licence,
            author,
            path=path,
            group=group,
            original_name=f"{DATA_DIR}/{ARCHIVE}/{relative}",
        )


SOURCE = Source(
    package=PACKAGE,
    tier=2,
    patterns=(f"./{DATA_DIR}/{ARCHIVE}",),
    parse=parse,
    licence=LICENCE,
    prepare=unpack_sounds,
    extra_debs=(HELPER_PACKAGE,),
)
