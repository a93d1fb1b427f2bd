"""Errors the app shows to its user: :class:`UserError` and the :func:`user_errors` decorator.

A callback raises :class:`UserError` (a :class:`gradio.Error`) for anything the user can fix;
:func:`user_errors` turns the library's :class:`~atr_demo.errors.ATRError` (and an ``OSError``
such as a permission error) into one, with absolute server paths shown by their file name only.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr

from atr_demo.errors import ATRError

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
_QUOTED_PATH = re.compile(r"(['\"])(?:/[^'\"/]+)+/([^'\"/]+)\1")


def hide_paths(message: str) -> str:
    """Show quoted absolute paths in an error message by their file name (no server paths leak)."""
    return _QUOTED_PATH.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(1)}", message)


_hide_paths = hide_paths


class UserError(gr.Error):
    """A :class:`gradio.Error` for problems the user can fix: shown in the UI, not logged as a traceback."""

    def __init__(self, message: str, duration: float | None = 10, title: str = "Cannot do that") -> None:
        super().__init__(message, duration=duration, title=title, print_exception=False)


def user_errors(fn: F) -> F:
    """Turn :class:`ATRError` (a user-caused problem) into :class:`gradio.Error` with its message.

    Gradio shows ``gr.Error`` as a toast in the UI and as an error to API clients; the server
    keeps serving.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ATRError as exc:
            logger.info("%s: user error: %s", fn.__name__, exc)
            raise UserError(hide_paths(str(exc))) from exc
        except OSError as exc:  # a file the server cannot read: one line, no server path
            logger.warning("%s: %s", fn.__name__, exc)
            name = f" {Path(exc.filename).name}" if exc.filename else ""
            raise UserError(
                f"the file{name} cannot be read ({exc.strerror or 'I/O error'}); upload it again or try another file"
            ) from exc

    return wrapper  # type: ignore[return-value]
