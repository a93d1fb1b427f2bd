"""Which gallery files the app serves over HTTP: the gallery's audio files, nothing else of its folders.

Result players fetch a gallery clip by its public, gallery-relative name at
``gallery_audio/<name>`` (:func:`gallery_url`), so no server path appears in the page;
:class:`GalleryFileGuard` answers that route from a name → file map.

Gradio serves a file at ``/gradio_api/file=<absolute path>`` when it lies under one of the
``allowed_paths`` given to ``launch``. The gallery folders must be allowed (so that a result's
audio can be handed to a player), but a folder allows *every* file in it: ``.env``, notes,
``gallery.jsonl``. :class:`GalleryFileGuard`, an ASGI middleware, answers 403 to any request for a
path under a gallery folder that is not one of the gallery's indexed audio files (found by
extension, :data:`atr_demo.fileio.AUDIO_EXTENSIONS`, without dotfiles or dot-folders). The check is
one set lookup per request, whatever the gallery's size (Gradio's own per-file ``allowed_paths``
check costs ~45 µs per listed file per request).
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Awaitable, Callable, Container, Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.responses import FileResponse, PlainTextResponse

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: The part of a Gradio file URL's path before the absolute file path.
FILE_ROUTE = "/file="
#: The route of gallery clips by public name (relative to the page: ``gallery_audio/<name>``).
AUDIO_ROUTE = "/gallery_audio/"


def gallery_url(name: str) -> str:
    """The URL (relative to the page) a player fetches the gallery clip with public ``name`` from."""
    return AUDIO_ROUTE.lstrip("/") + quote(name)


def served_paths(files: Iterable[str | Path]) -> frozenset[str]:
    """The absolute paths (as given and symlink-resolved) under which ``files`` may be requested."""
    out: set[str] = set()
    for f in files:
        out.add(os.path.abspath(f))
        out.add(str(Path(f).resolve()))
    return frozenset(out)


def is_refused(request_path: str, roots: Iterable[str], served: Container[str]) -> bool:
    """True when ``request_path`` (a URL path) asks for a file under one of ``roots`` that is not in ``served``."""
    at = request_path.find(FILE_ROUTE)
    if at < 0:
        return False
    target = request_path[at + len(FILE_ROUTE):]
    if not target.startswith("/"):
        return False  # relative paths and URLs: Gradio's own checks apply
    target = os.path.abspath(target)
    inside = any(target == root or target.startswith(root.rstrip("/") + "/") for root in roots)
    return inside and target not in served


class GalleryFileGuard:
    """ASGI middleware: 403 for files under the gallery ``roots`` other than the ``served`` audio files.

    Use ``FastAPI(middleware=[Middleware(GalleryFileGuard, roots=..., served=...)])``, e.g. through
    ``demo.launch(app_kwargs=...)`` (see :func:`atr_demo.ui.layout.launch_options`).
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], roots: Iterable[str | Path],
                 served: Container[str], names: Mapping[str, str | Path] | None = None) -> None:
        self.app = app
        self.roots = [os.path.abspath(r) for r in roots] + [str(Path(r).resolve()) for r in roots]
        self.served = served
        # a plain dict is copied; any other mapping (an index's lazy one) is looked up per request
        self.names: Mapping[str, Any] = ({str(k): str(v) for k, v in names.items()} if isinstance(names, dict)
                                         else names if names is not None else {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        at = path.find(AUDIO_ROUTE)
        if scope.get("type") == "http" and at >= 0 and scope.get("method") in ("GET", "HEAD"):
            found = self.names.get(path[at + len(AUDIO_ROUTE):])
            target = None if found is None else str(found)
            if target is None or not os.path.isfile(target):
                response: Any = PlainTextResponse("No such gallery clip.", status_code=404)
            else:
                kind = mimetypes.guess_type(target)[0] or "application/octet-stream"
                response = FileResponse(target, media_type=kind, headers={"Cache-Control": "public, max-age=3600"})
            await response(scope, receive, send)
            return
        if scope.get("type") == "http" and is_refused(path, self.roots, self.served):
            body = b"File not allowed: only the gallery's audio files are served."
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
