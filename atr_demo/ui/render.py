"""What the UI shows from callback results: Markdown lines and tables, result-slot updates, the model panel."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import gradio as gr

from atr_demo.fileio import markdown_table
from atr_demo.ui.state import AppState


def as_text(text: str) -> str:
    """``text`` escaped for Markdown/HTML output: tags such as ``<b>`` in a query or caption show as typed."""
    return html.escape(str(text), quote=False)


def shorten(text: str, width: int = 38) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def describe_result(row: dict[str, Any]) -> str:
    """Markdown line under a result's audio player: caption, score, source, author, licence."""
    caption = as_text(row["caption"]) if row.get("caption") else f"*{as_text(row.get('name', ''))}* (no caption)"
    bits = [f"score **{row['score']:.4f}**", f"`{row.get('name', '')}`"]
    if row.get("source"):
        bits.append(f"source: {row['source']}")
    if row.get("author"):
        bits.append(f"by {row['author']}")
    if row.get("licence"):
        bits.append(f"licence: {row['licence']}")
    if row.get("origin") == "yours":
        bits.append("your upload")
    return f"**{row['rank']}.** {caption}  \n" + " · ".join(bits)


def render_slots(results: list[dict[str, Any]] | None, n_slots: int) -> list[Any]:
    """Updates for ``n_slots`` (row, audio, markdown) triples from result rows."""
    results = results or []
    rows, audios, texts = [], [], []
    for i in range(n_slots):
        if i < len(results):
            r = results[i]
            rows.append(gr.update(visible=True))
            audios.append(gr.update(value=r["file"], label=f"{r['rank']}. {r['name']}"))
            texts.append(describe_result(r))
        else:
            rows.append(gr.update(visible=False))
            audios.append(None)
            texts.append("")
    return rows + audios + texts


def results_status(results: list[dict[str, Any]] | None, query: str, mode: str) -> str:
    """One line above the results: how many, for which query, scored how."""
    if not results:
        return ""
    return f"**{len(results)}** result(s) for “{as_text(shorten(query, 80))}” — {mode} scoring"


def caption_table(result: dict[str, Any] | None) -> list[list[Any]]:
    """Rows (rank, caption, score, probability, origin) for the audio → text table."""
    return [
        [c["rank"], c["caption"], round(c["score"], 4), round(c["probability"], 4), c["origin"]]
        for c in (result or {}).get("captions", [])
    ]


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
        best.append([f"`{data['files'][i]}`", shorten(data["captions"][j], 70), f"{share:.1%}"])
    lines.append(markdown_table(["clip", "plan's best caption", "share of the clip's mass"], best))
    return "\n".join(lines)


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
        ["sample rate", f"{state.model.sample_rate} Hz"],
        ["gallery", f"{len(state.gallery)} clips from {', '.join(f'`{r.name}/`' for r in state.roots) or '—'}"],
    ]
    lines = [f"### {cfg.name}", "", markdown_table(["setting", "value"], settings), ""]
    metrics = model_card_metrics(source)
    lines.append(
        metrics or "*No evaluation metrics: the model has no model card (README.md) with an evaluation section.*"
    )
    return "\n".join(lines)
