"""Matplotlib figures of callback results: zero-shot bar charts and transport-plan heatmaps.

Built with :class:`matplotlib.figure.Figure` (no pyplot, no global backend change), so
concurrent requests do not share state.
"""

from __future__ import annotations

from typing import Any

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from atr_demo.ui.render import col_key, row_key, shorten


def zero_shot_figure(results: list[dict[str, Any]]) -> Figure:
    """Horizontal bar charts, one per file, of the top labels and their probabilities."""
    n = max(1, len(results))
    top = max((len(r["labels"]) for r in results), default=1)
    fig = Figure(figsize=(7.5, max(2.2, (0.42 * top + 0.9)) * n), layout="constrained")
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    for ax, result in zip(axes, results, strict=False):
        labels = [shorten(x["label"].replace("_", " "), 30) for x in result["labels"]][::-1]
        values = [x["probability"] for x in result["labels"]][::-1]
        bars = ax.barh(labels, values, color="#4c72b0")
        ax.bar_label(bars, labels=[f"{v:.1%}" for v in values], padding=3, fontsize=9)
        ax.set_xlim(0, min(1.0, max(values) * 1.25 + 0.05))
        ax.set_xlabel("probability")
        ax.set_title(shorten(result["name"], 60), fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
    return fig


def transport_figure(data: dict[str, Any]) -> Figure:
    """Cosine-similarity matrix beside the transport plan; the plan's best match per row is boxed.

    Axes are titled, both colour bars labelled; tick labels are the keys (1, 2, … for clips; A, B, …
    for captions) and a shortened label; the summary's legend table gives every label in full.
    """
    n, m = len(data["files"]), len(data["captions"])
    ylabels = [f"{row_key(i)}  {shorten(f, 32)}" for i, f in enumerate(data["files"])]
    xlabels = [f"{col_key(j)}  {shorten(c, 34)}" for j, c in enumerate(data["captions"])]
    fig = Figure(figsize=(max(9.0, 1.3 * m + 5.5), max(4.0, 0.5 * n + 3.6)), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    plan = torch.tensor(data["plan"])
    panels = (
        (axes[0], torch.tensor(data["cosine"]), "cosine similarity", "cosine similarity ⟨audio, text⟩", "viridis"),
        (axes[1], plan, f"transport plan π (ε = {data['eps']:g}, mass = {data['mass']:g})",
         "plan mass π_ij (all entries sum to the mass)", "magma"),
    )
    for ax, values, title, bar_label, cmap in panels:
        image = ax.imshow(values.numpy(), cmap=cmap, aspect="auto")
        bar = fig.colorbar(image, ax=ax, shrink=0.8)
        bar.set_label(bar_label, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(m), xlabels, rotation=40, ha="right", fontsize=8)
        ax.set_yticks(range(n), ylabels, fontsize=8)
        ax.set_xlabel("captions (columns; full text in the legend below)", fontsize=9)
        for i, j in enumerate(data["best_match"]):
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="#00e5ff", lw=2))
    axes[0].set_ylabel("gallery clips (rows)", fontsize=9)
    axes[1].tick_params(labelleft=False)
    if n * m <= 64:
        for i in range(n):
            for j in range(m):
                axes[1].text(j, i, f"{plan[i, j]:.2f}", ha="center", va="center", fontsize=7,
                             color="white" if plan[i, j] < plan.max() * 0.6 else "black")
    return fig
