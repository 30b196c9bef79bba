"""The Teacher's corrections of RL rationales, as data: what each correction did, and counts.

ARES's second kind of feedback (design notes, section 4): the round's PPO policy writes one greedy
rationale per train problem; sentences repeating an earlier one are removed; the Teacher corrects
the rest (keep correct sentences and starting thoughts, fix grammar and incomplete sentences,
correct wrong sentences from the given information only); an empty or unparsable reply keeps the
de-duplicated RL rationale and is counted as a fallback. SFT then learns the targets. Stage 05
(:mod:`aresnb.stages.correction_sft`) does the work; these are its pure pieces.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from aresnb.text.rationale_metrics import dedupe_sentences, word_edit_distance

STATUSES = ("corrected", "unchanged", "fallback")
EDIT_DISTANCE_UNIT = "words: Levenshtein distance over whitespace tokens, de-duplicated RL rationale -> SFT target"


def select_problems(n_total: int, max_problems: Optional[int], seed: int, round_index: int) -> list[int]:
    """Sorted row indices of the train problems corrected this round (all, or a seeded subset).

    The subset changes with the round, so that successive rounds see different problems.
    """
    if max_problems is None or max_problems >= n_total:
        return list(range(n_total))
    rng = np.random.default_rng([seed, round_index, 5])
    return sorted(int(i) for i in rng.choice(n_total, size=max_problems, replace=False))


def _same_text(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def correction_row(qid: str, rl_rationale: str, result: Any) -> dict:
    """One row of corrections.parquet from the RL rationale and the Teacher's CorrectionResult.

    ``target`` is what SFT learns: the correction, or the de-duplicated RL rationale when the
    Teacher's reply was empty or unparsable (``fallback``).
    """
    deduped, removed = dedupe_sentences(rl_rationale)
    text = None if result is None or result.fallback else result.text
    if text is None or not text.strip():
        status, target = "fallback", deduped
    elif _same_text(text, deduped):
        status, target = "unchanged", deduped
    else:
        status, target = "corrected", text.strip()
    return {
        "qid": str(qid),
        "rl_rationale": rl_rationale,
        "deduped": deduped,
        "duplicates_removed": removed,
        "corrected": None if status == "fallback" else text.strip(),
        "target": target,
        "status": status,
        "edit_distance": word_edit_distance(deduped, target),
        "raw_reply": None if result is None else result.raw_reply,
        "detail": None if result is None else getattr(result, "detail", None),
        "cached": bool(getattr(result, "cached", False)),
    }


def summarize_corrections(rows: Sequence[dict]) -> dict:
    """Counts by status, duplicates removed and the mean word-level edit distance."""
    n = len(rows)
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    corrected = [r["edit_distance"] for r in rows if r["status"] == "corrected"]
    return {
        "n_problems": n,
        **counts,
        "fallback_rate": counts["fallback"] / n if n else 0.0,
        "duplicate_sentences_removed": int(sum(r["duplicates_removed"] for r in rows)),
        "rationales_with_duplicates": int(sum(r["duplicates_removed"] > 0 for r in rows)),
        "mean_edit_distance": float(np.mean([r["edit_distance"] for r in rows])) if n else 0.0,
        "mean_edit_distance_corrected": float(np.mean(corrected)) if corrected else 0.0,
        "edit_distance_unit": EDIT_DISTANCE_UNIT,
    }
