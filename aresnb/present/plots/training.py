"""Training figures: the supervised losses, and PPO step by step with the held-out Teacher score.

PPO's x axis is its optimizer step (``aresnb.rl.ppo.METRIC_NAMES``: ``step``; ``pass`` = pass over
the round's buffer, marked by dashed lines). Its scores on the buffer are of sequences the
entering policy sampled, so the held-out score -- greedy val rationales scored by the Teacher
before and after PPO -- is drawn beside them as the measure of progress.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from aresnb.evaluation.intervals import bootstrap_mean_interval
from aresnb.paths import BASELINE, CORRECTION_SFT, PPO
from aresnb.present.plots.style import PALETTE, legend_right, new_figure
from aresnb.stages.results import RunResults

# PPO panels: (metric names, y label, title)
PPO_PANELS = (
    (("objective/kl_k3",), "KL(reference ‖ policy) per token", "Distance from the reference policy"),
    (("policy/clipfrac",), "share of tokens clipped", "Clipped policy ratios"),
    (("loss/policy", "loss/value"), "loss per token", "Policy and value losses"),
)
METRIC_WORDS = {"loss/policy": "policy (clipped surrogate)", "loss/value": "value (clipped squared error)"}


def _round_label(i: int, rounds: int) -> str:
    return "" if rounds == 1 else f"round {i}"


def sft_loss_figure(run: RunResults) -> Figure | None:
    """The training loss of the baseline SFT and of each round's SFT on corrections, per optimizer step."""
    rounds = run.rounds
    logs = [("baseline SFT on the dataset's rationales", (BASELINE, None))]
    logs += [(f"round {i} SFT on Teacher corrections" if rounds > 1 else "SFT on Teacher corrections",
              (CORRECTION_SFT, i)) for i in range(1, rounds + 1)]
    frames = [(label, pd.DataFrame(list(run.metrics[key]))) for label, key in logs if key in run.metrics]
    frames = [(label, df) for label, df in frames if {"step", "loss"} <= set(df.columns)]
    if not frames:
        return None
    fig = new_figure(7.5, 3.2)
    ax = fig.subplots()
    for j, (label, df) in enumerate(frames):
        ax.plot(df["step"], df["loss"], marker="o", ms=2.5, lw=1.3, label=label,
                color=PALETTE["Baseline"] if j == 0 else f"C{j}")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("optimizer step (each trainer counts from 0)")
    ax.set_ylabel("training loss (token cross-entropy)")
    ax.set_title("Supervised training loss")
    legend_right(ax)
    return fig


def ppo_logs(run: RunResults) -> list[tuple[int, pd.DataFrame]]:
    """(round, per-step metrics) for every round that has a PPO log."""
    out = []
    for i in range(1, run.rounds + 1):
        df = pd.DataFrame(list(run.metrics.get((PPO, i), ())))
        if not df.empty and "step" in df.columns:  # aresnb.rl.ppo.METRIC_NAMES: one row per optimizer step
            out.append((i, df))
    return out


def held_out_scores(run: RunResults, round_index: int) -> dict[str, list[float]]:
    """The Teacher's per-problem scores of greedy val rationales, ``before`` and ``after`` PPO."""
    out = {}
    for when in ("before", "after"):
        rows = run.ppo_eval.get((round_index, when), ())
        out[when] = [float(r["score"]) for r in rows if r.get("score") is not None]
    return out


def _mark_passes(ax: Any, df: pd.DataFrame) -> None:
    if "pass" not in df.columns:
        return
    starts = df.loc[df["pass"].diff().fillna(0) > 0, ["step", "pass"]]
    for s, p in zip(starts["step"], starts["pass"]):
        ax.axvline(s - 0.5, color="k", ls="--", lw=0.6, alpha=0.4)
        ax.annotate(f"pass {int(p)}", (s - 0.5, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -10),
                    textcoords="offset points", fontsize=7, color="#555")


def _score_panel(ax: Any, logs: Sequence[tuple[int, pd.DataFrame]], run: RunResults) -> None:
    """Buffer scores per step, and the held-out score before (at step 0) and after (last step)."""
    rounds = run.rounds
    for i, df in logs:
        color = f"C{i - 1}" if rounds > 1 else PALETTE["Baseline"]
        suffix = f" (round {i})" if rounds > 1 else ""
        if "objective/scores" in df.columns:
            ax.plot(df["step"], df["objective/scores"], lw=1.2, color=color, label=f"buffer sequences of the step{suffix}")
        held = held_out_scores(run, i)
        if not (held["before"] and held["after"]):
            continue
        xs = [0, int(df["step"].max())]
        means = [float(np.mean(held["before"])), float(np.mean(held["after"]))]
        cis = [bootstrap_mean_interval(held[w], seed=i) for w in ("before", "after")]
        err = np.array([[m - lo for m, (lo, _) in zip(means, cis)], [hi - m for m, (_, hi) in zip(means, cis)]])
        ax.errorbar(xs, means, yerr=err, fmt="D", color=PALETTE["ARES"], ms=6, capsize=4, lw=1.5,
                    label=f"held-out val, greedy: before → after PPO (mean, 95% CI, n={len(held['after'])}){suffix}")
        for x, m in zip(xs, means):
            ax.annotate(f"{m:.3f}", (x, m), xytext=(6, 4), textcoords="offset points", fontsize=7, color=PALETTE["ARES"])
    ax.set_ylim(0, 1)
    ax.set_ylabel("Teacher score (0 wrong · 1 correct)")
    ax.set_title("Teacher score: buffer and held-out problems")


def ppo_figure(run: RunResults) -> Figure | None:
    """PPO per optimizer step: Teacher scores (with the held-out score), KL, clipping, losses."""
    rounds = run.rounds
    logs = ppo_logs(run)
    if not logs:
        return None
    fig = new_figure(11.0, 6.2)
    axes = fig.subplots(2, 2).ravel()
    _score_panel(axes[0], logs, run)
    for ax, (keys, ylabel, title) in zip(axes[1:], PPO_PANELS):
        for i, df in logs:
            for k, key in enumerate(keys):
                if key not in df.columns:
                    continue
                words = METRIC_WORDS.get(key, "")
                label = " ".join(x for x in (words, _round_label(i, rounds)) if x) or None
                ax.plot(df["step"], df[key], lw=1.2, marker="o", ms=2, color=f"C{(i - 1) * len(keys) + k}", label=label)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    for ax in axes:
        ax.set_xlabel("PPO optimizer step")
        _mark_passes(ax, logs[-1][1])
    for ax in axes[1:]:
        legend_right(ax)
    axes[0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False, fontsize=7)
    what = "one round" if rounds == 1 else f"{rounds} rounds"
    fig.suptitle(f"PPO with sentence-level Teacher rewards ({what})")
    return fig
