"""``python -m training convert-aisfx``: aiSFX CNN weights from the aisfx wheel to safetensors.

Steps:

1. get ``aisfx-0.1.2-py2.py3-none-any.whl`` (``--wheel`` or ``pip download --no-deps``; aisfx is
   never installed — its pins do not build on Python 3.11);
2. check the wheel's and ``aisfx/models/checkpoint.pth``'s sha256 against the known values;
3. unpickle the checkpoint from memory with ``torch.load(weights_only=True)`` (numpy scalar
   types allow-listed), a tuple ``(state_dict, dataset_dict)``;
4. drop the classifier heads ``fc.*``, check the keys against :class:`AisfxCNN` (strict), write
   ``--out`` atomically plus ``<out>.json`` (provenance, licence, attribution).

Idempotent: if the output exists and its JSON records the same checkpoint sha256 and the
file's own sha256, nothing is done (``--force`` redoes it).

``--golden PATH`` regenerates the golden parity data used by ``tests/test_aisfx.py``: the
*reference* network (the wheel's own ``aisfx/models/cnn2d.py``, imported from a temp dir;
it only needs torch) with the original weights, applied to fixed seeded inputs.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import logging
import math
import pickle
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from atr_demo.audio import FrontendConfig, LogMelFrontend, to_blocks
from atr_demo.backbones.aisfx import AisfxCNN, default_weights_path
from atr_demo.fileio import atomic_write_bytes, file_digest

logger = logging.getLogger(__name__)

AISFX_VERSION = "0.1.2"
WHEEL_NAME = f"aisfx-{AISFX_VERSION}-py2.py3-none-any.whl"
WHEEL_SHA256 = "bfe219950715af179e9a1653e7117cc1852baef267cd6596c42cad74afe1d194"
CHECKPOINT_MEMBER = "aisfx/models/checkpoint.pth"
CHECKPOINT_SHA256 = "499ea75909c932a2f94c35fa722fa4fabc5bcb7e84917209cc5f7402627b7eb5"
REFERENCE_CODE_MEMBER = "aisfx/models/cnn2d.py"
LICENSE = "CC-BY-4.0"
ATTRIBUTION = (
    "aiSFX CNN weights by Alison B. Ma and Alexander Lerch, \"Representation Learning for the "
    "Automatic Indexing of Sound Effects Libraries\", ISMIR 2022 (aisfx 0.1.2 on PyPI; code MIT, "
    "weights CC BY 4.0). Converted to safetensors without modification (classifier heads fc.* dropped)."
)
GOLDEN_SEED = 20220101


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def metadata_path(out: Path) -> Path:
    """The provenance JSON written beside the weights: ``aisfx_cnn.safetensors`` -> ``aisfx_cnn.json``."""
    return out.with_suffix(".json")


def is_up_to_date(out: Path) -> bool:
    """True if ``out`` exists, its JSON names the expected checkpoint and the file is intact."""
    meta_file = metadata_path(out)
    if not out.is_file() or not meta_file.is_file():
        return False
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (
        meta.get("checkpoint_sha256") == CHECKPOINT_SHA256
        and meta.get("weights_sha256") == file_digest(out)
    )


def download_wheel(dest: Path) -> Path:
    """``pip download --no-deps aisfx==0.1.2 -d dest`` (no install) and return the wheel's path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           f"aisfx=={AISFX_VERSION}", "-d", str(dest)]
    logger.info("downloading the aisfx wheel: %s", " ".join(cmd))
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(cmd)}` failed (exit {result.returncode}):\n{result.stderr.strip()}\n"
            "download the wheel elsewhere and pass it with --wheel PATH"
        )
    wheels = sorted(dest.glob("aisfx-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download succeeded but no aisfx wheel is in {dest}")
    return wheels[0]


def read_verified_member(wheel: Path, member: str, expected_sha256: str | None) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        try:
            data = archive.read(member)
        except KeyError as exc:
            raise RuntimeError(f"{wheel} has no member {member!r}; is it the aisfx {AISFX_VERSION} wheel?") from exc
    if expected_sha256 is not None and sha256_bytes(data) != expected_sha256:
        raise RuntimeError(
            f"{member} in {wheel} has sha256 {sha256_bytes(data)}, expected {expected_sha256}"
        )
    return data


def _numpy_safe_globals() -> list[Any]:
    """numpy types the checkpoint's dataset dict pickles (it holds numpy integer scalars)."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    allowed: list[Any] = [(core.multiarray.scalar, "numpy.core.multiarray.scalar"), np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, name) for name in dir(dtypes) if name.endswith("DType")]
    return allowed


def load_checkpoint(data: bytes) -> tuple[dict[str, Tensor], Any]:
    """Unpickle ``(state_dict, dataset_dict)`` from the checkpoint bytes, weights-only."""
    with torch.serialization.safe_globals(_numpy_safe_globals()):
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not (isinstance(loaded, tuple) and len(loaded) == 2 and isinstance(loaded[0], Mapping)):
        raise RuntimeError(f"unexpected checkpoint content: {type(loaded).__name__}")
    state, ds_dict = loaded
    return dict(state), ds_dict


def backbone_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop the classifier heads ``fc.*`` and check the rest against :class:`AisfxCNN` (strict)."""
    kept = {k: v.detach().clone().contiguous() for k, v in state.items() if not k.startswith("fc.")}
    expected = AisfxCNN().state_dict()
    missing, unexpected = sorted(set(expected) - set(kept)), sorted(set(kept) - set(expected))
    if missing or unexpected:
        raise RuntimeError(f"checkpoint keys do not match AisfxCNN: missing {missing}, unexpected {unexpected}")
    AisfxCNN().load_state_dict(kept, strict=True)  # also checks shapes
    return kept


def _write_bytes(path: Path, data: bytes) -> None:
    """Create ``path``'s folder and write ``data`` atomically (mode 0666 minus the umask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)


def write_weights(out: Path, state: dict[str, Tensor], wheel: Path, wheel_sha: str, dropped: list[str]) -> None:
    from safetensors.torch import save

    data = save(state, metadata={"source": f"aisfx=={AISFX_VERSION}:{CHECKPOINT_MEMBER}", "license": LICENSE})
    _write_bytes(out, data)
    meta = {
        "model": "aiSFX CNN (Cnn_9layers, max pooling) embedding net",
        "source_package": f"aisfx=={AISFX_VERSION}",
        "source_wheel": wheel.name,
        "wheel_sha256": wheel_sha,
        "checkpoint_member": CHECKPOINT_MEMBER,
        "checkpoint_sha256": CHECKPOINT_SHA256,
        "weights_file": out.name,
        "weights_sha256": sha256_bytes(data),
        "num_tensors": len(state),
        "dropped_prefix": "fc.",
        "num_dropped_tensors": len(dropped),
        "license": LICENSE,
        "license_url": "https://creativecommons.org/licenses/by/4.0/",
        "code_license": "MIT",
        "attribution": ATTRIBUTION,
        "citation": "A. B. Ma and A. Lerch, Representation Learning for the Automatic Indexing of "
                    "Sound Effects Libraries, Proc. ISMIR 2022.",
    }
    _write_bytes(metadata_path(out), (json.dumps(meta, indent=2) + "\n").encode())
    logger.info("wrote %s (%d tensors) and %s", out, len(state), metadata_path(out).name)


# ------------------------------------------------------------------------------------------
# Golden parity data
# ------------------------------------------------------------------------------------------


def load_reference_module(wheel: Path, workdir: Path) -> Any:
    """Import the wheel's own ``aisfx/models/cnn2d.py`` (needs only torch) from ``workdir``."""
    source = read_verified_member(wheel, REFERENCE_CODE_MEMBER, None)
    path = workdir / "aisfx_reference_cnn2d.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("aisfx_reference_cnn2d", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def golden_inputs() -> dict[str, Tensor]:
    """Fixed inputs (B, 100, 96): seeded uniform blocks, a tone+noise log-mel, silence."""
    gen = torch.Generator().manual_seed(GOLDEN_SEED)
    random_blocks = torch.rand(4, 100, 96, generator=gen)
    config = FrontendConfig()
    sr = config.sample_rate
    t = torch.arange(int(3.0 * sr), dtype=torch.float64) / sr
    tone = 0.5 * torch.sin(2 * math.pi * 1000.0 * t) + 0.2 * torch.sin(2 * math.pi * 3150.0 * t)
    noise = 0.05 * torch.randn(t.shape[0], generator=gen, dtype=torch.float64)
    wave = (tone + noise).to(torch.float32)
    logmel = LogMelFrontend(config)(wave)
    tone_blocks = to_blocks(logmel, config.block_frames, config.block_hop_frames)
    return {
        "random_blocks": random_blocks.contiguous(),
        "tone_noise_blocks": tone_blocks.contiguous(),
        "silence_blocks": torch.zeros(1, 100, 96),
    }


def write_golden(path: Path, wheel: Path, state: Mapping[str, Tensor]) -> None:
    from safetensors.torch import save

    with tempfile.TemporaryDirectory(prefix="aisfx_ref_") as tmp:
        reference = load_reference_module(wheel, Path(tmp))
        net = reference.EmbeddingNet("max", 3, 1, 64)
        prefix = "embedding_net."
        net.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
        net.eval()
        tensors: dict[str, Tensor] = {}
        with torch.inference_mode():
            for name, x in golden_inputs().items():
                tensors[f"input.{name}"] = x
                tensors[f"output.{name}"] = net(x).contiguous()
    metadata = {
        "description": "aiSFX reference EmbeddingNet('max', 3, 1, 64) outputs on fixed inputs",
        "reference_code": f"aisfx=={AISFX_VERSION}:{REFERENCE_CODE_MEMBER}",
        "checkpoint_sha256": CHECKPOINT_SHA256,
        "state_dict_keys": json.dumps(sorted(state)),
        "torch_version": torch.__version__,
        "seed": str(GOLDEN_SEED),
    }
    _write_bytes(path, save(tensors, metadata=metadata))
    logger.info("wrote golden parity data %s (%s)", path, ", ".join(sorted(tensors)))


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training convert-aisfx",
        description="Convert the aiSFX CNN weights from the aisfx wheel to safetensors.",
    )
    parser.add_argument("--wheel", type=Path, default=None,
                        help=f"path to {WHEEL_NAME} (default: pip download --no-deps into a temp dir)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output safetensors file (default: $ATR_DEMO_AISFX_WEIGHTS or "
                             "$ATR_DEMO_HOME/aisfx/aisfx_cnn.safetensors)")
    parser.add_argument("--golden", type=Path, default=None,
                        help="also regenerate the golden parity file with the reference network")
    parser.add_argument("--force", action="store_true", help="convert even if the output is up to date")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out: Path = (args.out or default_weights_path()).expanduser()
    up_to_date = not args.force and is_up_to_date(out)
    if up_to_date and args.golden is None:
        logger.info("%s is up to date (checkpoint sha256 %s); use --force to redo", out, CHECKPOINT_SHA256[:12])
        return 0
    try:
        with tempfile.TemporaryDirectory(prefix="aisfx_wheel_") as tmp:
            wheel = args.wheel.expanduser() if args.wheel is not None else download_wheel(Path(tmp))
            if not wheel.is_file():
                raise RuntimeError(f"wheel {wheel} does not exist")
            wheel_sha = file_digest(wheel)
            if wheel_sha != WHEEL_SHA256:
                raise RuntimeError(f"{wheel} has sha256 {wheel_sha}, expected {WHEEL_SHA256} (aisfx {AISFX_VERSION})")
            data = read_verified_member(wheel, CHECKPOINT_MEMBER, CHECKPOINT_SHA256)
            state, ds_dict = load_checkpoint(data)
            heads = sorted(ds_dict) if isinstance(ds_dict, Mapping) else "?"
            logger.info("checkpoint: %d tensors, dataset heads %s", len(state), heads)
            kept = backbone_state(state)
            if up_to_date:
                logger.info("%s is up to date; not rewriting it", out)
            else:
                write_weights(out, kept, wheel, wheel_sha, sorted(set(state) - set(kept)))
            if args.golden is not None:
                write_golden(args.golden.expanduser(), wheel, kept)
    except (RuntimeError, OSError, zipfile.BadZipFile, pickle.UnpicklingError) as exc:
        logger.error("convert-aisfx failed: %s", exc)
        return 1
    return 0
