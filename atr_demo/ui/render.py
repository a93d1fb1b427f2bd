"""What the UI shows from callback results: Markdown lines and tables, the results HTML, the model panel."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from atr_demo.fileio import markdown_table
from atr_demo.ui.state import AppState


def as_text(text: str) -> str:
    """``text`` escaped for Markdown/HTML output: tags such as ``<b>`` in a query or caption show as typed."""
    return html.escape(str(text), quote=False)


def shorten(text: str, width: int = 38) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def caption_table(result: dict[str, Any] | None, key: str = "captions") -> list[list[Any]]:
    """Rows (rank, caption, score, probability) of ``result[key]`` (``"captions"``: the gallery's,
    ``"candidates"``: the user's own) for the audio → text tables."""
    return [
        [c["rank"], c["caption"], round(c["score"], 4), round(c["probability"], 4)]
        for c in (result or {}).get(key) or []
    ]


#: One line per scoring mode: what a score means.
SCORE_MEANINGS = {
    "cosine": "cosine similarity of query and clip in the joint space (−1…1, higher is closer)",
    "metric": "minus the learned ground-metric distance between query and clip (0 is identical, higher is closer)",
    "transport": "share of the query's mass the optimal-transport plan sends to this item when the query competes "
                 "with the gallery's reference queries for it (0…1, sums to 1 over all items)",
}


def score_meaning(mode: str, calibration: dict[str, Any] | None = None) -> str:
    """One line explaining the scores of ``mode`` (with the unrelated-pair level when calibrated)."""
    line = SCORE_MEANINGS.get(mode, mode)
    if mode == "cosine" and calibration:
        line += f"; unrelated caption–clip pairs stay under {calibration['threshold']:.2f} 19 times in 20"
    return line


def match_note(payload: dict[str, Any] | None, calibration: dict[str, Any] | None) -> str:
    """A "no good match" warning when the best cosine is under the calibrated threshold, else ``""``."""
    if not payload or not payload.get("no_good_match"):
        return ""
    rates = ""
    if calibration:
        rates = (f" (calibrated on held-out clips: this flags {calibration['present_flagged']:.0%} of queries "
                 f"that do have a match and {calibration['absent_flagged']:.0%} of those that don't, so treat it "
                 "as a hint)")
    return (f"⚠️ **No good match**: the best cosine, {payload['best_cosine']:.3f}, is below "
            f"{payload['threshold']:.3f}, a score 1 in 20 unrelated caption–clip pairs reaches{rates}.")


def search_status(payload: dict[str, Any] | None, calibration: dict[str, Any] | None = None) -> str:
    """Markdown above the results: how many, for which query (carried with the results), scored how."""
    if not payload:
        return ""
    results = payload.get("results") or []
    lines = [f"**{len(results)}** result(s) for “{as_text(shorten(payload['query'], 80))}” — "
             f"{payload['mode']} scoring: {score_meaning(payload['mode'], calibration)}."]
    note = match_note(payload, calibration)
    if note:
        lines.append(note)
    return "  \n".join(lines)


def file_url(path: str | None) -> str | None:
    """The URL Gradio serves an allowed file at (relative to the page), or ``None``."""
    return f"gradio_api/file={quote(str(path))}" if path else None


def results_html(rows: list[dict[str, Any]] | None, query: str = "") -> str:
    """The ranked results as one HTML list: caption, score, details and a lazy ``<audio preload="none">``.

    ``rows`` are result rows whose ``file`` is the server path to play (:func:`~atr_demo.ui.callbacks.playable`)
    or ``None`` (no player). Every text is escaped. One component for all results renders much
    faster than one audio player component per result.
    """
    if not rows:
        return ""
    items = []
    for r in rows:
        caption = as_text(r["caption"]) if r.get("caption") else f"<i>{as_text(r.get('name', ''))}</i> (no caption)"
        bits = [f"<code>{as_text(r.get('name', ''))}</code>"]
        for key, label in (("source", "source: "), ("author", "by "), ("licence", "licence: ")):
            if r.get(key):
                bits.append(f"{label}{as_text(r[key])}")
        if r.get("origin") == "yours":
            bits.append("your upload")
        url = r.get("url") or file_url(r.get("file"))
        player = (f'<audio controls preload="none" src="{html.escape(url)}"></audio>' if url
                  else '<span class="no-audio">(audio not available)</span>')
        items.append(
            f'<li class="result-slot"><div class="result-head"><b>{r["rank"]}.</b> {caption} '
            f'<span class="result-score">score {r["score"]:.4f}</span></div>{player}'
            f'<div class="result-meta">{" · ".join(bits)}</div></li>'
        )
    return (f'<ol class="atr-results" data-query="{html.escape(query)}">' + "".join(items) + "</ol>")


def zero_shot_table(results: list[dict[str, Any]] | None) -> list[list[Any]]:
    """Rows (file, rank, label, probability) of zero-shot results; a file that could not be labelled
    gets one row with its reason (e.g. silence) in the label column."""
    rows: list[list[Any]] = []
    for r in results or []:
        if r.get("error") or not r.get("labels"):
            rows.append([r.get("name", ""), "", r.get("error") or "no labels", ""])
            continue
        for rank, x in enumerate(r["labels"], 1):
            rows.append([r.get("name", ""), rank, x["label"].replace("_", " "), f"{x['probability']:.1%}"])
    return rows


def transport_summary(data: dict[str, Any]) -> str:
    """Markdown under the heatmap: marginals, transported mass, best matches."""
    n, m = len(data["files"]), len(data["captions"])
    rows = ", ".join(f"{v:.3f}" for v in data["row_marginals"])
    cols = ", ".join(f"{v:.3f}" for v in data["col_marginals"])
    lines = [
        f"- **Transported mass:** {data['transported_mass']:.4f} (target {data['mass']:g}); "
        f"ε = {data['eps']:g}. Boxes mark the plan's best caption for each clip.",
        f"- **Row marginals** (clips, target ≤ 1/{n} = {1 / n:.3f}): {rows}",
        f"- **Column marginals** (captions, target ≤ 1/{m} = {1 / m:.3f}): {cols}",
        "",
    ]
    best = []
    for i, j in enumerate(data["best_match"]):
        row_sum = sum(data["plan"][i]) or 1.0
        share = data["plan"][i][j] / row_sum
        best.append([f"{i + 1}. `{data['files'][i]}`", f"{col_key(j)}. {cell(data['captions'][j])}", f"{share:.1%}"])
    lines.append(markdown_table(["clip (row)", "plan's best caption (column)", "share of the clip's mass"], best))
    lines += ["", "**Captions (columns)**", ""]
    lines.append(markdown_table(["key", "caption"], [[col_key(j), cell(c)] for j, c in enumerate(data["captions"])]))
    return "\n".join(lines)


def row_key(i: int) -> str:
    """Key of the ``i``-th clip (row) in the heatmap and its legend: 1, 2, 3, …"""
    return str(i + 1)


def col_key(j: int) -> str:
    """Key of the ``j``-th caption (column): A, B, …, Z, AA, AB, …"""
    key = ""
    j += 1
    while j:
        j, r = divmod(j - 1, 26)
        key = chr(65 + r) + key
    return key


def cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell (escaped, ``|`` and newlines neutralised)."""
    return as_text(" ".join(str(text).split())).replace("|", "\\|")


def model_card_metrics(source: str | Path | None) -> str:
    """The evaluation / metrics section of the model card ``README.md`` in ``source``, if any."""
    if not source:
        return ""
    card = Path(source) / "README.md"
    if not card.is_file():
        return ""
    text = card.read_text(encoding="utf-8")
    text = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)
    sections = re.split(r"(?m)^(?=## )", text)
    keep = [s for s in sections if re.match(r"## .*(evaluat|metric|result)", s, flags=re.I)]
    return "\n".join(s.strip() for s in keep)


def _calibration_line(calibration: dict[str, Any] | None) -> str:
    """The no-match threshold and how it was calibrated, in one table cell."""
    if not calibration:
        return "not calibrated (the gallery has too few captioned clips)"
    return (f"cosine {calibration['threshold']:.3f}: {calibration['level']:.0%} of unrelated caption–clip pairs of "
            f"{calibration['clips']} held-out clips score lower; it flags {calibration['present_flagged']:.0%} of "
            f"their captions with the clip present, {calibration['absent_flagged']:.0%} with it removed")


def model_info_markdown(state: AppState) -> str:
    """Model panel: name, backbones, scoring settings, gallery, and the model card's metrics."""
    cfg = state.model.config

    def tower(b: Any) -> str:
        name = f" `{b.name}`" if b.name else ""
        rev = f" @ `{b.revision}`" if b.revision else ""
        return f"{b.kind}{name}{rev}" + (" (fine-tuned)" if b.trainable else " (frozen)")

    source = getattr(state.model, "source", None)
    loaded = state.model_ref or (Path(source).name if source else "built-in")
    settings = [
        ["loaded from", f"`{loaded}`"],
        ["audio backbone", tower(cfg.audio)],
        ["text backbone", tower(cfg.text)],
        ["joint space", f"{cfg.embed_dim}-d, {cfg.head} heads"],
        ["ground metric", str(cfg.metric)],
        ["training loss", str(cfg.loss)],
        ["ε / transported mass", f"{cfg.eps:g} / {cfg.mass:g}"],
        ["default scoring", str(cfg.scoring)],
        ["scoring modes offered", ", ".join(state.modes) + ("" if "metric" in state.modes else
                                  " (metric scoring ranks exactly like cosine: M is a multiple of the identity)")],
        ["“no good match” below", _calibration_line(state.calibration)],
        ["sample rate", f"{state.model.sample_rate} Hz"],
        ["gallery", f"{len(state.gallery)} clips from {', '.join(f'`{r.name}/`' for r in state.roots) or '—'}"],
    ]
    lines = [f"### {cfg.name}", "", markdown_table(["setting", "value"], settings), "", "**What the scores mean**", ""]
    lines += [f"- *{mode}*: {score_meaning(mode, state.calibration)}." for mode in state.modes]
    lines.append("")
    metrics = model_card_metrics(source)
    lines.append(
        metrics or "*No evaluation metrics: the model has no model card (README.md) with an evaluation section.*"
    )
    return "\n".join(lines)
