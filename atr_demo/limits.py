"""Per-request bounds of the app and the library, in one place.

Every bound has a default here, an environment variable (``ATR_<NAME>``, e.g. ``ATR_MAX_PROMPTS``)
and an ``app.py`` flag (``--max-prompts``) for self-hosters; a request over a bound is refused
with a :class:`~atr_demo.errors.LimitError` whose message states the bound and what to do.

The defaults keep one request of the bundled model on a 2-core CPU to a few seconds, so one user
cannot stall the queue for the others (measured with ``benchmarks/concurrent_clients.py``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from atr_demo.errors import ConfigError, LimitError

#: Prefix of the environment variables that override :class:`Limits` fields.
ENV_PREFIX = "ATR_"


@dataclass(frozen=True)
class Limits:
    """Bounds of one request.

    Attributes:
        max_prompts: text prompts embedded for one zero-shot request (labels × templates, plus the
            built-in descriptions); 2 000 labels × 6 templates took 60–77 s before this bound.
        max_files: files classified in one zero-shot request (uploads plus the recording).
        max_library_files: clips one browser session may add to its own library.
        max_upload_mb: size of one uploaded file in megabytes (10⁶ bytes).
        max_upload_s: duration of one uploaded or recorded clip in seconds (the model's own
            ``max_duration_s`` applies when it is lower).
        max_k: results of one search (text → audio, audio → text). A text query's length is
            bounded by the text encoder (:data:`atr_demo.backbones.text.MAX_TEXT_CHARS`).
        upload_ttl_s: uploads older than this are deleted from the server (checked as often).
    """

    max_prompts: int = 1000
    max_files: int = 8
    max_library_files: int = 50
    max_upload_mb: float = 50.0
    max_upload_s: float = 120.0
    max_k: int = 100
    upload_ttl_s: int = 3600

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not value > 0:
                raise ConfigError(f"limit {f.name} must be positive, got {value!r}")

    def replace(self, **changes: Any) -> Limits:
        """A copy with ``changes`` applied (``None`` values are ignored, so unset flags keep the default)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """Defaults overridden by ``ATR_MAX_PROMPTS`` … ``ATR_UPLOAD_TTL_S`` where set and non-empty."""
        environ = os.environ if environ is None else environ
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = ENV_PREFIX + f.name.upper()
            raw = environ.get(name, "").strip()
            if not raw:
                continue
            kind = int if f.type in ("int", int) else float
            try:
                changes[f.name] = kind(raw)
            except ValueError as exc:
                raise ConfigError(
                    f"environment variable {name}={raw!r} is not a {'whole ' if kind is int else ''}number; "
                    f"unset it or give a positive number (default {getattr(cls(), f.name)})"
                ) from exc
        return cls().replace(**changes)

    def check_count(self, what: str, count: int, bound: int, fix: str) -> None:
        """Raise :class:`LimitError` when ``count`` > ``bound``: ``"<count> <what> ... limit is <bound>; <fix>"``."""
        if count > bound:
            raise LimitError(f"{count} {what} is more than the limit of {bound} per request; {fix}")


#: The defaults (no environment), for signatures and labels.
DEFAULT_LIMITS = Limits()


def check_k(k: Any, limit: int | None = None, what: str = "k") -> int:
    """``k`` as an int in ``1 … limit``; :class:`LimitError` naming the valid range otherwise."""
    bound = f"between 1 and {limit}" if limit else "at least 1 (a larger k than there are clips gives them all)"
    if isinstance(k, bool):
        raise LimitError(f"{what} must be a whole number {bound}, got {k!r}")
    try:
        value = int(k)
    except (TypeError, ValueError) as exc:
        raise LimitError(f"{what} must be a whole number {bound}, got {k!r}") from exc
    if value != k and not (isinstance(k, str) and k.strip() == str(value)):
        raise LimitError(f"{what} must be a whole number {bound}, got {k!r}")
    if value < 1 or (limit is not None and value > limit):
        raise LimitError(f"{what} must be {bound}, got {value}")
    return value
