"""Result figures: win rate, answer accuracy, the image ablation, degeneration, claims.

Shares are drawn with their number of items and a 95% interval: the win rate's seeded bootstrap
interval (``aresnb.evaluation.winrate``), Wilson intervals on accuracies (the test split has only
12-24 problems a category here). Every bar carries its value, so a bar of 0 is seen.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from aresnb.evaluation.intervals import wilson_interval
from aresnb.paper_numbers import ACCURACY_COLUMNS
from aresnb.present.plots.style import (OUTCOME_COLORS, PALETTE, POINT_COLORS, POINT_LABELS, label_bars, legend_below,
                                        legend_right, mark_zero_bars, new_figure, percent_axis)

CLAIM_COLORS = {"true": "#2ca02c", "neutral": "#c7c7c7", "unverifiable": "#9467bd", "false": "#d62728"}
DEGENERATION_METRICS = {"repeated_sentence_rate": "sentences repeating an earlier one",
                        "unfinished_sentence_rate": "rationales ending mid-sentence",
                        "repeated_word_rate": "words repeating the previous word",
                        "empty_rate": "empty rationales"}


def win_rate_figure(table: pd.DataFrame, reference: float | None = None, judge: str = "") -> Figure:
    """Left: the win rate (paper protocol) per group with its 95% interval and n; right: both orders."""
    t = table.iloc[::-1].reset_index(drop=True)  # "All" on top
    fig = new_figure(10.5, 0.38 * len(t) + 2.2)
    left, right = fig.subplots(1, 2, sharey=True, width_ratios=[1.1, 1])
    y = np.arange(len(t))
    wr = 100 * t["win_rate"].to_numpy(dtype=float)
    err = np.vstack([wr - 100 * t["win_rate_lo"].to_numpy(dtype=float), 100 * t["win_rate_hi"].to_numpy(dtype=float) - wr])
    left.barh(y, wr, color=PALETTE["ARES"], alpha=0.75, height=0.65, label="ARES preferred (one random order)")
    left.errorbar(wr, y, xerr=err, fmt="none", ecolor="k", capsize=3, lw=1, label="95% bootstrap interval")
    mark_zero_bars(left, y, wr, 0.65, PALETTE["ARES"])
    for yi, v in zip(y, wr):
        left.annotate(f"{v:.0f}%", (v, yi), xytext=(4, 4), textcoords="offset points", fontsize=7)
    left.axvline(50, color="k", lw=0.8, ls=":", label="no preference (50%)")
    if reference is not None:
        left.axvline(reference, color=PALETTE["paper"], ls="--", lw=1.2, label=f"paper {reference:.1f}%")
    left.set_yticks(y, [f"{g} (n={n})" for g, n in zip(t["group"], t["n"])])
    percent_axis(left, "x")
    left.set_xlabel("win rate of ARES over the baseline")
    left.set_title("Win rate (the paper's protocol)")
    start = np.zeros(len(t))
    for key, color in OUTCOME_COLORS.items():
        share = 100 * (t[key] / t["n"]).to_numpy(dtype=float)
        right.barh(y, share, left=start, color=color, height=0.65, label=f"{key[:-1] if key != 'losses' else 'loss'}"
                   f"{'' if key != 'ties' else ' or inconsistent'}")
        start += share
    percent_axis(right, "x")
    right.set_xlabel("share of problems")
    right.set_title("Both orders: ARES preferred in both = win")
    legend_below(fig, left, ncols=4)
    handles, labels = right.get_legend_handles_labels()
    right.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=8)
    fig.suptitle(f"ARES vs the baseline on the test split{f', judge {judge}' if judge else ''}")
    return fig


def _category_bars(ax: Any, values: Mapping[str, Sequence[float]], counts: Mapping[str, int] | None,
                   colors: Mapping[str, str], columns: Sequence[str]) -> None:
    """Grouped bars (one group per category, one bar per series) with Wilson intervals when n is known."""
    xs = np.arange(len(columns))
    width = 0.8 / max(1, len(values))
    for k, (name, vals) in enumerate(values.items()):
        v = np.array([np.nan if x is None else float(x) for x in vals])
        pos = xs + (k - (len(values) - 1) / 2) * width
        ax.bar(pos, v, width=width * 0.95, color=colors[name], label=name)
        mark_zero_bars(ax, pos, v, width * 0.95, colors[name])
        if counts and "paper" not in name:
            ns = [counts.get(c, 0) for c in columns]
            ci = [wilson_interval(a / 100 * n, n) if n and np.isfinite(a) else (np.nan, np.nan) for a, n in zip(v, ns)]
            err = np.array([[a - 100 * lo for a, (lo, _) in zip(v, ci)], [100 * hi - a for a, (_, hi) in zip(v, ci)]])
            err = np.clip(err, 0, None)  # rounding can put the interval a hair inside its point
            ax.errorbar(pos, v, yerr=err, fmt="none", ecolor="#333", capsize=2, lw=0.8)
        label_bars(ax, pos, v, offset=1.5)
    ticks = [f"{c}\n(n={counts[c]})" if counts and c in counts else c for c in columns]
    ax.set_xticks(xs, ticks, fontsize=8)
    percent_axis(ax, "y", top=105)
    ax.set_ylabel("accuracy (%)")


def _model_colors(models: Sequence[str]) -> dict[str, str]:
    """Baseline grey, ARES red, the paper's rows blue, other models the default cycle."""
    out, k = {}, 2
    for m in dict.fromkeys(models):
        if m.startswith("Baseline"):
            out[m] = PALETTE["Baseline"] if "paper" not in m else "#aec7e8"
        elif m.startswith("ARES"):
            out[m] = PALETTE["ARES"] if "paper" not in m else PALETTE["paper"]
        else:
            out[m], k = f"C{k}", k + 1
    return out


def accuracy_figure(table: pd.DataFrame, counts: Mapping[str, int] | None = None) -> Figure | None:
    """Accuracy (%) by category: one panel per answer format, one bar per model, n and 95% intervals."""
    if table is None or table.empty:
        return None
    cols = [c for c in ACCURACY_COLUMNS if c in table.columns and table[c].notna().any()]
    formats = list(dict.fromkeys(table.loc[table["source"] == "this run", "format"])) or list(table["format"].unique())
    fig = new_figure(max(7.5, 0.95 * len(cols)), 3.1 * len(formats) + 0.6)
    axes = fig.subplots(len(formats), 1, squeeze=False)[:, 0]
    for ax, fmt in zip(axes, formats):
        sub = table[table["format"] == fmt]
        label = {m: (m if s == "this run" else f"{m} ({s})") for m, s in zip(sub["model"], sub["source"])}
        values = {label[m]: list(row[cols]) for m, (_, row) in zip(sub["model"], sub.iterrows())}
        _category_bars(ax, values, counts, _model_colors(list(values)), cols)
        ax.set_title(f"Answer accuracy by category, {fmt} "
                     f"({'question, context, options' if fmt == 'QCM-A' else 'with the model’s own rationale'})")
    legend_below(fig, axes[0], ncols=4)
    return fig


def image_ablation_figure(ablation: Mapping[str, Any] | None, counts: Mapping[str, int] | None = None) -> Figure | None:
    """The same answer head trained and tested with and without the image features, by category."""
    if not ablation:
        return None
    by = ablation["by_category"]
    cols = [c for c in ACCURACY_COLUMNS if c in by["with_image"]]
    values = {"with image features": [by["with_image"][c] for c in cols],
              "image features zeroed": [by["without_image"].get(c) for c in cols]}
    fig = new_figure(max(7.5, 0.95 * len(cols)), 3.6)
    ax = fig.subplots()
    _category_bars(ax, values, counts, {"with image features": PALETTE["Baseline"],
                                        "image features zeroed": "#c5b0d5"}, cols)
    ax.set_title(f"Does the answer use the image? {ablation.get('format', 'QCM-A')} head on the "
                 f"{ablation.get('model', 'baseline')} model: {ablation['accuracy_with_image']:.1f}% with, "
                 f"{ablation['accuracy_without_image']:.1f}% without")
    legend_below(fig, ax, ncols=2)
    return fig


def degeneration_figure(rates: Mapping[str, Mapping[str, float]] | None, split: str = "val") -> Figure | None:
    """Repetition and unfinished-sentence rates before RL, after RL and after SFT on corrections."""
    if not rates:
        return None
    points = [p for p in ("before_rl", "baseline", "after_rl", "after_sft") if p in rates]
    metrics = [m for m in DEGENERATION_METRICS if all(m in rates[p] for p in points)]
    fig = new_figure(8.5, 3.4)
    ax = fig.subplots()
    xs = np.arange(len(metrics))
    width = 0.8 / len(points)
    for k, p in enumerate(points):
        v = np.array([100 * float(rates[p][m]) for m in metrics])
        pos = xs + (k - (len(points) - 1) / 2) * width
        color = POINT_COLORS[POINT_LABELS[p]]
        ax.bar(pos, v, width=width * 0.95, color=color, label=POINT_LABELS[p])
        mark_zero_bars(ax, pos, v, width * 0.95, color)
        label_bars(ax, pos, v, fmt="{:.1f}")
    n = rates[points[0]].get("n_rationales")
    ax.set_xticks(xs, [DEGENERATION_METRICS[m] for m in metrics], fontsize=8)
    top = max(5.0, 1.25 * max(100 * float(rates[p][m]) for p in points for m in metrics))
    ax.set_ylim(0, top)
    ax.set_ylabel("rate (%)")
    ax.set_title(f"Degeneration of greedy {split} rationales{f' (n = {n})' if n else ''}: "
                 "what RL breaks and SFT on corrections repairs")
    legend_right(ax)
    return fig


def claims_figure(claims: Mapping[str, Any] | None) -> Figure | None:
    """What the test rationales claim, checked against the synthetic images: shares of true, neutral,
    unverifiable and false sentences, for all problems and per problem family, at three points."""
    if not claims or not claims.get("baseline"):
        return None
    points = [p for p in ("baseline", "after_rl", "after_sft") if claims.get(p)]
    families = ["all"] + sorted(claims["baseline"].get("by_family", {}))
    rows = [(f, p) for f in families for p in points]
    fig = new_figure(9.0, 0.26 * len(rows) + 1.8)
    ax = fig.subplots()
    y = np.arange(len(rows))[::-1]
    start = np.zeros(len(rows))
    for kind, color in CLAIM_COLORS.items():
        share = []
        for f, p in rows:
            block = claims[p]["all"] if f == "all" else claims[p]["by_family"].get(f, {})
            share.append(100 * float(block.get(f"{kind}_share") or 0.0))
        ax.barh(y, share, left=start, color=color, height=0.8, label=kind)
        start = start + np.array(share)
    point_words = {"baseline": "baseline", "after_rl": "after RL", "after_sft": "ARES (after SFT)"}
    labels = [f"{f} · {point_words[p]}" for f, p in rows]
    ax.set_yticks(y, labels, fontsize=7)
    percent_axis(ax, "x")
    ax.set_xlabel("share of the rationales' sentences")
    ax.set_title("What the test rationales claim about the problem (checked against the synthetic records)")
    legend_right(ax, title="sentence is")
    return fig
