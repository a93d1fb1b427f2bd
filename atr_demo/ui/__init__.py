"""The Gradio demo, one module per concern.

* :mod:`~atr_demo.ui.state`: :class:`AppState` (model, shared gallery, caches) and :func:`make_state`;
* :mod:`~atr_demo.ui.callbacks`: the callbacks, plain functions ``(state, values…) → plain data``,
  tested without a server;
* :mod:`~atr_demo.ui.render` and :mod:`~atr_demo.ui.figures`: Markdown, component updates and
  matplotlib figures built from callback results;
* :mod:`~atr_demo.ui.errors`: :class:`~atr_demo.ui.errors.UserError`, what the user sees when a request fails;
* :mod:`~atr_demo.ui.layout`: :func:`build_demo` wires the callbacks into :class:`gradio.Blocks`
  (never launches a server; ``app.py`` does, with :func:`launch_options`).
"""

from atr_demo.ui.layout import build_demo, launch_options
from atr_demo.ui.state import AppState, make_state

__all__ = ["AppState", "build_demo", "launch_options", "make_state"]
