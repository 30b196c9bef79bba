"""PPO's metric bookkeeping: the fixed keys of a metrics row, the row itself, the progress line
and the per-pass KL summary (:func:`aresnb.rl.ppo.train_ppo` calls them once per optimizer step)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from aresnb.config import PPOConfig
from aresnb.rl.ppo_buffer import Buffer, OptimizerStep, padding_share
from aresnb.rl.ppo_math import explained_variance, masked_mean

# The keys of every metrics.jsonl row, fixed: notebooks, figures and the report rely on them (a
# test checks that a row has exactly these). objective/kl is the mean over the step's sequences
# of sum_t (log pi - log pi_ref) before the step's update; objective/kl_k3 the per-token KL(ref||pi)
# (k3 estimator), which is also PPO's approx_kl here: the old policy is the reference.
METRIC_NAMES = (
    "step", "pass",
    "objective/scores", "objective/sentence_reward", "objective/kl", "objective/kl_k3",
    "policy/clipfrac", "policy/entropy", "policy/ratio_mean",
    "loss/policy", "loss/value", "loss/kl", "loss/total",
    "val/mean", "val/clipfrac", "val/explained_variance",
    "response/length", "response/sentences",
    "buffer/sequences", "throughput/sequences_per_s", "throughput/tokens_per_s", "throughput/padding_share",
    "time/step_s",
)

# What each process sums over its micro-batches of a step (then summed over processes).
SUMS = ("pg", "vf", "kl", "clipped", "vf_clipped", "ratio", "entropy", "tokens", "log_ratio", "sequences")


def step_metrics(step: OptimizerStep, sums: torch.Tensor, buffer: Buffer, rows: list[int], scores: list,
                 score_rewards: torch.Tensor, values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                 cfg: PPOConfig, *, elapsed: float) -> dict:
    """One metrics.jsonl row (keys: ``METRIC_NAMES``) from the step's sums and its buffer rows."""
    s = dict(zip(SUMS, sums.tolist()))
    tokens = max(s["tokens"], 1.0)
    sentences = sum(len(scores[i]) for i in rows)
    m = mask[rows]
    row = {
        "step": step.index,
        "pass": step.epoch + 1,
        "objective/scores": sum(sum(scores[i]) for i in rows) / max(1, sentences),
        "objective/sentence_reward": float(score_rewards[rows].sum(1).mean()),
        "objective/kl": s["log_ratio"] / max(s["sequences"], 1.0),
        "objective/kl_k3": s["kl"] / tokens,
        "policy/clipfrac": s["clipped"] / tokens,
        "policy/entropy": s["entropy"] / tokens,
        "policy/ratio_mean": s["ratio"] / tokens,
        "loss/policy": s["pg"] / tokens,
        "loss/value": s["vf"] / tokens,
        "loss/kl": cfg.kl_loss_coef * s["kl"] / tokens,
        "loss/total": (s["pg"] + cfg.vf_coef * s["vf"] + cfg.kl_loss_coef * s["kl"]) / tokens,
        "val/mean": float(masked_mean(values[rows], m)),
        "val/clipfrac": s["vf_clipped"] / tokens,
        "val/explained_variance": float(explained_variance(values[rows], returns[rows], m)),
        "response/length": step.tokens / len(rows),
        "response/sentences": sentences / len(rows),
        "buffer/sequences": len(rows),
        "throughput/sequences_per_s": len(rows) / max(elapsed, 1e-9),
        "throughput/tokens_per_s": step.tokens / max(elapsed, 1e-9),
        "throughput/padding_share": padding_share(buffer, step.micro_batches),
        "time/step_s": elapsed,
    }
    assert tuple(row) == METRIC_NAMES, "metric names drifted from METRIC_NAMES"
    return row


def progress_line(row: dict, n_steps: int, passes: int) -> str:
    return (f"step {row['step']}/{n_steps} (pass {row['pass']}/{passes}) | score {row['objective/scores']:.3f} "
            f"kl {row['objective/kl']:+.4f} clipfrac {row['policy/clipfrac']:.3f} vloss {row['loss/value']:.4f} "
            f"ev {row['val/explained_variance']:+.2f} | {row['throughput/sequences_per_s']:.1f} seq/s "
            f"{row['throughput/tokens_per_s']:.0f} tok/s pad {row['throughput/padding_share']:.0%}")


def kl_by_pass(metrics: Sequence[dict]) -> list[dict]:
    """Per pass over the buffer: the mean KL to the reference measured on its optimizer steps."""
    out = []
    for p in sorted({r["pass"] for r in metrics}):
        rows = [r for r in metrics if r["pass"] == p]
        out.append({"pass": p, "steps": len(rows),
                    "kl": float(np.mean([r["objective/kl"] for r in rows])),
                    "kl_k3": float(np.mean([r["objective/kl_k3"] for r in rows])),
                    "clipfrac": float(np.mean([r["policy/clipfrac"] for r in rows]))})
    return out
