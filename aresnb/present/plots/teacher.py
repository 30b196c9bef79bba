"""Teacher-score figures: what the Teacher gave the sampled sentences, and each held-out problem's
score before and after PPO, paired (one line per problem), with the mean's interval."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from aresnb.evaluation.intervals import bootstrap_mean_interval
from aresnb.paths import PPO
from aresnb.present.plots.style import PALETTE, legend_right, new_figure
from aresnb.stages.results import RunResults


def sentence_scores(run: RunResults) -> pd.DataFrame:
    """Long frame (round, score) of every scored sentence in the stage-03 samples."""
    rows = []
    for i, df in sorted(run.samples.items()):
        for scores, dropped in zip(df["scores"], df["dropped"]):
            if scores is not None and not dropped:
                rows += [{"round": i, "score": round(float(s), 1)} for s in scores]
    return pd.DataFrame(rows, columns=["round", "score"])


def paired_scores(run: RunResults, round_index: int) -> pd.DataFrame:
    """(qid, before, after): the problems the Teacher scored both before and after PPO."""
    per = {}
    for when in ("before", "after"):
        rows = run.ppo_eval.get((round_index, when), ())
        per[when] = {r["qid"]: float(r["score"]) for r in rows if r.get("score") is not None}
    both = [q for q in per["before"] if q in per["after"]]
    return pd.DataFrame({"qid": both, "before": [per["before"][q] for q in both],
                         "after": [per["after"][q] for q in both]})


def _distribution_panel(ax: Any, scores: pd.DataFrame, rounds: int) -> None:
    levels = sorted(scores["score"].unique())
    width = 0.8 / max(1, scores["round"].nunique())
    for k, (r, sub) in enumerate(scores.groupby("round")):
        shares = sub["score"].value_counts(normalize=True).reindex(levels, fill_value=0.0)
        xs = np.arange(len(levels)) + (k - (scores["round"].nunique() - 1) / 2) * width
        label = f"round {r} (n={len(sub)} sentences)" if rounds > 1 else f"n = {len(sub)} sentences"
        ax.bar(xs, 100 * shares.to_numpy(), width=width * 0.95, color=f"C{k}", label=label)
    ax.set_xticks(np.arange(len(levels)), [f"{v:.1f}" for v in levels])
    ax.set_xlabel("Teacher score of a sentence (PPO reward = score − 0.5)")
    ax.set_ylabel("share of sentences (%)")
    ax.set_title("Sentence scores of the sampled rationales (stage 03)")
    legend_right(ax)


def _paired_panel(ax: Any, pairs: pd.DataFrame, summary: dict, round_index: int, rounds: int) -> None:
    rng = np.random.default_rng(0)
    jitter = rng.uniform(-0.06, 0.06, size=len(pairs))
    for (_, row), j in zip(pairs.iterrows(), jitter):
        up = row["after"] > row["before"] + 1e-9
        down = row["after"] < row["before"] - 1e-9
        color = "#2ca02c" if up else "#d62728" if down else "#bbbbbb"
        ax.plot([0 + j, 1 + j], [row["before"], row["after"]], color=color, lw=0.7, alpha=0.6, marker="o", ms=2)
    means = [pairs["before"].mean(), pairs["after"].mean()]
    cis = [bootstrap_mean_interval(pairs[c].tolist(), seed=round_index) for c in ("before", "after")]
    err = np.array([[m - lo for m, (lo, _) in zip(means, cis)], [hi - m for m, (_, hi) in zip(means, cis)]])
    ax.errorbar([0, 1], means, yerr=err, fmt="D-", color=PALETTE["ARES"], ms=7, capsize=5, lw=2, zorder=5,
                label="mean with 95% interval")
    up, down = int((pairs["after"] > pairs["before"] + 1e-9).sum()), int((pairs["after"] < pairs["before"] - 1e-9).sum())
    ax.plot([], [], color="#2ca02c", label=f"a problem that rose ({up})")
    ax.plot([], [], color="#d62728", label=f"a problem that fell ({down})")
    ax.plot([], [], color="#bbbbbb", label=f"unchanged ({len(pairs) - up - down})")
    ax.set_xticks([0, 1], ["before PPO", "after PPO"])
    ax.set_xlim(-0.35, 1.35)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("Teacher score of the greedy rationale")
    delta, ci = summary.get("teacher_score_delta"), summary.get("teacher_score_delta_ci95") or [None, None]
    change = (f"change {delta:+.3f} (paired 95% CI {ci[0]:+.3f} to {ci[1]:+.3f})"
              if delta is not None and None not in ci else "")
    where = f", round {round_index}" if rounds > 1 else ""
    ax.set_title(f"Held-out (val) problems, n = {len(pairs)}{where}\n{change}", fontsize=10)
    legend_right(ax)


def teacher_scores_figure(run: RunResults) -> Figure | None:
    """Left: sentence scores of the sampled rationales; right: held-out scores before/after PPO, paired."""
    rounds = run.rounds
    scores = sentence_scores(run)
    last = max((i for i in range(1, rounds + 1) if (i, "after") in run.ppo_eval), default=None)
    pairs = paired_scores(run, last) if last is not None else pd.DataFrame()
    if scores.empty and pairs.empty:
        return None
    n = int(not scores.empty) + int(not pairs.empty)
    fig = new_figure(6.4 * n, 3.8)
    axes = list(fig.subplots(1, n, squeeze=False)[0])
    if not scores.empty:
        _distribution_panel(axes.pop(0), scores, rounds)
    if not pairs.empty:
        _paired_panel(axes.pop(0), pairs, run.summary(PPO, last), last, rounds)
    return fig

