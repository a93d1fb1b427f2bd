"""Device names given by users (``--device``, ``device:`` in a config) → :class:`torch.device`."""

from __future__ import annotations

import re

import torch

from atr_demo.errors import ConfigError

_DEVICE_RE = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")

#: What :func:`resolve_device` accepts, for help texts.
DEVICE_HELP = "cpu, cuda, cuda:N (GPU N) or auto (cuda when a GPU is available, else cpu)"


def resolve_device(name: str) -> torch.device:
    """``cpu`` | ``cuda`` | ``cuda:N`` | ``auto`` → a device that exists on this machine.

    Raises:
        ConfigError: an unknown name, CUDA asked for without a GPU, or a GPU index out of range.
    """
    name = name.strip().lower()
    if not _DEVICE_RE.match(name):
        raise ConfigError(f"device {name!r} is not one of {DEVICE_HELP}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {name!r}: CUDA was asked for but no GPU is available; use cpu or auto")
    device = torch.device(name)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError(f"device {name!r}: this machine has {count} GPU(s) (cuda:0 to cuda:{count - 1})")
    return device
