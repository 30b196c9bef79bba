"""Checks that a stage's output can serve the next stage; each raises :class:`StageFailed`.

Pure functions of a stage's results, so they are tested without running the stage; each stage
calls its check once, after writing what it produced (so the evidence stays on disk to look at)
and before reporting success.

What "produced nothing" means, stage by stage:

- stage 03 (Teacher scores): PPO trains only on samples that were scored. The stage fails when
  every sample was dropped, or more than ``teacher.max_drop_share`` of them, whatever the reason
  (an empty rationale, a reply that stayed invalid after its repair, an API error).
- stage 05 (corrections): a correction counts when the Teacher sent a usable reply for the
  rationale: "corrected" (a changed rationale) or "unchanged" (the Teacher kept it as it was).
  A "fallback" (empty, unparsable or failed reply) is no correction: SFT would learn the RL
  model's own de-duplicated rationale. The stage fails when there is no correction at all, i.e.
  every rationale fell back (or there were none).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from aresnb.errors import StageFailed


def _reasons(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"


def check_scored_samples(summary: Mapping[str, Any], max_drop_share: float, samples_file: str | Path) -> None:
    """Stage 03: fail when all, or more than ``max_drop_share``, of the samples were dropped.

    ``summary`` holds ``samples``, ``dropped`` and ``dropped_by_reason`` (stage 03's summary).
    """
    n, dropped = int(summary["samples"]), int(summary["dropped"])
    if n == 0:
        raise StageFailed("stage 03: no rationale was sampled, so nothing was scored: PPO would have nothing to train on")
    share = dropped / n
    if dropped == n or share > max_drop_share:
        limit = "every sample" if dropped == n else f"more than teacher.max_drop_share={max_drop_share:g}"
        raise StageFailed(
            f"stage 03: {dropped} of {n} samples ({share:.0%}) were dropped ({_reasons(summary.get('dropped_by_reason', {}))}), "
            f"{limit}: PPO would train on too little. Each drop's reason and reply are in {samples_file} "
            "(columns drop_reason, drop_detail, raw_reply)")


def check_corrections(rows: Sequence[Mapping[str, Any]], corrections_file: str | Path) -> None:
    """Stage 05: fail when no rationale got a usable Teacher reply (every one is a fallback)."""
    usable = sum(r["status"] != "fallback" for r in rows)
    if usable:
        return
    details = [r.get("detail") for r in rows if r.get("detail")]
    example = f"; first error: {details[0]}" if details else ""
    raise StageFailed(
        f"stage 05: zero corrections: the Teacher's reply to every one of the {len(rows)} rationales was empty, "
        f"unparsable or failed (all fallbacks), so SFT would only learn the RL model's own rationales{example}. "
        f"Rows: {corrections_file}")
