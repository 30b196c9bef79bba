"""Figures of a run (matplotlib / seaborn): training curves, Teacher scores, win rates, accuracy.

Every function builds a ``matplotlib.figure.Figure`` without pyplot (no global state, works
headless and in notebooks) and returns it, or None when the run has nothing to plot yet.
``write_all_figures`` saves each as PNG and PDF under ``figures/``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from aresnb.io import read_json, read_jsonl
from aresnb.paper_numbers import ACCURACY_COLUMNS
from aresnb.paths import BASELINE, CORRECTION_SFT, EVALUATION, PPO, RunPaths

PALETTE = {"Baseline": "#7f7f7f", "ARES": "#d62728", "paper": "#1f77b4"}
OUTCOME_COLORS = {"wins": "#2ca02c", "ties": "#c7c7c7", "losses": "#d62728"}
X_KEYS = ("step", "global_step", "iteration", "epoch")
# aresnb.ppo's metric names first (TRL-style), then anything that looks like them.
PPO_PREFERRED = ("objective/scores", "objective/kl", "objective/kl_k3", "loss/policy", "loss/value",
                 "response/length")
PPO_PATTERNS = (r"score", r"reward", r"kl$", r"policy_loss|pg_loss|loss/policy", r"value_loss|vf_loss|loss/value",
                r"length")
SKIP_KEYS = re.compile(r"time|wall|lr$|learning_rate|round|_per_s|sps|seconds|^n_|count|coef|buffer/|^pass$|throughput/")


def _style() -> None:
    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.9)


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


# --------------------------------------------------------------------------------------------
# Training curves across rounds
# --------------------------------------------------------------------------------------------


def _numeric_frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    keep = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
    return df[keep]


def _x_of(df: pd.DataFrame) -> np.ndarray:
    for k in X_KEYS:
        if k in df.columns and df[k].notna().all():
            return df[k].to_numpy(dtype=float)
    return np.arange(len(df), dtype=float)


def training_logs(paths: RunPaths, rounds: int) -> dict[str, list[tuple[str, pd.DataFrame]]]:
    """{'sft': [(label, frame)], 'ppo': [(label, frame)]} in pipeline order, for what exists."""
    logs: dict[str, list[tuple[str, pd.DataFrame]]] = {"sft": [], "ppo": []}
    runs = [("sft", "baseline", paths.metrics_file(BASELINE))]
    for i in range(1, rounds + 1):
        runs += [("ppo", f"round {i} PPO", paths.metrics_file(PPO, i)),
                 ("sft", f"round {i} SFT", paths.metrics_file(CORRECTION_SFT, i))]
    for kind, label, f in runs:
        df = _numeric_frame(read_jsonl(f))
        if not df.empty:
            logs[kind].append((label, df))
    return logs


def _pick_ppo_keys(frames: Sequence[pd.DataFrame], limit: int = 5) -> list[str]:
    cols = [c for c in dict.fromkeys(c for df in frames for c in df.columns)
            if c not in X_KEYS and not SKIP_KEYS.search(c)]
    picked = [c for c in PPO_PREFERRED if c in cols]
    for pat in PPO_PATTERNS:
        picked += [c for c in cols if re.search(pat, c) and c not in picked][:1]
    picked += [c for c in cols if c not in picked]
    return picked[:limit]


def _concat_panel(ax, segments: list[tuple[str, pd.DataFrame]], key: str, title: str) -> None:
    """Segments (baseline, round 1, ...) laid end to end on one step axis, split by dashed lines."""
    offset = 0.0
    for j, (label, df) in enumerate(segments):
        if key not in df.columns or df[key].notna().sum() == 0:
            continue
        x = _x_of(df)
        ok = df[key].notna().to_numpy()
        x0 = offset + x - (x.min() if len(x) else 0)
        ax.plot(x0[ok], df[key].to_numpy()[ok], lw=1.3, label=label, color=f"C{j}")
        if offset > 0:
            ax.axvline(offset, color="k", ls="--", lw=0.7, alpha=0.5)
        offset = float(x0.max()) + 1 if len(x0) else offset
    ax.set_title(title)
    ax.set_xlabel("step (stages end to end)")
    if ax.lines:
        ax.legend(fontsize=7)


def training_curves(paths: RunPaths, rounds: int) -> Figure | None:
    """SFT losses (baseline, then each round's correction SFT) and PPO metrics across rounds."""
    logs = training_logs(paths, rounds)
    if not logs["sft"] and not logs["ppo"]:
        return None
    _style()
    ppo_keys = _pick_ppo_keys([df for _, df in logs["ppo"]])
    sft_key = next((k for k in ("loss", "train_loss") if any(k in df.columns for _, df in logs["sft"])), None)
    panels = ([("sft", sft_key, f"SFT {sft_key}")] if sft_key else []) + [("ppo", k, f"PPO {k}") for k in ppo_keys]
    if not panels:
        return None
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(4.4 * ncols, 3.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (kind, key, title) in zip(axes, panels):
        _concat_panel(ax, logs[kind], key, title)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("Training curves across rounds")
    return fig


# --------------------------------------------------------------------------------------------
# Teacher scores before and after
# --------------------------------------------------------------------------------------------


def sentence_scores(paths: RunPaths, rounds: int) -> pd.DataFrame:
    """Long frame (round, score) of every scored sentence in the stage-03 samples."""
    rows = []
    for i in range(1, rounds + 1):
        f = paths.samples_file(i)
        if not f.exists():
            continue
        df = pd.read_parquet(f, columns=["scores", "dropped"])
        for scores, dropped in zip(df["scores"], df["dropped"]):
            if scores is not None and not dropped:
                rows += [{"round": f"round {i}", "score": float(s)} for s in scores]
    return pd.DataFrame(rows, columns=["round", "score"])


def _as_values(x: Any) -> tuple[str, Any] | None:
    """A before/after entry as ('scalar', mean) or ('values', list)."""
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return ("scalar", float(x))
    if isinstance(x, (list, tuple)) and x and all(isinstance(v, (int, float)) for v in x):
        return ("values", [float(v) for v in x])
    if isinstance(x, dict):
        for k in ("scores", "values", "sentence_scores"):
            if k in x:
                return _as_values(x[k])
        for k in ("mean", "mean_score", "score"):
            if isinstance(x.get(k), (int, float)):
                return ("scalar", float(x[k]))
    return None


def ppo_before_after(paths: RunPaths, rounds: int) -> pd.DataFrame:
    """(round, when, kind, value): the Teacher's per-problem scores of held-out greedy rationales
    before / after PPO (04_ppo/eval_{before,after}.json rows), else the summary's means."""
    rows = []
    for i in range(1, rounds + 1):
        summary_file = paths.summary_file(PPO, i)
        s = read_json(summary_file) if summary_file.exists() else {}
        for when in ("before", "after"):
            eval_file = paths.ppo_eval_file(i, when)
            detail = read_json(eval_file) if eval_file.exists() else {}
            per_problem = [r.get("score") for r in detail.get("rows", []) if r.get("score") is not None]
            v = ("values", per_problem) if per_problem else _as_values(s.get(f"teacher_score_{when}"))
            if v is None:
                continue
            kind, val = v
            vals = val if kind == "values" else [val]
            rows += [{"round": f"round {i}", "when": f"{when} PPO", "kind": kind, "value": x} for x in vals]
    return pd.DataFrame(rows, columns=["round", "when", "kind", "value"])


def teacher_score_distributions(paths: RunPaths, rounds: int) -> Figure | None:
    """Left: sentence scores of the sampled rationales per round; right: held-out score before/after PPO."""
    scores, ba = sentence_scores(paths, rounds), ppo_before_after(paths, rounds)
    if scores.empty and ba.empty:
        return None
    _style()
    n = int(not scores.empty) + int(not ba.empty)
    fig = Figure(figsize=(5.2 * n, 3.4), layout="constrained")
    axes = list(fig.subplots(1, n, squeeze=False)[0])
    if not scores.empty:
        ax = axes.pop(0)
        sns.histplot(scores, x="score", hue="round", bins=np.linspace(-0.05, 1.05, 12), stat="probability",
                     common_norm=False, multiple="dodge", shrink=0.85, ax=ax)
        ax.axvline(0.5, color="k", ls="--", lw=0.7)
        ax.set_title("Teacher sentence scores of sampled rationales")
        ax.set_xlabel("score (reward = score − 0.5)")
    if not ba.empty:
        ax = axes.pop(0)
        if (ba["kind"] == "values").any():
            sns.boxplot(ba, x="round", y="value", hue="when", ax=ax, palette=["#7f7f7f", "#d62728"], width=0.6)
            means = ba.groupby(["round", "when"], sort=False)["value"].mean()
            ax.set_xlabel("; ".join(f"{r} mean {means[(r, 'before PPO')]:.3f} → {means[(r, 'after PPO')]:.3f}"
                                    for r in ba["round"].unique() if (r, "before PPO") in means and (r, "after PPO") in means))
        else:
            sns.barplot(ba, x="round", y="value", hue="when", ax=ax, palette=["#7f7f7f", "#d62728"])
            for c in ax.containers:
                ax.bar_label(c, fmt="%.3f", fontsize=7)
        ax.set_title("Teacher score per held-out (val) problem, before / after PPO")
        ax.set_ylabel("Teacher score")
    return fig


# --------------------------------------------------------------------------------------------
# Win rates and accuracy
# --------------------------------------------------------------------------------------------


def win_rate_figure(table: pd.DataFrame, reference: float | None = None, judge: str = "") -> Figure:
    """Win / tie / loss shares per group as stacked bars; win rate with its 95% interval."""
    _style()
    t = table.iloc[::-1].reset_index(drop=True)  # "All" on top
    fig = Figure(figsize=(7.0, 0.42 * len(t) + 1.6), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(t))
    left = np.zeros(len(t))
    for key, color in OUTCOME_COLORS.items():
        share = (t[key] / t["n"]).to_numpy(dtype=float)
        ax.barh(y, share, left=left, color=color, alpha=0.55, label=key, height=0.7)
        left += share
    wr = t["win_rate"].to_numpy(dtype=float)
    err = np.vstack([wr - t["win_rate_lo"].to_numpy(dtype=float), t["win_rate_hi"].to_numpy(dtype=float) - wr])
    ax.errorbar(wr, y, xerr=err, fmt="o", color="k", ms=4, capsize=3, label="win rate (95% CI)")
    if reference is not None:
        ax.axvline(reference / 100.0, color=PALETTE["paper"], ls="--", lw=1.2, label=f"paper {reference:.2f}%")
    ax.axvline(0.5, color="k", lw=0.5, alpha=0.4)
    ax.set_yticks(y, [f"{g} (n={n})" for g, n in zip(t["group"], t["n"])])
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of items (win = ARES preferred in both orders)")
    ax.set_title(f"ARES vs baseline{f', judge {judge}' if judge else ''}")
    ax.legend(fontsize=7, loc="lower right", framealpha=0.9)
    return fig


def _model_colors(models: Sequence[str]) -> dict[str, str]:
    """Baseline grey, ARES red, the paper's rows blue, other models the default cycle."""
    out, k = {}, 2
    for m in dict.fromkeys(models):
        if m.startswith("Baseline"):
            out[m] = PALETTE["Baseline"]
        elif m.startswith("ARES"):
            out[m] = PALETTE["ARES"]
        elif "paper" in m:
            out[m] = PALETTE["paper"] if "Base" in m else "#aec7e8"
        else:
            out[m], k = f"C{k}", k + 1
    return out


def accuracy_figure(table: pd.DataFrame) -> Figure | None:
    """Accuracy (%) by category: one panel per answer format, one bar per model."""
    if table is None or table.empty:
        return None
    _style()
    cols = [c for c in ACCURACY_COLUMNS if c in table.columns and table[c].notna().any()]
    long = table.melt(id_vars=["model", "format"], value_vars=cols, var_name="category", value_name="accuracy")
    long = long.dropna(subset=["accuracy"])
    formats = list(dict.fromkeys(table.loc[table["source"] == "this run", "format"])) or list(table["format"].unique())
    fig = Figure(figsize=(max(6.0, 0.8 * len(cols)), 2.9 * len(formats)), layout="constrained")
    axes = fig.subplots(len(formats), 1, squeeze=False)[:, 0]
    for ax, fmt in zip(axes, formats):
        sub = long[long["format"] == fmt]
        sns.barplot(sub, x="category", y="accuracy", hue="model", ax=ax, order=cols, palette=_model_colors(sub["model"]))
        ax.set_title(f"Answer accuracy by category ({fmt})")
        ax.set_ylim(0, 100)
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=7, ncol=3, loc="lower right")
    return fig


def write_all_figures(paths: RunPaths, rounds: int) -> dict[str, dict[str, str]]:
    """Every figure the run has data for (read from its files), as PNG and PDF; {name: {png, pdf}}."""
    evaluation = read_json(paths.summary_file(EVALUATION)) if paths.summary_file(EVALUATION).exists() else {}
    tables = {name: pd.read_csv(files["csv"]) for name, files in evaluation.get("tables", {}).items()
              if Path(files["csv"]).exists()}
    figures = {
        "training_curves": training_curves(paths, rounds),
        "teacher_scores": teacher_score_distributions(paths, rounds),
        "win_rate": (win_rate_figure(tables["win_rate"], evaluation.get("paper_win_rate"), evaluation.get("judge_model", ""))
                     if "win_rate" in tables else None),
        "accuracy_by_category": accuracy_figure(tables["accuracy"]) if "accuracy" in tables else None,
    }
    return {name: save_figure(fig, paths.figures_dir, name) for name, fig in figures.items() if fig is not None}
