"""What every figure shares: the theme, colours, legends outside the data, labels on bars, saving.

Figures are built on ``matplotlib.figure.Figure`` without pyplot (no global state: headless and in
notebooks alike), with constrained layout so that titles, labels and outside legends fit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure


PALETTE = {"Baseline": "#7f7f7f", "ARES": "#d62728", "paper": "#1f77b4"}
OUTCOME_COLORS = {"wins": "#2ca02c", "ties": "#c7c7c7", "losses": "#d62728"}
POINT_COLORS = {"before RL": "#7f7f7f", "after RL": "#ff7f0e", "after SFT": "#2ca02c"}
POINT_LABELS = {"before_rl": "before RL", "baseline": "before RL", "after_rl": "after RL", "after_sft": "after SFT"}


def new_figure(width: float, height: float) -> Figure:
    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.9)
    return Figure(figsize=(width, height), layout="constrained")


def legend_below(fig: Figure, ax: Any, ncols: int | None = None, **kwargs: Any) -> None:
    """The axes' legend under the whole figure, outside every panel's data."""
    handles, labels = ax.get_legend_handles_labels()
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols or min(len(labels), 4), frameon=False,
                   fontsize=8, **kwargs)


def legend_right(ax: Any, title: str | None = None) -> None:
    """The axes' legend to the right of its panel, outside the data."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8, title=title,
                  title_fontsize=8)


def label_bars(ax: Any, xs: Sequence[float], heights: Sequence[float], fmt: str = "{:.0f}", offset: float = 1.0,
               fontsize: float = 6.5) -> None:
    """The value above each bar, so a bar of height 0 is still seen (and read)."""
    for x, h in zip(xs, heights):
        if h is None or not np.isfinite(h):
            continue
        ax.annotate(fmt.format(h), (x, h), xytext=(0, offset), textcoords="offset points", ha="center",
                    va="bottom", fontsize=fontsize, color="#333")


def mark_zero_bars(ax: Any, xs: Sequence[float], heights: Sequence[float], width: float, color: str) -> None:
    """A bar of height 0 draws nothing: a short thick line at 0 shows it is there, and zero."""
    for x, h in zip(xs, heights):
        if h is not None and np.isfinite(h) and abs(h) < 1e-12:
            ax.plot([x - width / 2, x + width / 2], [0, 0], color=color, lw=3, solid_capstyle="butt", zorder=3)


def percent_axis(ax: Any, axis: str = "y", top: float = 100.0) -> None:
    getattr(ax, f"set_{axis}lim")(0, top)
    fmt = (lambda v, _: f"{v:.0f}%") if top > 1.5 else (lambda v, _: f"{100 * v:.0f}%")
    from matplotlib.ticker import FuncFormatter

    getattr(ax, f"{axis}axis").set_major_formatter(FuncFormatter(fmt))


def save_figure(fig: Figure, figures_dir: str | Path, name: str) -> dict[str, str]:
    """``<name>.png`` (150 dpi) and ``<name>.pdf``; returns both paths."""
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for ext in ("png", "pdf"):
        path = figures_dir / f"{name}.{ext}"
        fig.savefig(path, dpi=150, bbox_inches="tight")
        out[ext] = str(path)
    return out
